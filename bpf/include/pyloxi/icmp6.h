/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * ICMPv6 errors, both ways: icmp.h's work for IPv6 flows.
 *
 * In: destination unreachable, packet too big, time exceeded and parameter problem about a
 * packet we sent after a NAT66 rewrite are translated back for the sender of the original
 * (pl_icmp6_error_in). Out: 'time exceeded' for hop limit <= 1 and 'packet too big' (IPv6
 * routers never fragment) quoting the packet as it came in (pl_icmp6_reply).
 *
 * Unlike ICMP's, the ICMPv6 checksum covers a pseudo-header with the outer addresses, so a
 * change of those changes it too.
 */
#ifndef PYLOXI_ICMP6_H
#define PYLOXI_ICMP6_H

#include <linux/icmpv6.h>
#include "pyloxi/conntrack.h"
#include "pyloxi/icmp_out.h"
#include "pyloxi/fwd.h"
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"
#include "pyloxi/verdict.h"

#define PL_ICMP6_QUOTE_MAX 1232   /* 1280 - 40 - 8: the whole error fits the minimum MTU */
#define PL_ICMP6_PULL      (ETH_HLEN + 40 + 8 + 40 + 20)
#define PL_IP6_HLEN        40

/* The one's complement sum of 32 bytes (two addresses), for checksum differences. */
static __always_inline __u32 sum32(const union pl_addr *a, const union pl_addr *b)
{
	__u64 s = 0;

	for (int i = 0; i < 4; i++)
		s += (__u64)a->w[i] + b->w[i];
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

/*
 * Translate an ICMPv6 error about one of our IPv6 flows, as pl_icmp_error_in does for IPv4
 * (see there for K, E2 and the choice of the outer addresses). The quoted packet must be the
 * fixed header directly followed by TCP, UDP, SCTP or an ICMPv6 echo. Returns a verdict.
 */
__noinline int pl_icmp6_error_in(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ipv6hdr *ip, *in;
	struct icmp6hdr *ic;
	__u32 len = skb->len;

	if (bpf_skb_pull_data(skb, len < PL_ICMP6_PULL ? len : PL_ICMP6_PULL))
		return PL_PASS;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	ic = (void *)(ip + 1);
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > data_end || ip->nexthdr != IPPROTO_ICMPV6)
		return PL_PASS;
	__u16 *l4 = (void *)(in + 1);
	if ((void *)(l4 + 4) > data_end)
		return PL_PASS;

	struct ct_key rk = { .proto = in->nexthdr, .family = PL_AF_INET6 };
	__builtin_memcpy(&rk.saddr, &in->daddr, 16);
	__builtin_memcpy(&rk.daddr, &in->saddr, 16);
	__u32 l4c_off;   /* offset of the inner L4 checksum in l4, 0: none we update */
	switch (in->nexthdr) {
	case IPPROTO_TCP:
		l4c_off = 16;
		break;
	case IPPROTO_UDP:
		l4c_off = 6;
		break;
	case IPPROTO_SCTP:
		l4c_off = 0;
		break;
	case IPPROTO_ICMPV6: {
		__u8 t = *(__u8 *)l4;
		if (t != ICMPV6_ECHO_REQUEST && t != ICMPV6_ECHO_REPLY)
			return PL_PASS;
		rk.proto = IPPROTO_ICMP;   /* echo flows are keyed so (parse.h) */
		l4c_off = 2;
		break;
	}
	default:
		return PL_PASS;
	}
	if (rk.proto == IPPROTO_ICMP) {
		rk.sport = l4[2];
		rk.dport = 0;
	} else {
		rk.sport = l4[1];
		rk.dport = l4[0];
	}

	struct ct_val *e2 = ct_lookup(&rk);
	if (!e2 || e2->nat_family != PL_AF_INET6)
		return PL_PASS;
	if (ip->hop_limit <= 1)
		return PL_DROP;

	/* pointers, not copies: this frame adds to the pipeline's stack */
	const union pl_addr *ks = &e2->nat_daddr, *kd = &e2->nat_saddr;
	union pl_addr *isrc = (void *)&in->saddr, *idst = (void *)&in->daddr;
	union pl_addr *os = (void *)&ip->saddr, *od = (void *)&ip->daddr;
	const union pl_addr *osrc = addr_eq(os, idst) ? kd : os;

	__u32 old_ports, new_ports;
	if (rk.proto == IPPROTO_ICMP) {
		old_ports = l4[2];
		new_ports = e2->nat_sport;
	} else {
		old_ports = l4[0] | ((__u32)l4[1] << 16);
		new_ports = e2->nat_dport | ((__u32)e2->nat_sport << 16);
	}
	/* the inner addresses are inside the message and in the inner L4 pseudo-header */
	__u32 addr_diff = csum_add(~sum32(isrc, idst), sum32(ks, kd));
	/* outer: the pseudo-header of the ICMPv6 checksum (computed before the stores below) */
	__u32 o_diff = csum_add(~sum32(os, od), sum32(osrc, ks));
	__u32 port_diff = csum_replace(0, old_ports, new_ports);
	__u32 msg_diff = csum_add(addr_diff, port_diff);
	if (l4c_off && (void *)l4 + l4c_off + 2 <= data_end) {
		__u16 *l4c = (void *)l4 + (l4c_off & 0x1f);
		if ((void *)(l4c + 1) > data_end)
			return PL_PASS;
		__u16 oc = *l4c, nc = csum_fold_diff(oc, msg_diff);
		if (in->nexthdr == IPPROTO_UDP && nc == 0)
			nc = 0xffff;
		msg_diff = csum_add(msg_diff, csum_replace(0, oc, nc));
		*l4c = nc;
	}
	__builtin_memcpy(isrc, ks, 16);
	__builtin_memcpy(idst, kd, 16);
	if (rk.proto == IPPROTO_ICMP) {
		l4[2] = (__u16)new_ports;
	} else {
		l4[0] = (__u16)new_ports;
		l4[1] = (__u16)(new_ports >> 16);
	}
	ic->icmp6_cksum = csum_fold_diff(ic->icmp6_cksum, csum_add(msg_diff, o_diff));
	ip->hop_limit--;
	if (osrc != os)
		__builtin_memcpy(os, osrc, 16);
	__builtin_memcpy(od, ks, 16);
	count(PL_ST_ICMP_XLATE);
	return route_out(skb, PL_AF_INET6, os, od);
}

/*
 * Turn the received IPv6 packet (not yet rewritten) into an ICMPv6 error from `src` to its
 * sender, back out of the interface it came in on (MACs swapped). `type`/`code` are given in
 * ICMP terms (icmp_answer's callers): time exceeded -> ICMPv6 time exceeded (hop limit),
 * fragmentation needed -> packet too big with `mtu`. The quote is the packet's first bytes, at
 * most 1232 and a multiple of 4. Returns a verdict.
 */
__noinline int pl_icmp6_reply(struct __sk_buff *skb, __u32 type, __u32 code, __u32 mtu,
			      const union pl_addr *src)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip = data + ETH_HLEN;
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	__u32 l3len, q, l4c = 0;

	/* no copies of the addresses: this frame adds to the pipeline's stack. `src` is the
	 * caller's; the destination is read back from the quote (the sender's own header). */
	if (!src || (void *)(ip + 1) > data_end)
		return PL_DROP;
	if (!icmp_allow()) {
		count(PL_ST_ICMP_LIMITED);
		return PL_DROP;
	}
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	l3len = bpf_ntohs(ip->payload_len) + PL_IP6_HLEN;
	if (l3len > skb->len - ETH_HLEN)
		l3len = skb->len - ETH_HLEN;
	q = (l3len < PL_ICMP6_QUOTE_MAX ? l3len : PL_ICMP6_QUOTE_MAX) & ~3U;
	if (q < PL_IP6_HLEN + 8)
		return PL_DROP;
	/* a CHECKSUM_PARTIAL L4 field inside the quote: see quote_sum */
	if (ip->nexthdr == IPPROTO_TCP && PL_IP6_HLEN + 18 <= q)
		l4c = PL_IP6_HLEN + 16;
	else if (ip->nexthdr == IPPROTO_UDP)
		l4c = PL_IP6_HLEN + 6;

	if (skb->len == ETH_HLEN + q && bpf_skb_change_tail(skb, ETH_HLEN + q + 4, 0))
		return PL_DROP;
	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0))
		return PL_DROP;
	if (bpf_skb_adjust_room(skb, PL_IP6_HLEN + 8, BPF_ADJ_ROOM_MAC, 0))
		return PL_DROP;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	struct ipv6hdr *nip = data + ETH_HLEN;
	struct icmp6hdr *ic = (void *)(nip + 1);
	void *quote = (void *)(ic + 1);
	if (quote + PL_IP6_HLEN + 8 > data_end)
		return PL_DROP;
	__builtin_memcpy(eth->h_dest, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dmac, ETH_ALEN);
	*(__u32 *)nip = bpf_htonl(0x60000000);   /* version 6, class 0, flow 0 */
	nip->payload_len = bpf_htons(8 + q);
	nip->nexthdr = IPPROTO_ICMPV6;
	nip->hop_limit = 64;
	struct ipv6hdr *orig = quote;
	if ((void *)(orig + 1) > data_end)
		return PL_DROP;
	__builtin_memcpy(&nip->daddr, &orig->saddr, 16);
	__builtin_memcpy(&nip->saddr, src, 16);
	if (type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED) {
		ic->icmp6_type = ICMPV6_PKT_TOOBIG;
		ic->icmp6_code = 0;
		ic->icmp6_mtu = bpf_htonl(mtu);
	} else {
		ic->icmp6_type = ICMPV6_TIME_EXCEED;
		ic->icmp6_code = ICMPV6_EXC_HOPLIMIT;
		ic->icmp6_dataun.un_data32[0] = 0;
	}
	ic->icmp6_cksum = 0;

	__u64 sum;
	if (quote_sum(quote, data_end, PL_IP6_HLEN, PL_IP6_HLEN, q, PL_ICMP6_QUOTE_MAX, l4c,
		      &sum))
		return PL_DROP;
	__u32 *hw = (void *)ic;
	__u64 pseudo = (__u64)sum32((void *)&nip->saddr, (void *)&nip->daddr) + bpf_htonl(8 + q) +
		       bpf_htonl(IPPROTO_ICMPV6);
	ic->icmp6_cksum = ~csum_fold64(pseudo + hw[0] + hw[1] + sum);
	count(PL_ST_ICMP_SENT);
	return redirected(bpf_redirect(skb->ingress_ifindex, 0));
}

#endif
