/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Direct server return (mode dsr, loxilb's 3). The packet keeps the VIP and its ports: only the
 * MACs change (L2 DSR: the endpoint holds the VIP on its loopback and answers the client
 * directly), or, for an endpoint that is not on-link (ep_val PL_EP_F_IPIP, set by the control
 * plane), it is encapsulated in IPIP from the LB's own address toward it (L3 DSR, loxilb's
 * tcplbl3dsr: the endpoint decapsulates, holds the VIP, answers directly). The TTL is
 * decremented (the LB is a router hop), nothing else of the client's packet changes.
 *
 * Conntrack is forward-only: one entry (the client's tuple) in ct_half, never promoted, no
 * reply entry and no NAT port (the LB never sees a reply). Selection is hash (Maglev, checked
 * by the engine), so a flow whose entry the LRU evicted or the aging removed is picked up again
 * to the same endpoint, mid-stream or not: a flood of new flows can evict DSR entries but
 * cannot move a flow to another endpoint, and it cannot fill the established table. An entry's
 * fields: nat_saddr -> nat_daddr is the route lookup's tuple (client -> endpoint; IPIP: the
 * outer header, LB -> endpoint), nat_sport/nat_dport the packet's own ports.
 */
#ifndef PYLOXI_DSR_H
#define PYLOXI_DSR_H

#include "pyloxi/conntrack.h"
#include "pyloxi/fwd.h"
#include "pyloxi/icmp.h"
#include "pyloxi/nat.h"
#include "pyloxi/stats.h"
#include "pyloxi/policer.h"
#include "pyloxi/mirror.h"

#define PL_IPIP_HLEN 20

/* Decrement the TTL (IPv4, before any encapsulation: the inner header is the one a router
 * decrements; the header checksum updated RFC 1624 style) or the hop limit (IPv6) in place,
 * in the frame [data, data_end) (TC's or XDP's). */
static __always_inline int dsr_ttl_dec(void *data, void *data_end, __u8 family)
{
	struct iphdr *ip = data + ETH_HLEN;

	if (family == PL_AF_INET6) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
			return -1;
		ip6->hop_limit--;
		return 0;
	}

	if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
		return -1;
	/* TTL shares a 16-bit word with the protocol */
	__u32 from = bpf_htons((__u16)ip->ttl << 8);
	__u32 to = bpf_htons((__u16)(ip->ttl - 1) << 8);

	ip->check = csum_fold_diff(ip->check, csum_replace(0, from, to));
	ip->ttl--;
	return 0;
}

/* Put an outer IPv4 header saddr -> daddr (protocol 4) in front of the packet's own: TTL 64,
 * id 0, DF copied from the inner header (the inner sender's choice about fragmentation). A GSO
 * packet's gso_size is lowered by the outer header by the helper, so its segments grow by
 * nothing. dsr_outer writes the header into the room made after the Ethernet header. */
static __always_inline int dsr_outer(void *data, void *data_end, __u32 saddr, __u32 daddr)
{
	struct iphdr *outer = data + ETH_HLEN;
	struct iphdr *inner = (void *)(outer + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	*(__u8 *)outer = 0x45;   /* version 4, ihl 5 */
	outer->tos = inner->tos;
	outer->tot_len = bpf_htons(bpf_ntohs(inner->tot_len) + PL_IPIP_HLEN);
	outer->id = 0;
	outer->frag_off = inner->frag_off & bpf_htons(PL_IP_DF);
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = saddr;
	outer->daddr = daddr;

	__u32 *w = (void *)outer;
	outer->check = ~csum_fold64((__u64)w[0] + w[1] + w[2] + w[3] + w[4]);
	return 0;
}

static __always_inline int dsr_encap(struct __sk_buff *skb, __u32 saddr, __u32 daddr)
{
	if (bpf_skb_adjust_room(skb, PL_IPIP_HLEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return -1;
	return dsr_outer((void *)(long)skb->data, (void *)(long)skb->data_end, saddr, daddr);
}

/* The same in XDP: the frame grows at its head, the Ethernet header moves there. */
static __always_inline int dsr_encap_xdp(struct xdp_md *ctx, __u32 saddr, __u32 daddr)
{
	if (bpf_xdp_adjust_head(ctx, -PL_IPIP_HLEN))
		return -1;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data, *old = data + PL_IPIP_HLEN;

	if ((void *)(old + 1) > data_end)
		return -1;
	__builtin_memcpy(eth, old, ETH_HLEN);   /* apart: the outer header goes in between */
	return dsr_outer(data, data_end, saddr, daddr);
}

/* Whether an IPIP flow's packet, 20 bytes longer once encapsulated, no longer fits the egress
 * (`nh` and `hop` from next_hop(), which checked it without the outer header); *mtu: the
 * egress MTU. GSO packets fit when their segments did (see dsr_encap). */
static __always_inline int dsr_ipip_too_big(struct __sk_buff *skb, const struct ct_val *v,
					    int nh, const struct hop *hop, __u32 *mtu)
{
	__u32 ifindex = nh == NH_CACHED ? v->fib_ifindex : hop->ifindex;
	__u32 m = 0;
	int rc;

	if (skb->gso_size)
		return 0;
	if (nh == NH_CACHED && skb->len + PL_IPIP_HLEN <= v->fib_mtu + ETH_HLEN)
		return 0;
	rc = bpf_check_mtu(skb, ifindex, &m, PL_IPIP_HLEN, 0);
	*mtu = m;
	return rc == BPF_MTU_CHK_RET_FRAG_NEEDED;
}

/* Send a packet of DSR flow entry v to its endpoint: TTL - 1, IPIP when the flow is, MACs of
 * the next hop toward the endpoint. Errors as a router: 'time exceeded', and 'fragmentation
 * needed' with the MTU left for the inner packet (egress MTU - 20 with IPIP) for a DF packet
 * that does not fit; a packet without DF that does not fit is dropped and counted (we cannot
 * fragment it, and the kernel would deliver it to the local VIP). Returns a verdict. Not
 * inlined: its frame would add to the pipeline's and to new_flow's (512 bytes in all). */
static __noinline int dsr_forward(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v,
				  __u64 now)
{
	struct hop hop = {};
	int nh, ipip;

	mirr_rule(skb, v->svc_id);   /* mirror.h */
	ipip = v->flags & PL_CT_F_IPIP;
	if (pol_flow_red(p, v, now))   /* policer.h: the rule's, endpoint's, client's policers */
		return PL_DROP;
	if (p->ttl <= 1)
		return icmp_answer(skb, p, v, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0);
	/* hop.mtu: the egress MTU of a packet too big (no variable of its own: this frame counts
	 * against the 512-byte stack along lb -> new_flow -> here -> next_hop) */
	nh = next_hop(skb, p, v, now, &hop);
	if (nh != NH_TOO_BIG && ipip && nh != NH_PASS &&
	    dsr_ipip_too_big(skb, v, nh, &hop, &hop.mtu))
		nh = NH_TOO_BIG;
	if (nh == NH_TOO_BIG) {
		if (ipip)
			hop.mtu = hop.mtu > PL_IPIP_HLEN + 68 ? hop.mtu - PL_IPIP_HLEN : 68;
		if (p->key.family == PL_AF_INET6 || ip_df(skb))
			return icmp_answer(skb, p, v, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, hop.mtu);
		count(PL_ST_DSR_TOO_BIG);
		return PL_DROP;
	}
	if (nh == NH_PASS) {
		/* no route to the endpoint: the kernel has the VIP and refuses the packet */
		count(PL_ST_FIB_PASS);
		return PL_PASS;
	}
	if (dsr_ttl_dec((void *)(long)skb->data, (void *)(long)skb->data_end, p->key.family))
		return PL_DROP;
	if (ipip && dsr_encap(skb, addr_v4(&v->nat_saddr), addr_v4(&v->nat_daddr)))
		return PL_DROP;
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
	account(v, p->len);
	return transmit(skb, v, nh, &hop);
}

/* A packet of a DSR flow (entry v of ct_half): flag bits and the time stamp. No window
 * tracking: the LB sees one direction only, so a RST or FIN cannot be judged against the other
 * side's window; a spoofed one can only shorten the entry's life, and the flow is picked up
 * again by hash. Returns PL_CONTINUE, or PL_RESTART for a SYN on a closed flow (a new
 * connection on a reused port: selected afresh). */
static __always_inline enum pl_verdict dsr_track(const struct pkt *p, struct ct_val *v, __u64 now)
{
	if (p->key.proto == IPPROTO_TCP) {
		__u32 bits = tcp_bits(p->tcp_flags);

		if (bits == PL_CT_SYN && (v->seen & (PL_CT_FIN | PL_CT_RST))) {
			bpf_map_delete_elem(&ct_half, &p->key);
			count(PL_ST_REUSE);
			return PL_RESTART;
		}
		if ((v->seen & bits) != bits)
			__sync_fetch_and_or(&v->seen, bits);
	} else if (!(v->seen & PL_CT_SEEN)) {
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	}
	/* Signed: another CPU may have stamped it with a clock read just after ours. */
	if ((__s64)(now - v->last_ns) > (__s64)NSEC_PER_SEC)
		v->last_ns = now;
	return PL_CONTINUE;
}

/* A new DSR flow of packet p to endpoint ep (index idx of service svc_id): its one entry (to
 * forward the packet with), or NULL. `pickup`: mid-stream TCP, picked up by hash. */
static __always_inline struct ct_val *dsr_new_flow(const struct pkt *p, __u32 svc_id, int idx,
						    const struct ep_val *ep, int pickup, __u64 now)
{
	/* an endpoint flagged IPIP without an outer source cannot be encapsulated to: L2; IPIP
	 * is IPv4 in IPv4 (the control plane flags no IPv6 endpoint) */
	int ipip = (ep->flags & PL_EP_F_IPIP) && !addr_is_zero(&ep->snat_ip) &&
		   ep->family == PL_AF_INET;
	struct flow_scratch *sc;
	struct ct_val *fv, *v;
	__u32 zero = 0;

	sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return NULL;
	fv = &sc->fwd;
	__builtin_memset(fv, 0, sizeof(*fv));
	fv->nat_saddr = ipip ? ep->snat_ip : p->key.saddr;
	fv->nat_daddr = ep->ip;
	fv->nat_family = ep->family;
	fv->nat_sport = p->key.sport;
	fv->nat_dport = p->key.dport;
	fv->svc_id = svc_id;
	fv->ep_idx = idx;
	fv->ep_gid = ep->gid;
	fv->dir = PL_DIR_ORIG;
	fv->mode = PL_MODE_DSR;
	fv->flags = ipip ? PL_CT_F_IPIP : 0;
	fv->created_ns = fv->last_ns = now;
	fv->seen = p->key.proto == IPPROTO_TCP ? tcp_bits(p->tcp_flags) : PL_CT_SEEN;
	fv->td_flags = pickup ? PL_TD_LIBERAL : 0;
	fv->td_wsopt = PL_TD_NO_WS;
	/* BPF_NOEXIST: another CPU may have created it a moment ago; then theirs is used */
	if (bpf_map_update_elem(&ct_half, &p->key, fv, BPF_NOEXIST) == 0) {
		if (pickup)
			count(PL_ST_PICKUP);
		svc_count_new(svc_id);
		count(PL_ST_NEW_FLOW);
	}
	v = bpf_map_lookup_elem(&ct_half, &p->key);
	if (!v)
		count(PL_ST_CT_INSERT_FAIL);
	return v;
}

#endif
