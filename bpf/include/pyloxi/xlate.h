/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * NAT64: an IPv6 client's flow to IPv4 endpoints. The packet of a flow entry whose rewrite is
 * of the other family (ct_val.nat_family) changes its IP header with bpf_skb_change_proto:
 * 6 -> 4 towards the endpoint, 4 -> 6 for its replies. The L4 checksum follows the pseudo-header
 * (TCP, UDP: the addresses; ICMP echo <-> ICMPv6 echo: the whole pseudo-header, which only
 * ICMPv6 has, and the type), by difference, as the helpers do for NAT66/NAT44, so a
 * CHECKSUM_PARTIAL seed stays right.
 *
 * What is not translated (dropped, counted as PL_ST_XLATE_REFUSED): IPv6 packets with extension
 * headers or fragments and IPv4 packets with options or fragments (the header sizes would not
 * be the fixed 40 <-> 20 bytes the helper moves), SCTP (its CRC32c does not cover addresses, but
 * INIT address parameters would name the wrong family).
 */
#ifndef PYLOXI_XLATE_H
#define PYLOXI_XLATE_H

#include "pyloxi/nat.h"
#include "pyloxi/stats.h"

#define ICMPV6_ECHO_REQ 128
#define ICMPV6_ECHO_REP 129

/* Can packet `p` be translated to the other family? */
static __always_inline int xlate_ok(const struct pkt *p)
{
	if (p->frag != PL_FRAG_NONE || p->key.proto == IPPROTO_SCTP)
		return 0;
	if (p->key.family == PL_AF_INET6)
		return p->l4off == sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	return p->l4off == sizeof(struct ethhdr) + sizeof(struct iphdr);
}

/* The one's complement sum of an IPv6 pseudo-header's fixed part for ICMPv6 (length and next
 * header; the addresses come from bpf_csum_diff). */
static __always_inline __u32 icmp6_pseudo_rest(__u32 l4len)
{
	return csum_add(bpf_htonl(l4len), bpf_htonl(IPPROTO_ICMPV6));
}

static __always_inline __u16 ip4_csum(const struct iphdr *ip)
{
	const __u32 *w = (const void *)ip;

	return ~csum_fold64((__u64)w[0] + w[1] + w[2] + w[3] + w[4]);
}

/*
 * The L4 checksum diffs of translating packet p to entry v's family, summed inline as
 * tuple_diff6 (bpf_csum_diff's value without its calls), applied by TC with
 * bpf_l4_csum_replace (which knows a CHECKSUM_PARTIAL seed) and by XDP in place: TCP and UDP,
 * *addr_diff the pseudo-header's addresses, *port_diff the ports; ICMP echo <-> ICMPv6 echo,
 * one diff in *addr_diff (the pseudo-header, which only ICMPv6 has, leaves or joins the sum;
 * the type and the identifier change), *port_diff 0.
 */
static __always_inline void xlate_diffs(const struct pkt *p, const struct ct_val *v,
					__u32 *addr_diff, __u32 *port_diff)
{
	const __u32 *o = p->key.saddr.w, *od = p->key.daddr.w;
	const __u32 *n = v->nat_saddr.w, *nd = v->nat_daddr.w;
	int to4 = p->key.family == PL_AF_INET6, icmp = p->key.proto == IPPROTO_ICMP;
	__u32 l4len = p->l3len - (to4 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	__u32 ports = csum_replace(0, l4_ports(p->key.proto, p->key.sport, p->key.dport),
				   l4_ports(p->key.proto, v->nat_sport, v->nat_dport));
	__u16 t4 = bpf_htons((__u16)p->icmp_type << 8);
	__u16 t6 = bpf_htons((__u16)(p->icmp_type == ICMP_ECHO ? ICMPV6_ECHO_REQ
					 : ICMPV6_ECHO_REP) << 8);
	__u64 s = 0;

	if (to4) {
#pragma unroll
		for (int i = 0; i < 4; i++)
			s += (__u64)(__u32)~o[i] + (__u32)~od[i];
		s += icmp ? (__u32)~icmp6_pseudo_rest(l4len) : (__u64)n[3] + nd[3];
	} else {
#pragma unroll
		for (int i = 0; i < 4; i++)
			s += (__u64)n[i] + nd[i];
		s += icmp ? icmp6_pseudo_rest(l4len) : (__u64)(__u32)~o[3] + (__u32)~od[3];
	}
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	*addr_diff = (__u32)s;
	*port_diff = ports;
	if (icmp) {
		*addr_diff = csum_add(*addr_diff, to4 ? csum_replace(ports, t6, t4)
						      : csum_replace(ports, t4, t6));
		*port_diff = 0;
	}
}

/* The IPv4 header of a 6 -> 4 translation at data (the Ethernet header before it, the L4
 * header after it: already in place), TTL = hop limit - 1 (`ttl`), DF set (IPv6 is never
 * fragmented on the way: a router on the v4 side answers 'fragmentation needed' instead),
 * TOS = traffic class; then the ports. Returns 0, or -1. */
static __always_inline int xlate_store4(void *data, void *data_end, const struct pkt *p,
					const struct ct_val *v, __u8 tos, __u8 ttl)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u16 *l4 = (void *)(ip + 1);
	__u32 l4len = p->l3len - sizeof(struct ipv6hdr);

	if ((void *)(l4 + 4) > data_end)
		return -1;
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(l4len + sizeof(*ip));
	ip->id = 0;
	ip->frag_off = bpf_htons(PL_IP_DF);
	ip->ttl = ttl;
	ip->protocol = p->key.proto;
	ip->saddr = addr_v4(&v->nat_saddr);
	ip->daddr = addr_v4(&v->nat_daddr);
	ip->check = 0;
	ip->check = ip4_csum(ip);
	if (p->key.proto == IPPROTO_ICMP)
		*(__u8 *)l4 = p->icmp_type;
	return store_ports(p, l4, data_end, l4len, v->nat_sport, v->nat_dport);
}

/* The IPv6 header of a 4 -> 6 translation at data (as xlate_store4), hop limit = TTL - 1
 * (`ttl`), traffic class = TOS; then the ICMPv6 type or the ports. Returns 0, or -1. */
static __always_inline int xlate_store6(void *data, void *data_end, const struct pkt *p,
					const struct ct_val *v, __u8 tos, __u8 ttl)
{
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	__u16 *l4 = (void *)(ip6 + 1);
	__u32 l4len = p->l3len - sizeof(struct iphdr);

	if ((void *)(l4 + 4) > data_end)
		return -1;
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	ip6->version = 6;
	ip6->priority = tos >> 4;
	ip6->flow_lbl[0] = (tos & 0xf) << 4;
	ip6->flow_lbl[1] = 0;
	ip6->flow_lbl[2] = 0;
	ip6->payload_len = bpf_htons(l4len);
	ip6->nexthdr = p->key.proto == IPPROTO_ICMP ? IPPROTO_ICMPV6 : p->key.proto;
	ip6->hop_limit = ttl;
	__builtin_memcpy(&ip6->saddr, &v->nat_saddr, 16);
	__builtin_memcpy(&ip6->daddr, &v->nat_daddr, 16);
	if (p->key.proto == IPPROTO_ICMP)
		*(__u8 *)l4 = p->icmp_type == ICMP_ECHO ? ICMPV6_ECHO_REQ : ICMPV6_ECHO_REP;
	return store_ports(p, l4, data_end, l4len, v->nat_sport, v->nat_dport);
}

/* The traffic class of an IPv6 header, as an IPv4 TOS. */
static __always_inline __u8 ip6_tclass(const struct ipv6hdr *ip6)
{
	return (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
}

/* xlate_diffs applied to skb's L4 checksum. Returns 0, or -1. */
static __always_inline int xlate_csum(struct __sk_buff *skb, const struct pkt *p,
				      const struct ct_val *v)
{
	__u32 off = l4_csum_off(p), addr_diff, port_diff;

	xlate_diffs(p, v, &addr_diff, &port_diff);
	if (p->key.proto == IPPROTO_ICMP)
		return bpf_l4_csum_replace(skb, off, 0, addr_diff, 0) ? -1 : 0;
	if (bpf_l4_csum_replace(skb, off, 0, addr_diff, BPF_F_PSEUDO_HDR) ||
	    (port_diff && bpf_l4_csum_replace(skb, off, 0, port_diff, 0)))
		return -1;
	return 0;
}

/* 6 -> 4: the packet of entry v (an IPv6 key, an IPv4 rewrite) becomes IPv4 (xlate_store4).
 * Returns 0, or -1 (dropped). */
static __noinline int xlate_6to4(struct __sk_buff *skb, const struct pkt *p, const struct ct_val *v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__u8 tos, hop;

	if (!p || !v || (void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return -1;
	tos = ip6_tclass(ip6);
	hop = ip6->hop_limit - 1;
	if (xlate_csum(skb, p, v) || bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
		return -1;
	return xlate_store4((void *)(long)skb->data, (void *)(long)skb->data_end, p, v, tos, hop);
}

/* The full UDP checksum of an IPv6 datagram whose IPv4 original had none (0: allowed in IPv4,
 * not in IPv6). A bpf_loop over the datagram, 4 bytes a step. */
struct udp6_sum {
	struct __sk_buff *skb;
	__u32 off;     /* of the UDP header */
	__u32 len;     /* UDP length */
	__u64 sum;
};

static long udp6_sum_step(__u32 i, void *data)
{
	struct udp6_sum *c = data;
	__u32 w = 0, at = c->off + i * 4;
	int rc;

	if (i * 4 >= c->len)
		return 1;
	/* the last word may be short: its missing bytes count as zero padding */
	switch (c->len - i * 4) {
	case 1:  rc = bpf_skb_load_bytes(c->skb, at, &w, 1); break;
	case 2:  rc = bpf_skb_load_bytes(c->skb, at, &w, 2); break;
	case 3:  rc = bpf_skb_load_bytes(c->skb, at, &w, 3); break;
	default: rc = bpf_skb_load_bytes(c->skb, at, &w, 4);
	}
	if (rc)
		return 1;
	c->sum += w;
	return 0;
}

static __noinline int udp6_full_csum(struct __sk_buff *skb, __u32 off, __u32 len,
				     const union pl_addr *s, const union pl_addr *d)
{
	struct udp6_sum c = { .skb = skb, .off = off, .len = len };

	if (!s || !d)
		return -1;
	for (int i = 0; i < 4; i++)
		c.sum += (__u64)s->w[i] + d->w[i];
	c.sum += bpf_htonl(len) + bpf_htonl(IPPROTO_UDP);
	/* the field itself counts as 0: it is 0 now */
	if (bpf_loop(65536 / 4, udp6_sum_step, &c, 0) < 0)
		return -1;
	__u16 sum = ~csum_fold64(c.sum);
	if (sum == 0)
		sum = 0xffff;
	return bpf_skb_store_bytes(skb, off + 6, &sum, 2, 0);
}

/*
 * 4 -> 6: the reply of an endpoint (an IPv4 key, an IPv6 rewrite) becomes IPv6 (xlate_store6).
 * The packet grows by 20 bytes (next_hop measured it so). A UDP datagram without checksum gets
 * a full one. Returns 0, or -1 (dropped).
 */
static __noinline int xlate_4to6(struct __sk_buff *skb, const struct pkt *p, const struct ct_val *v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *uh = (void *)(ip + 1);
	__u8 tos, ttl;
	int udp_zero;

	if (!p || !v || (void *)(uh + 1) > data_end || ip->ttl <= 1)
		return -1;
	tos = ip->tos;
	ttl = ip->ttl - 1;
	udp_zero = p->key.proto == IPPROTO_UDP && uh->check == 0;
	if ((!udp_zero && xlate_csum(skb, p, v)) ||
	    bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
		return -1;
	data = (void *)(long)skb->data;
	if (xlate_store6(data, (void *)(long)skb->data_end, p, v, tos, ttl))
		return -1;
	if (udp_zero)
		return udp6_full_csum(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr),
				      p->l3len - sizeof(struct iphdr), &v->nat_saddr, &v->nat_daddr);
	return 0;
}

/* Translate the packet of entry v to v's family. Returns 0, or -1 (dropped, counted). */
static __always_inline int xlate(struct __sk_buff *skb, const struct pkt *p, const struct ct_val *v)
{
	int rc = -1;

	if (xlate_ok(p))
		rc = p->key.family == PL_AF_INET6 ? xlate_6to4(skb, p, v) : xlate_4to6(skb, p, v);
	if (rc)
		count(PL_ST_XLATE_REFUSED);
	return rc;
}

#endif
