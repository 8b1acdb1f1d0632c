/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Address/port rewrite with checksum fix-ups.
 * The skb helpers are used on purpose: they handle CHECKSUM_PARTIAL (veth, TSO) and
 * CHECKSUM_COMPLETE correctly, which hand-written RFC 1624 updates do not. */
#ifndef PYLOXI_NAT_H
#define PYLOXI_NAT_H

#include <stddef.h>
#include "pyloxi/parse.h"

#define IP_CSUM_OFF(p)  ((p)->l3off + offsetof(struct iphdr, check))
#define IP_SRC_OFF(p)   ((p)->l3off + offsetof(struct iphdr, saddr))
#define IP_DST_OFF(p)   ((p)->l3off + offsetof(struct iphdr, daddr))

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	switch (p->key.proto) {
	case IPPROTO_TCP:  return p->l4off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:  return p->l4off + offsetof(struct udphdr, check);
	case IPPROTO_ICMP: return p->l4off + offsetof(struct icmphdr, checksum);
	}
	return 0;  /* SCTP: CRC32c covers neither addresses nor a pseudo-header */
}

static __always_inline int rewrite_addr(struct __sk_buff *skb, const struct pkt *p,
					__u32 off, __u32 from, __u32 to)
{
	__u32 csum_off = l4_csum_off(p);

	if (from == to)
		return 0;
	if (csum_off && p->key.proto != IPPROTO_ICMP) {
		__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);
		if (p->key.proto == IPPROTO_UDP)
			flags |= BPF_F_MARK_MANGLED_0;  /* a zero UDP checksum stays zero */
		if (bpf_l4_csum_replace(skb, csum_off, from, to, flags))
			return -1;
	}
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF(p), from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline int rewrite_port(struct __sk_buff *skb, const struct pkt *p,
					__u32 off, __u16 from, __u16 to)
{
	__u32 csum_off = l4_csum_off(p);

	if (from == to)
		return 0;
	if (csum_off) {
		__u64 flags = sizeof(to);
		if (p->key.proto == IPPROTO_UDP)
			flags |= BPF_F_MARK_MANGLED_0;
		if (bpf_l4_csum_replace(skb, csum_off, from, to, flags))
			return -1;
	}
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/* Rewrite the packet's tuple to (saddr, daddr, sport, dport). */
static __always_inline int rewrite_tuple(struct __sk_buff *skb, const struct pkt *p,
					 __u32 saddr, __u32 daddr, __u16 sport, __u16 dport)
{
	if (rewrite_addr(skb, p, IP_SRC_OFF(p), p->key.saddr, saddr) ||
	    rewrite_addr(skb, p, IP_DST_OFF(p), p->key.daddr, daddr))
		return -1;
	if (p->key.proto == IPPROTO_ICMP)   /* echo identifier */
		return rewrite_port(skb, p, p->l4off + 4, p->key.sport, sport);
	if (rewrite_port(skb, p, p->l4off, p->key.sport, sport) ||
	    rewrite_port(skb, p, p->l4off + 2, p->key.dport, dport))
		return -1;
	return 0;
}

#endif
