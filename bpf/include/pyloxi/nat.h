/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Address/port rewrite with checksum fix-ups.
 * The skb helpers are used on purpose: they handle CHECKSUM_PARTIAL (veth, TSO) and
 * CHECKSUM_COMPLETE correctly, which hand-written RFC 1624 updates do not. */
#ifndef PYLOXI_NAT_H
#define PYLOXI_NAT_H

#include <stddef.h>
#include <linux/ipv6.h>
#include "pyloxi/crc32c.h"
#include "pyloxi/parse.h"


static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	switch (p->key.proto) {
	case IPPROTO_TCP:  return p->l4off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:  return p->l4off + offsetof(struct udphdr, check);
	case IPPROTO_ICMP: return p->l4off + offsetof(struct icmphdr, checksum);   /* and v6 */
	}
	return 0;  /* SCTP: CRC32c covers neither addresses nor a pseudo-header (ports: below) */
}

/* One's-complement arithmetic, as the kernel's csum_add/csum_sub on __wsum. */
static __always_inline __u32 csum_add(__u32 sum, __u32 addend)
{
	sum += addend;
	return sum + (sum < addend);
}

static __always_inline __u32 csum_replace(__u32 sum, __u32 from, __u32 to)
{
	return csum_add(csum_add(sum, ~from), to);
}

static __always_inline __u16 csum_fold_diff(__u16 check, __u32 diff)
{
	__u32 sum = csum_add(diff, (__u16)~check);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

#define PL_IP_DF 0x4000

/* The rewrites of a new flow, both directions: to the endpoint (its port, or the rule's port
 * range mapped by offset), from its SNAT address if it has one; replies back to the tuple the
 * client sent. The reply entry's source port may still change (a free NAT port, ct_create.h). */
static __always_inline void nat_flow(struct ct_val *fv, struct ct_val *rv, const struct pkt *p,
				     const struct ep_val *ep, const struct svc_cfg *cfg)
{
	__u16 dport = p->key.dport;

	if (ep->port && p->key.proto != IPPROTO_ICMP)
		dport = bpf_htons(bpf_ntohs(ep->port) + (bpf_ntohs(p->key.dport) - cfg->port_base));
	fv->nat_saddr = addr_is_zero(&ep->snat_ip) ? p->key.saddr : ep->snat_ip;
	fv->nat_daddr = ep->ip;
	fv->nat_family = ep->family;
	rv->nat_family = p->key.family;
	fv->nat_sport = p->key.sport;
	fv->nat_dport = dport;
	rv->nat_saddr = p->key.daddr;
	rv->nat_daddr = p->key.saddr;
	rv->nat_sport = p->key.proto == IPPROTO_ICMP ? p->key.sport : p->key.dport;
	rv->nat_dport = p->key.proto == IPPROTO_ICMP ? 0 : p->key.sport;
}

/* The rewrites of an egress SNAT flow (egress.h): only the source changes, to `ip`, its port
 * to `port` (network order) or, when 0, the client's port for now (ct_create allocates one);
 * replies back to the tuple the client sent. */
static __always_inline void nat_egress(struct ct_val *fv, struct ct_val *rv, const struct pkt *p,
				       const union pl_addr *ip, __u16 port)
{
	fv->nat_saddr = *ip;
	fv->nat_daddr = p->key.daddr;
	fv->nat_family = rv->nat_family = p->key.family;
	fv->nat_sport = port ? port : p->key.sport;
	fv->nat_dport = p->key.dport;
	rv->nat_saddr = p->key.daddr;
	rv->nat_daddr = p->key.saddr;
	rv->nat_sport = p->key.proto == IPPROTO_ICMP ? p->key.sport : p->key.dport;
	rv->nat_dport = p->key.proto == IPPROTO_ICMP ? 0 : p->key.sport;
}

/*
 * The CRC32c of an SCTP packet (`sh`: its common header, `len` bytes long with its chunks)
 * whose ports changed by `diff` (crc32c.h). A zero field is left alone: that is a packet whose
 * CRC is still to be computed (CHECKSUM_PARTIAL: the kernel's SCTP sets the field to 0 and the
 * device, or the stack before a device without the offload, computes it over the rewritten
 * bytes); a real CRC of 0 has a chance of 2^-32. A first fragment (the CRC covers the whole
 * reassembled packet, whose length it does not carry) is not fixed.
 */
static __always_inline int sctp_fix_crc(void *sh, void *data_end, __u32 len, __u32 diff)
{
	__u32 *word = sh;

	if ((void *)(word + 3) > data_end || len < 12)
		return -1;
	if (word[2])
		word[2] ^= crc32c_port_delta(diff, len);
	return 0;
}

/* The 4 bytes of TCP/UDP/SCTP ports or, for an echo, the identifier, as a little-endian load
 * reads the first 4 bytes of the header (ports), or the echo id alone. */
static __always_inline __u32 l4_ports(__u8 proto, __u16 sport, __u16 dport)
{
	return proto == IPPROTO_ICMP ? sport : sport | ((__u32)dport << 16);
}

/* Store the new ports (or echo id) at l4 and fix an SCTP CRC; the rest of rewrite_tuple's tail
 * for an L4 header at `l4` of a packet `l4len` bytes long from there. */
static __always_inline int store_ports(const struct pkt *p, __u16 *l4, void *data_end,
				       __u32 l4len, __u16 sport, __u16 dport)
{
	if ((void *)(l4 + 4) > data_end)
		return -1;
	if (p->key.proto == IPPROTO_ICMP) {
		l4[2] = sport;
		return 0;
	}
	__u32 diff = l4[0] ^ sport ^ (((__u32)l4[1] ^ dport) << 16);

	l4[0] = sport;
	l4[1] = dport;
	if (p->key.proto == IPPROTO_SCTP && diff && p->frag == PL_FRAG_NONE)
		return sctp_fix_crc(l4, data_end, l4len, diff);
	return 0;
}

/* The two L4 checksum diffs of an IPv4 tuple rewrite: addresses (pseudo-header) and ports. */
static __always_inline void tuple_diff4(const struct pkt *p, __u32 saddr, __u32 daddr,
					__u16 sport, __u16 dport, __u32 *addr_diff,
					__u32 *port_diff)
{
	__u32 ad = 0;

	ad = csum_replace(ad, addr_v4(&p->key.saddr), saddr);
	*addr_diff = csum_replace(ad, addr_v4(&p->key.daddr), daddr);
	*port_diff = csum_replace(0, l4_ports(p->key.proto, p->key.sport, p->key.dport),
				  l4_ports(p->key.proto, sport, dport));
}

/* The L4 checksum diffs of an IPv6 rewrite to entry v's tuple. The address diff is
 * bpf_csum_diff's 32-bit one's-complement sum of the 32 address bytes (the old ones
 * complemented, the new ones), added up inline: a one's-complement sum of terms not all zero
 * has one 32-bit form (never 0), so this is the value the helper returns, without its call
 * (~30 ns; TC and XDP share it, so their bytes stay the same). */
static __always_inline void tuple_diff6(const struct pkt *p, const struct ct_val *v,
					__u32 *addr_diff, __u32 *port_diff)
{
	const __u32 *o = p->key.saddr.w, *od = p->key.daddr.w;
	const __u32 *n = v->nat_saddr.w, *nd = v->nat_daddr.w;
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < 4; i++)
		s += (__u64)(__u32)~o[i] + (__u32)~od[i] + n[i] + nd[i];
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	*addr_diff = (__u32)s;
	*port_diff = csum_replace(0, l4_ports(p->key.proto, p->key.sport, p->key.dport),
				  l4_ports(p->key.proto, v->nat_sport, v->nat_dport));
}

/* The stores of an IPv4 rewrite, after the L4 checksum: TTL, header checksum (always complete,
 * never offloaded: updated in place, RFC 1624 style), addresses, ports. */
static __always_inline int store_tuple4(void *data, void *data_end, const struct pkt *p,
					__u32 addr_diff, __u32 saddr, __u32 daddr, __u16 sport,
					__u16 dport)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) > data_end)
		return -1;
	/* TTL shares a 16-bit word with the protocol */
	__u32 ttl_word_old = bpf_htons((__u16)ip->ttl << 8);
	__u32 ttl_word_new = bpf_htons((__u16)(ip->ttl - 1) << 8);
	__u32 sum = csum_replace(addr_diff, ttl_word_old, ttl_word_new);
	sum = csum_add(sum, (__u16)~ip->check);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = (__u16)~sum;
	ip->ttl--;
	ip->saddr = saddr;
	ip->daddr = daddr;
	if (p->frag == PL_FRAG_LATER)
		return 0;
	/* the L4 header: bounded for the verifier, at most 14 + 60 */
	return store_ports(p, data + (p->l4off & 0x7f), data_end,
			   bpf_ntohs(ip->tot_len) - (p->l4off - p->l3off), sport, dport);
}

/* The stores of an IPv6 rewrite to entry v's tuple, after the L4 checksum. */
static __always_inline int store_tuple6(void *data, void *data_end, const struct pkt *p,
					const struct ct_val *v)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

	if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return -1;
	ip6->hop_limit--;
	__builtin_memcpy(&ip6->saddr, &v->nat_saddr, 16);
	__builtin_memcpy(&ip6->daddr, &v->nat_daddr, 16);
	if (p->frag == PL_FRAG_LATER)
		return 0;
	return store_ports(p, data + (p->l4off & 0xff), data_end,
			   p->l3len - (p->l4off - p->l3off), v->nat_sport, v->nat_dport);
}

/*
 * Rewrite the IPv4 tuple to (saddr, daddr, sport, dport) and decrement the TTL, with two checksum
 * helper calls at most: the L4 checksum by an address diff (pseudo-header: the helper also
 * handles CHECKSUM_PARTIAL seeds) and by a port diff (which the helper rightly skips for
 * CHECKSUM_PARTIAL). The IPv4 header checksum and the fields are plain stores. Returns -1 when
 * the headers are not there, a helper failed or the TTL has run out (callers answer TTL <= 1
 * before they get here). XDP's rewrite (xdp.h) shares the diffs and the stores.
 */
static __always_inline int rewrite_tuple(struct __sk_buff *skb, const struct pkt *p,
					 __u32 saddr, __u32 daddr, __u16 sport, __u16 dport)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	/* a later fragment has no L4 header: addresses only */
	__u32 csum_off = p->frag == PL_FRAG_LATER ? 0 : l4_csum_off(p);
	__u64 mangled0 = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 addr_diff, port_diff;

	if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
		return -1;
	tuple_diff4(p, saddr, daddr, sport, dport, &addr_diff, &port_diff);
	if (csum_off) {
		if (p->key.proto != IPPROTO_ICMP && addr_diff &&
		    bpf_l4_csum_replace(skb, csum_off, 0, addr_diff, BPF_F_PSEUDO_HDR | mangled0))
			return -1;
		if (port_diff && bpf_l4_csum_replace(skb, csum_off, 0, port_diff, mangled0))
			return -1;
	}
	/* the helpers invalidated packet pointers: reload (store_tuple4 re-checks) */
	return store_tuple4((void *)(long)skb->data, (void *)(long)skb->data_end, p, addr_diff,
			    saddr, daddr, sport, dport);
}

/*
 * NAT66: rewrite the IPv6 tuple to entry v's (its addresses and ports) and decrement the hop
 * limit. Every L4 checksum of IPv6 (TCP, UDP, ICMPv6) covers a pseudo-header with both
 * addresses: one diff of the 32 address bytes, applied by the helper as a pseudo-header change
 * (right for CHECKSUM_PARTIAL seeds too), one for the ports. A UDP checksum is never left 0
 * (BPF_F_MARK_MANGLED_0 writes 0xffff), as IPv6 requires.
 */
static __noinline int rewrite_tuple6(struct __sk_buff *skb, const struct pkt *p,
				     const struct ct_val *v)
{
	__u32 csum_off = p->frag == PL_FRAG_LATER ? 0 : l4_csum_off(p);
	__u64 mangled0 = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 addr_diff, port_diff;

	if (!p || !v)
		return -1;
	tuple_diff6(p, v, &addr_diff, &port_diff);
	if (csum_off) {
		if (addr_diff && bpf_l4_csum_replace(skb, csum_off, 0, addr_diff,
						     BPF_F_PSEUDO_HDR | mangled0))
			return -1;
		if (port_diff && bpf_l4_csum_replace(skb, csum_off, 0, port_diff, mangled0))
			return -1;
	}
	return store_tuple6((void *)(long)skb->data, (void *)(long)skb->data_end, p, v);
}

/*
 * What bpf_l4_csum_replace(skb, off, 0, diff, flags) does to the checksum at `check` of a
 * packet whose checksum is complete (the kernel's csum_replace_by_diff, to the bit: XDP must
 * leave the bytes TC would): ~fold(diff + ~check), the 32-bit ~ of the unfolded field. UDP
 * (`mangled0`): a 0 checksum (IPv4: none) stays 0, and a result of 0 is written 0xffff.
 */
static __always_inline void csum_apply_diff(__u16 *check, __u32 diff, int mangled0)
{
	if (mangled0 && !*check)
		return;
	__u32 sum = csum_add(diff, ~(__u32)*check);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	*check = (__u16)~sum;
	if (mangled0 && !*check)
		*check = 0xffff;
}

#endif
