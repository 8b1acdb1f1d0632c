/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * ICMP errors, both ways, off the established fast path.
 *
 * In: an ICMP error (destination unreachable incl. fragmentation needed, time exceeded,
 * parameter problem) about a packet P' we emitted after a rewrite is translated back for the
 * sender of the packet before the rewrite (icmp_error_in), as Linux conntrack NAT does.
 *
 * Out: what a router would answer, we answer (icmp_reply): 'time exceeded' for TTL <= 1 and
 * 'fragmentation needed' for a DF packet longer than the egress MTU. Both quote the packet
 * as it came in, before any rewrite, so its sender recognises its own packet.
 */
#ifndef PYLOXI_ICMP_H
#define PYLOXI_ICMP_H

#include "pyloxi/conntrack.h"
#include "pyloxi/fwd.h"
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"
#include "pyloxi/verdict.h"
#include "pyloxi/icmp_out.h"
#include "pyloxi/icmp6.h"

#define PL_ICMP_QUOTE_MAX 548     /* 576 - 20 - 8: a router quotes at most 576 bytes (RFC 1812) */
#define PL_ICMP_PULL      170     /* eth + outer IP (60) + ICMP + inner IP (60) + 20 of L4 */

/* The flow an ICMP error is about, established or not yet (conntrack.h looks in both tables). */
static __always_inline struct ct_val *icmp_flow_lookup(const struct ct_key *k)
{
	return ct_lookup(k);
}

/* ICMP error type/code -> ICMPv6 (RFC 7915 §4.2, the cases an LB meets); 0xffff: none. */
static __always_inline __u32 icmp_4to6_type(__u8 type, __u8 code)
{
	if (type == ICMP_TIME_EXCEEDED)
		return ICMPV6_TIME_EXCEED << 8 | code;
	if (type != ICMP_DEST_UNREACH)
		return 0xffff;
	switch (code) {
	case ICMP_FRAG_NEEDED:
		return ICMPV6_PKT_TOOBIG << 8;
	case ICMP_PORT_UNREACH:
		return ICMPV6_DEST_UNREACH << 8 | ICMPV6_PORT_UNREACH;
	case ICMP_NET_ANO:
	case ICMP_HOST_ANO:
	case ICMP_PKT_FILTERED:
		return ICMPV6_DEST_UNREACH << 8 | ICMPV6_ADM_PROHIBITED;
	}
	return ICMPV6_DEST_UNREACH << 8 | ICMPV6_NOROUTE;
}

/*
 * An ICMP error about the IPv4 side of a NAT64 flow (e2: the flow's reply entry, keyed by the
 * reverse of the quoted packet), rebuilt as the ICMPv6 error its IPv6 client understands: from
 * the VIP (the IPv4 router has no IPv6 address) to the client, quoting the client's own packet
 * (the IPv6 header of the tuple before translation, then the first 8 bytes of L4 with the
 * client's ports). 'Fragmentation needed' becomes 'packet too big' with the MTU + 20 (the IPv6
 * header is 20 bytes longer), so PMTU discovery works across the translation. The message is
 * built whole (40 + 8 + 40 + 8 bytes) and its checksum computed. Returns PL_CONTINUE (to be
 * routed to the client by the caller), or a verdict.
 */
__noinline int pl_icmp_error_4to6(struct __sk_buff *skb, struct ct_val *e2)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct icmphdr *ic = (void *)(ip + 1);
	struct iphdr *in = (void *)(ic + 1);
	__u32 l4w[2], tc, mtu;
	__u8 proto;

	if (!e2 || (void *)(in + 1) + 8 > data_end || ip->ihl != 5 || in->ihl != 5)
		return PL_PASS;
	tc = icmp_4to6_type(ic->type, ic->code);
	if (tc == 0xffff)
		return PL_PASS;
	mtu = bpf_ntohs(ic->un.frag.mtu) + 20;
	proto = in->protocol == IPPROTO_ICMP ? IPPROTO_ICMPV6 : in->protocol;
	__builtin_memcpy(l4w, (void *)(in + 1), 8);
	/* the quoted L4 header, as the client sent it: its ports (echo: type and identifier) */
	__u16 *h = (void *)l4w;
	if (proto == IPPROTO_ICMPV6) {
		*(__u8 *)h = ICMPV6_ECHO_REQUEST;
		h[2] = e2->nat_sport;
	} else {
		h[0] = e2->nat_dport;
		h[1] = e2->nat_sport;
	}

	/* 14 + 20 + 8 + 20 + 8 -> (IPv6) 14 + 40 + 8 + 20 + 8 -> 14 + 40 + 8 + 40 + 8 */
	if (bpf_skb_change_tail(skb, ETH_HLEN + 56, 0) ||
	    bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) ||
	    bpf_skb_change_tail(skb, ETH_HLEN + 96, 0))
		return PL_DROP;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *o6 = data + ETH_HLEN;
	struct icmp6hdr *ic6 = (void *)(o6 + 1);
	struct ipv6hdr *i6 = (void *)(ic6 + 1);
	__u32 *l4 = (void *)(i6 + 1);
	if ((void *)(l4 + 2) > data_end)
		return PL_DROP;
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	*(__u32 *)o6 = bpf_htonl(0x60000000);
	o6->payload_len = bpf_htons(56);
	o6->nexthdr = IPPROTO_ICMPV6;
	o6->hop_limit = 64;
	__builtin_memcpy(&o6->saddr, &e2->nat_saddr, 16);   /* the VIP */
	__builtin_memcpy(&o6->daddr, &e2->nat_daddr, 16);   /* the client */
	ic6->icmp6_type = tc >> 8;
	ic6->icmp6_code = tc & 0xff;
	ic6->icmp6_cksum = 0;
	ic6->icmp6_dataun.un_data32[0] = (tc >> 8) == ICMPV6_PKT_TOOBIG ? bpf_htonl(mtu) : 0;
	*(__u32 *)i6 = bpf_htonl(0x60000000);
	i6->payload_len = bpf_htons(8);   /* of the quote: what is left of the original */
	i6->nexthdr = proto;
	i6->hop_limit = 64;
	__builtin_memcpy(&i6->saddr, &e2->nat_daddr, 16);   /* the client's packet: client -> VIP */
	__builtin_memcpy(&i6->daddr, &e2->nat_saddr, 16);
	l4[0] = l4w[0];
	l4[1] = l4w[1];

	__u64 sum = 0;
	__u32 *w = (void *)ic6;
	for (int i = 0; i < 56 / 4; i++)
		sum += w[i];
	w = (void *)&o6->saddr;
	for (int i = 0; i < 8; i++)
		sum += w[i];
	sum += bpf_htonl(56) + bpf_htonl(IPPROTO_ICMPV6);
	ic6->icmp6_cksum = ~csum_fold64(sum);
	count(PL_ST_ICMP_XLATE);
	return PL_CONTINUE;
}

/*
 * Translate an ICMP error about one of our flows. The quoted packet P' is what we sent after a
 * rewrite, so the reverse of its tuple is the key of the flow's OTHER entry E2, and the tuple P'
 * had before our rewrite is the reverse of E2's rewrite:
 *     K = (E2.nat_daddr -> E2.nat_saddr, ports E2.nat_dport -> E2.nat_sport; echo id E2.nat_sport)
 * New inner header = K (addresses, ports or echo id, inner IP checksum, the inner L4 checksum
 * when the quote holds it); new outer destination = K's source; new outer source = K's
 * destination when the error came from P''s own destination, else unchanged (a router on the
 * way). All checksums are updated by difference, so every covered sum stays what it was and a
 * CHECKSUM_COMPLETE skb->csum stays valid. Not ours (no such flow): the kernel's.
 * Returns a verdict. A global function: the verifier checks it once, not in the state of its
 * caller.
 */
__noinline int pl_icmp_error_in(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct iphdr *ip, *in;
	struct icmphdr *ic;
	__u32 ohl, ihl, len = skb->len;
	int rc;

	if (bpf_skb_pull_data(skb, len < PL_ICMP_PULL ? len : PL_ICMP_PULL))
		return PL_PASS;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return PL_PASS;
	ohl = (ip->ihl & 0xf) << 2;
	if (ohl < sizeof(*ip))
		return PL_PASS;
	ic = data + ETH_HLEN + ohl;
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > data_end)
		return PL_PASS;
	ihl = (in->ihl & 0xf) << 2;
	if (ihl < sizeof(*in) || (in->frag_off & bpf_htons(0x1fff)))
		return PL_PASS;   /* a later fragment quotes no ports: we cannot tell the flow */
	__u16 *l4 = (void *)in + ihl;
	if ((void *)(l4 + 4) > data_end)
		return PL_PASS;

	struct ct_key rk = { .proto = in->protocol, .family = PL_AF_INET };
	addr_set_v4(&rk.saddr, in->daddr);
	addr_set_v4(&rk.daddr, in->saddr);
	__u32 l4c_off;   /* offset of the inner L4 checksum in l4, 0: none we update */
	switch (in->protocol) {
	case IPPROTO_TCP:
		l4c_off = 16;
		break;
	case IPPROTO_UDP:
		l4c_off = 6;
		break;
	case IPPROTO_SCTP:
		l4c_off = 0;   /* CRC32c: not covered by addresses; not in the 8 quoted bytes */
		break;
	case IPPROTO_ICMP: {
		__u8 t = *(__u8 *)l4;
		if (t != ICMP_ECHO && t != ICMP_ECHOREPLY)
			return PL_PASS;
		l4c_off = 2;
		break;
	}
	default:
		return PL_PASS;
	}
	if (in->protocol == IPPROTO_ICMP) {
		rk.sport = l4[2];
		rk.dport = 0;
	} else {
		rk.sport = l4[1];
		rk.dport = l4[0];
	}

	struct ct_val *e2 = icmp_flow_lookup(&rk);
	if (!e2)
		return PL_PASS;
	if (e2->nat_family == PL_AF_INET6) {   /* about a NAT64 flow: becomes ICMPv6 */
		rc = pl_icmp_error_4to6(skb, e2);
		if (rc != PL_CONTINUE)
			return rc;
		/* routed from here: a call of route_out in pl_icmp_error_4to6 would take the
		 * stack of the call chain past 512 bytes */
		return route_out(skb, PL_AF_INET6, &e2->nat_saddr, &e2->nat_daddr);
	}
	if (ip->ttl <= 1)
		return PL_DROP;   /* never an ICMP error about an ICMP error */

	__u32 ks = addr_v4(&e2->nat_daddr), kd = addr_v4(&e2->nat_saddr);
	__u32 old_ports, new_ports;
	if (in->protocol == IPPROTO_ICMP) {
		old_ports = l4[2];
		new_ports = e2->nat_sport;
	} else {
		old_ports = l4[0] | ((__u32)l4[1] << 16);
		new_ports = e2->nat_dport | ((__u32)e2->nat_sport << 16);
	}
	__u32 osrc = ip->saddr == in->daddr ? kd : ip->saddr;
	__u32 odst = ks;

	/* inner: addresses (and the inner IP checksum), ports or echo id, L4 checksum */
	__u32 addr_diff = csum_replace(csum_replace(0, in->saddr, ks), in->daddr, kd);
	__u32 port_diff = csum_replace(0, old_ports, new_ports);
	__u16 old_icheck = in->check;
	__u16 new_icheck = csum_fold_diff(old_icheck, addr_diff);
	__u32 msg_diff = csum_add(csum_add(addr_diff, port_diff),
				  csum_replace(0, old_icheck, new_icheck));
	if (l4c_off && (void *)l4 + l4c_off + 2 <= data_end) {
		__u16 *l4c = (void *)l4 + (l4c_off & 0x1f);
		if ((void *)(l4c + 1) > data_end)
			return PL_PASS;
		__u16 oc = *l4c, nc;
		if (in->protocol == IPPROTO_ICMP)
			nc = csum_fold_diff(oc, port_diff);               /* no pseudo-header */
		else if (in->protocol == IPPROTO_UDP && oc == 0)
			nc = 0;                                           /* no checksum: keep it so */
		else
			nc = csum_fold_diff(oc, csum_add(addr_diff, port_diff));
		if (in->protocol == IPPROTO_UDP && oc && nc == 0)
			nc = 0xffff;
		msg_diff = csum_add(msg_diff, csum_replace(0, oc, nc));
		*l4c = nc;
	}
	in->saddr = ks;
	in->daddr = kd;
	in->check = new_icheck;
	if (in->protocol == IPPROTO_ICMP) {
		l4[2] = (__u16)new_ports;
	} else {
		l4[0] = (__u16)new_ports;
		l4[1] = (__u16)(new_ports >> 16);
	}
	ic->checksum = csum_fold_diff(ic->checksum, msg_diff);

	/* outer: addresses, and the TTL of a packet we route */
	__u32 ttl_old = bpf_htons((__u16)ip->ttl << 8), ttl_new = bpf_htons((__u16)(ip->ttl - 1) << 8);
	__u32 o_diff = csum_replace(csum_replace(0, ip->saddr, osrc), ip->daddr, odst);
	ip->check = csum_fold_diff(ip->check, csum_replace(o_diff, ttl_old, ttl_new));
	ip->ttl--;
	ip->saddr = osrc;
	ip->daddr = odst;
	count(PL_ST_ICMP_XLATE);
	union pl_addr s4, d4;
	addr_set_v4(&s4, osrc);
	addr_set_v4(&d4, odst);
	return route_out(skb, PL_AF_INET, &s4, &d4);
}

/*
 * Turn the received packet (not yet rewritten) into the ICMP error `type`/`code` from `src` to
 * its sender, and send it back out of the interface it came in on, to the hop it came from
 * (MACs swapped), as Katran does. The quote is the packet's first bytes, at most 548 and a
 * multiple of 4 (always the IP header and 8 more bytes). Never about a later fragment.
 * Returns a verdict. Global, so verified once however many callers it has.
 */
__noinline int pl_icmp_reply(struct __sk_buff *skb, __u32 type, __u32 code, __u32 mtu,
			     __u32 src)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	__u32 dst, l3len, q, ihl, l4c = 0;

	if ((void *)(ip + 1) > data_end || (ip->frag_off & bpf_htons(0x1fff)))
		return PL_DROP;
	if (!icmp_allow()) {
		count(PL_ST_ICMP_LIMITED);
		return PL_DROP;
	}
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	dst = ip->saddr;
	ihl = (ip->ihl & 0xf) << 2;
	l3len = bpf_ntohs(ip->tot_len);
	if (l3len > skb->len - ETH_HLEN)
		l3len = skb->len - ETH_HLEN;
	q = (l3len < PL_ICMP_QUOTE_MAX ? l3len : PL_ICMP_QUOTE_MAX) & ~3U;
	if (ihl < sizeof(*ip) || q < ihl + 8)
		return PL_DROP;
	/*
	 * The quoted L4 checksum, preset by quote_sum (CHECKSUM_PARTIAL: see there).
	 */
	if (ip->frag_off & bpf_htons(0x1fff)) {
		l4c = 0;
	} else if (ip->protocol == IPPROTO_TCP && ihl + 18 <= q) {
		l4c = ihl + 16;
	} else if (ip->protocol == IPPROTO_UDP && ihl + 8 <= q) {
		l4c = ihl + 6;
	}

	/* Trim to the quote (this also ends GSO; a trim or a grow turns CHECKSUM_COMPLETE into
	 * NONE, whose skb->csum our stores would make stale, hence the grow when nothing is
	 * trimmed), then make room for the IP and ICMP headers in front of the quote. */
	if (skb->len == ETH_HLEN + q && bpf_skb_change_tail(skb, ETH_HLEN + q + 4, 0))
		return PL_DROP;
	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0))
		return PL_DROP;
	if (bpf_skb_adjust_room(skb, sizeof(struct iphdr) + sizeof(struct icmphdr),
				BPF_ADJ_ROOM_MAC, 0))
		return PL_DROP;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	struct iphdr *nip = data + ETH_HLEN;
	struct icmphdr *ic = (void *)(nip + 1);
	void *quote = (void *)(ic + 1);
	if (quote + sizeof(struct iphdr) + 8 > data_end)
		return PL_DROP;
	__builtin_memcpy(eth->h_dest, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dmac, ETH_ALEN);

	nip->version = 4;
	nip->ihl = 5;
	nip->tos = 0xc0;          /* internetwork control, as the kernel's ICMP errors */
	nip->tot_len = bpf_htons(sizeof(*nip) + sizeof(*ic) + q);
	nip->id = 0;
	nip->frag_off = 0;
	nip->ttl = 64;
	nip->protocol = IPPROTO_ICMP;
	nip->check = 0;
	nip->saddr = src;
	nip->daddr = dst;
	ic->type = type;
	ic->code = code;
	ic->checksum = 0;
	ic->un.gateway = 0;
	if (type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED)
		ic->un.frag.mtu = bpf_htons(mtu);

	__u64 sum;
	if (quote_sum(quote, data_end, ihl, 60, q, PL_ICMP_QUOTE_MAX, l4c, &sum))
		return PL_DROP;
	__u32 *hw = (void *)ic;
	ic->checksum = ~csum_fold64((__u64)hw[0] + hw[1] + sum);
	__u32 *iw = (void *)nip;
	nip->check = ~csum_fold64((__u64)iw[0] + iw[1] + iw[2] + iw[3] + iw[4]);
	count(PL_ST_ICMP_SENT);
	return redirected(bpf_redirect(skb->ingress_ifindex, 0));
}

static __always_inline int ip_df(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > data_end)
		return 0;
	return !!(ip->frag_off & bpf_htons(PL_IP_DF));
}

/*
 * An ICMP error about a packet of flow entry v, from the address its sender knows: the
 * packet's destination when our rewrite changes it (a VIP, or the SNAT address of a fullnat or
 * onearm flow's reply), else (a default-mode reply, addressed to the client) the address the
 * kernel would answer from, i.e. its route back to the sender; the VIP if there is none.
 */
static __always_inline int icmp_answer(struct __sk_buff *skb, const struct pkt *p,
				       const struct ct_val *v, __u8 type, __u8 code, __u16 mtu)
{
	union pl_addr src = p->key.daddr;

	if (addr_eq(&v->nat_daddr, &p->key.daddr) &&
	    local_src(skb, p->key.family, &p->key.saddr, &src))
		src = v->nat_saddr;
	if (p->key.family == PL_AF_INET6)
		return pl_icmp6_reply(skb, type, code, mtu, &src);
	return pl_icmp_reply(skb, type, code, mtu, addr_v4(&src));
}

#endif
