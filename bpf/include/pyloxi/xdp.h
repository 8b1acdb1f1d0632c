/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * The XDP path: TCP, UDP and ICMP echo flows, NAT64 ones included, are created, tracked,
 * rewritten (NAT64: translated, xdp_xlate_send), counted and redirected here, before an skb
 * exists (native XDP) or before TC runs (generic XDP), with TC's own stages and tables:
 *
 *   established (ct_map)  -> window tracking, rewrite, redirect                 (xdp_fast)
 *   half-open (ct_half)   -> ct_half_open: handshake, promotion; DSR: dsr_track  (xdp_slow)
 *   no entry              -> service, allowed sources, select, nat_flow, ct_create
 *                            (DSR: dsr_new_flow; IPIP: dsr_encap_xdp)             (xdp_new_flow)
 *
 * FIN and RST are judged as TC judges them (ct_tcp: in the other direction's window, or
 * dropped), a SYN on a finished flow's tuple ends it and opens a new one, a mid-stream segment
 * is picked up by hash as TC picks it up. A packet leaves with XDP_PASS, untouched, whenever TC
 * must decide: a SYN within a live established flow, ICMP errors, SCTP, fragments, TTL <= 1,
 * a packet longer than the next hop's MTU (NAT64: as translated), no neighbour entry yet,
 * firewall rules, mirrors and policers, a packet no flow or service claims, a pick-up for a
 * rule not selecting by hash (TC refuses it), a source the rule does not allow, a NAT64 packet
 * xlate.h refuses (TC drops and counts it) or an IPv4 UDP datagram without checksum for an
 * IPv6 client (TC sums the whole datagram). One conntrack table: a flow may move between the
 * two programs at any packet. In particular a flow XDP created but cannot forward (no
 * neighbour yet, too big, a port it may not redirect to) is passed on: TC finds it half-open
 * and forwards the packet as a retransmission, so the endpoint is selected once (a second
 * selection would move rr's cursor twice).
 *
 * Only the L4 checksum is applied differently: TC calls bpf_l4_csum_replace, which knows the
 * skb's checksum state; XDP updates the field in place as that helper does for a complete
 * checksum (csum_apply_diff), so both leave the same bytes. A packet whose checksum field holds
 * a local sender's offload seed (CHECKSUM_PARTIAL: veth carries them) cannot be told from its
 * bytes alone, except that the field then equals the pseudo-header sum: such packets go to TC
 * (a complete checksum equal to it by chance, one in 65536, goes there too, which costs only
 * time).
 *
 * What a forwarded packet costs (docs/benchmarks.md, A/B by removing one stage at a time): the
 * parse and the 40-byte-key ct_map lookup most of all; then window tracking, the counters
 * (per entry, per endpoint, per event), the redirect, about 10 ns each. Two lookups were cut
 * without giving anything up: xdp_ports is an array (an inlined lookup, not a hash), and the
 * clock is read once per jiffy (xdp_now).
 */
#ifndef PYLOXI_XDP_H
#define PYLOXI_XDP_H

#include <linux/if_ether.h>
#include "pyloxi/conntrack.h"
#include "pyloxi/ct_create.h"
#include "pyloxi/dsr.h"
#include "pyloxi/firewall.h"
#include "pyloxi/fwd.h"
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/select.h"
#include "pyloxi/service.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"
#include "pyloxi/xlate.h"

/* The clock of the XDP path: pl_now()'s coarse clock, read once per jiffy per CPU. The coarse
 * clock only moves when the tick advances the timekeeper, which is when jiffies moves, and
 * bpf_jiffies64 is inlined by the verifier (a load) where the helper call cost about a sixth
 * of the fast path. A value at most a tick or two behind: aging and the next-hop cache work in
 * seconds. */
struct xdp_clock {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_clock);
} xdp_clock_map SEC(".maps");

static __always_inline __u64 xdp_now(void)
{
	__u32 zero = 0;
	struct xdp_clock *c = bpf_map_lookup_elem(&xdp_clock_map, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return pl_now();
	if (c->jiffies != j) {
		c->jiffies = j;
		c->ns = pl_now();
	}
	return c->ns;
}

/* 1 when the L4 checksum `check` of p equals the pseudo-header sum (folded, not complemented)
 * a sender that leaves the checksum to the device writes (csum_tcpudp_magic/csum_ipv6_magic
 * with a zero sum, complemented): a CHECKSUM_PARTIAL packet. */
static __always_inline int csum_looks_partial(const struct pkt *p, __u16 check)
{
	const __u32 *s = p->key.saddr.w, *d = p->key.daddr.w;
	__u32 l4len = p->l3len - (p->l4off - p->l3off);
	__u64 sum = (__u64)bpf_htons(p->key.proto) + bpf_htons((__u16)l4len);

	if (p->key.family == PL_AF_INET)
		sum += (__u64)s[3] + d[3];
	else
		sum += (__u64)s[0] + s[1] + s[2] + s[3] + d[0] + d[1] + d[2] + d[3];
	return csum_fold64(sum) == check;
}

/* Frames of this interface XDP may look at: it serves the interface, the frame is sent to the
 * interface's own MAC (TC leaves PACKET_OTHERHOST frames to the kernel; multicast and
 * broadcast: TC's too), and no mirror or interface policer wants every frame. */
static __always_inline struct xdp_port *xdp_ours(struct xdp_md *ctx, const struct ethhdr *eth)
{
	__u32 ifindex = ctx->ingress_ifindex, zero = 0;
	struct xdp_port *port = bpf_map_lookup_elem(&xdp_ports, &ifindex);
	struct mirr_gate *mg;
	struct pol_cfg *pc;

	if (!port || !port->on)
		return NULL;
	if (*(__u32 *)eth->h_dest != *(__u32 *)port->mac ||
	    *(__u16 *)(eth->h_dest + 4) != *(__u16 *)(port->mac + 4))
		return NULL;
	mg = bpf_map_lookup_elem(&mirr_gate, &zero);
	if (mg && (mg->ports | mg->rules))
		return NULL;
	pc = bpf_map_lookup_elem(&pol_cfg_map, &zero);
	/* interface, endpoint and client policers: TC's (endpoint and client ones are rare) */
	return pc && (pc->nports | pc->nclients | pc->neps) ? NULL : port;
}

/* May a frame that arrived on `in` be redirected to ifindex `out`? Generic XDP redirects
 * through the ordinary transmit path, to any device. Native XDP hands the frame to the target
 * driver's XDP transmit, which only a device in native mode is sure to have (a veth needs NAPI
 * on its peer, other devices may lack it: the frame would be dropped): to such a port only,
 * else TC forwards. */
static __always_inline int xdp_can_redirect(const struct xdp_port *in, __u32 out)
{
	struct xdp_port *to;

	if (!in->native)
		return 1;
	to = bpf_map_lookup_elem(&xdp_ports, &out);
	return to && to->on && to->native;
}

/* The L4 checksum field of p (TCP, UDP, ICMP echo), in the frame, or NULL. */
static __always_inline __u16 *xdp_l4_check(void *data, void *data_end, const struct pkt *p)
{
	__u16 *check = data + (l4_csum_off(p) & 0xff);

	if ((void *)(check + 1) > data_end)
		return NULL;
	return check;
}

/* May XDP rewrite p's checksum (csum_looks_partial)? Counted when not. ICMP echoes carry no
 * offload seed (their senders sum them whole). */
static __always_inline int xdp_csum_ok(const struct pkt *p, __u16 check)
{
	if (p->key.proto == IPPROTO_ICMP || !csum_looks_partial(p, check))
		return 1;
	count(PL_ST_XDP_PARTIAL);
	return 0;
}

/* TC's rewrite of p to entry v's tuple (rewrite_tuple, rewrite_tuple6), the L4 checksum
 * updated in place; `check` from xdp_l4_check. An ICMP (v4) checksum covers no pseudo-header. */
static __always_inline int xdp_rewrite(void *data, void *data_end, const struct pkt *p,
				       const struct ct_val *v, __u16 *check)
{
	int mangled0 = p->key.proto == IPPROTO_UDP;
	__u32 addr_diff, port_diff;

	if (p->key.family == PL_AF_INET) {
		tuple_diff4(p, addr_v4(&v->nat_saddr), addr_v4(&v->nat_daddr), v->nat_sport,
			    v->nat_dport, &addr_diff, &port_diff);
		/* as TC's two helper calls: the addresses, then the ports */
		if (addr_diff && p->key.proto != IPPROTO_ICMP)
			csum_apply_diff(check, addr_diff, mangled0);
		if (port_diff)
			csum_apply_diff(check, port_diff, mangled0);
		return store_tuple4(data, data_end, p, addr_diff, addr_v4(&v->nat_saddr),
				    addr_v4(&v->nat_daddr), v->nat_sport, v->nat_dport);
	}
	tuple_diff6(p, v, &addr_diff, &port_diff);
	if (addr_diff)
		csum_apply_diff(check, addr_diff, mangled0);
	if (port_diff)
		csum_apply_diff(check, port_diff, mangled0);
	return store_tuple6(data, data_end, p, v);
}

/* Counted as TC's forward() counts, MACs of v's next hop, redirected there. */
static __always_inline int xdp_send(struct ethhdr *eth, const struct pkt *p, struct ct_val *v)
{
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
	account(v, p->len);
	count(PL_ST_XDP_FWD);
	__builtin_memcpy(eth->h_dest, v->fib_dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, v->fib_smac, ETH_ALEN);
	return bpf_redirect(v->fib_ifindex, 0);
}

/* The bytes a packet of entry v gains (NAT64 towards IPv6) or loses as sent. */
static __always_inline __s32 xdp_grow(const struct pkt *p, const struct ct_val *v)
{
	if (v->nat_family == p->key.family)
		return 0;
	return v->nat_family == PL_AF_INET6 ? 20 : -20;
}

/* May XDP translate p to the other family (NAT64)? What xlate_ok allows, except an IPv4 UDP
 * datagram without checksum (`check` 0): IPv6 needs a full one, which TC sums. */
static __always_inline int xdp_xlate_ok(const struct pkt *p, __u16 check)
{
	return xlate_ok(p) && !(p->key.family == PL_AF_INET && p->key.proto == IPPROTO_UDP &&
				!check);
}

/*
 * NAT64 in XDP: xlate.h's translation of p to entry v's family, the same bytes. The L4
 * checksum takes xlate_diffs in place (as xdp_rewrite), then bpf_xdp_adjust_head moves the
 * frame's start, 20 bytes on (6 -> 4) or back (4 -> 6): the L4 header stays where it is and
 * the new IP header is written in front of it (xlate_store4/6). Sent as xdp_send. Callers
 * checked xdp_xlate_ok and routed p with xdp_grow. Not inlined: one copy for both callers.
 */
static __noinline int xdp_xlate_send(struct xdp_md *ctx, const struct pkt *p, struct ct_val *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 addr_diff, port_diff;
	__u16 *check;
	__u8 tos, ttl;
	int to4, rc;

	if (!p || !v)
		return XDP_DROP;
	to4 = p->key.family == PL_AF_INET6;
	if (to4) {
		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		tos = ip6_tclass(ip6);
		ttl = ip6->hop_limit - 1;
	} else {
		if ((void *)(ip + 1) > data_end)
			return XDP_DROP;
		tos = ip->tos;
		ttl = ip->ttl - 1;
	}
	check = xdp_l4_check(data, data_end, p);
	if (!check)
		return XDP_DROP;
	xlate_diffs(p, v, &addr_diff, &port_diff);
	csum_apply_diff(check, addr_diff, 0);   /* TC's helper calls mark no UDP 0 either */
	if (port_diff)
		csum_apply_diff(check, port_diff, 0);
	if (bpf_xdp_adjust_head(ctx, to4 ? 20 : -20))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	rc = to4 ? xlate_store4(data, data_end, p, v, tos, ttl)
		 : xlate_store6(data, data_end, p, v, tos, ttl);
	if (rc || data + ETH_HLEN > data_end)
		return XDP_DROP;
	return xdp_send(data, p, v);
}

/*
 * May XDP send packet p by entry v? Its rule has no policer (TC's: its buckets are
 * spin-locked there), the entry has a fresh next hop, taken from the memo or looked up as
 * next_hop (fwd.h) does and kept in the entry (no neighbour entry yet: TC's redirect_neigh),
 * and the packet, `grow` bytes longer as sent, fits that hop's MTU at a glance (TC's exact
 * check needs the skb). Returns 0 when it may. Not inlined: the lookup's params stay in this
 * frame.
 */
static __noinline int xdp_route(struct xdp_md *ctx, const struct pkt *p, struct ct_val *v,
				__u64 now, __s32 grow)
{
	struct bpf_fib_lookup fib = {};
	struct fib_memo *memo;
	__u32 *pol;

	if (!ctx || !p || !v)
		return -1;
	pol = bpf_map_lookup_elem(&pol_svc, &v->svc_id);
	if (pol && *pol)
		return -1;
	if (!(v->fib_ifindex && pl_fib_fresh(v, now))) {
		memo = fib_memo_take(v, p->key.proto, ctx->ingress_ifindex);
		if (!(v->fib_ifindex && pl_fib_fresh(v, now))) {
			fib_addrs(&fib, v->nat_family, &v->nat_saddr, &v->nat_daddr);
			fib.l4_protocol = p->key.proto;
			fib.ifindex = ctx->ingress_ifindex;
			if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
				return -1;
			fib_keep(v, &fib, now, memo, p->key.proto, ctx->ingress_ifindex);
		}
	}
	return p->len + grow > v->fib_mtu + ETH_HLEN;
}

/* xdp_route, and may a frame from `port` be redirected to the hop? 0: XDP may send it. */
static __always_inline int xdp_hop(struct xdp_md *ctx, const struct pkt *p, struct ct_val *v,
				   const struct xdp_port *port, __u64 now, __s32 grow)
{
	return xdp_route(ctx, p, v, now, grow) || !xdp_can_redirect(port, v->fib_ifindex);
}

/* May XDP send p by v: xdp_hop for p as it will leave (NAT64: translated, xdp_grow), and, for
 * NAT64, may XDP translate it (xdp_xlate_ok; `check`: p's L4 checksum as received)? */
static __always_inline int xdp_may_send(struct xdp_md *ctx, const struct pkt *p,
					struct ct_val *v, const struct xdp_port *port, __u64 now,
					__u16 check)
{
	if (v->nat_family != p->key.family && !xdp_xlate_ok(p, check))
		return 0;
	return !xdp_hop(ctx, p, v, port, now, xdp_grow(p, v));
}

/* A DSR flow's packet (dsr_forward: TTL - 1, IPIP when the flow is, the next hop's MACs). */
static __always_inline int xdp_dsr(struct xdp_md *ctx, const struct pkt *p, struct ct_val *v,
				   const struct xdp_port *port, __u64 now, int is_new)
{
	int ipip = v->flags & PL_CT_F_IPIP;
	void *data, *data_end;

	if (xdp_hop(ctx, p, v, port, now, ipip ? PL_IPIP_HLEN : 0))
		return XDP_PASS;
	if (!is_new) {
		/* a SYN on a closed flow starts a new one (dsr_track): TC's */
		if (p->key.proto == IPPROTO_TCP && tcp_bits(p->tcp_flags) == PL_CT_SYN &&
		    (v->seen & (PL_CT_FIN | PL_CT_RST)))
			return XDP_PASS;
		dsr_track(p, v, now);
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if ((data + ETH_HLEN > data_end) || dsr_ttl_dec(data, data_end, p->key.family))
		return XDP_DROP;
	if (ipip) {
		if (dsr_encap_xdp(ctx, addr_v4(&v->nat_saddr), addr_v4(&v->nat_daddr)))
			return XDP_DROP;
		data = (void *)(long)ctx->data;
		if (data + ETH_HLEN > (void *)(long)ctx->data_end)
			return XDP_DROP;
	}
	return xdp_send(data, p, v);
}

/*
 * A packet no conntrack entry knows: what new_flow (lb.bpf.c) does for a packet that opens a
 * flow, with its stages. Returns the new entry (ct_half), or NULL when TC must decide: a
 * firewall rule set is live, the source is an endpoint's (a lost flow's reply: TC drops it), no
 * service or no active endpoint, a source the rule does not allow, a mid-stream TCP segment
 * for a rule that does not select by hash (TC refuses the pick-up), a reset, a non-echo ICMP;
 * or with *act set when ct_create gave up (PL_PASS: no free NAT port, TC tries again;
 * PL_DROP).
 */
static __always_inline struct ct_val *xdp_new_flow(struct xdp_md *ctx, const struct pkt *p,
						   __u64 now, int *act)
{
	struct flow_scratch *sc;
	struct fw_table *fw;
	struct svc_ver *ver;
	struct ep_val *ep;
	struct ct_val *v = NULL;
	__u32 svc_id, ver_id, gen;
	int idx, rc;

	*act = XDP_PASS;
	/* never a flow on a reset; a mid-stream TCP segment is picked up by hash only (new_flow) */
	int pickup = p->key.proto == IPPROTO_TCP &&
		     (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN;

	if (p->key.proto == IPPROTO_ICMP ? p->icmp_type != ICMP_ECHO
	    : p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST))
		return NULL;
	fw = fw_live(&gen);
	if (fw || from_endpoint(&p->key, p->icmp_type))
		return NULL;
	/* no skb->mark here: 0, as at TC ingress (veth clears it between namespaces) */
	ver = svc_lookup(&p->key, 0, &svc_id, &ver_id);
	if (!ver || !ver->cfg.n_slots || !svc_allows(&ver->cfg, ver_id, &p->key.saddr) ||
	    (pickup && ver->cfg.sel != PL_SEL_HASH))
		return NULL;
	idx = select_endpoint(p, svc_id, ver, now);
	ep = idx < 0 ? NULL : svc_ep(&ver->cfg, idx);
	if (!ep || !(ep->flags & PL_EP_F_ACTIVE))
		return NULL;
	if (ver->cfg.mode == PL_MODE_DSR) {
		v = dsr_new_flow(p, svc_id, idx, ep, pickup, now);
		if (v)
			count(PL_ST_XDP_NEW);
		return v;
	}
	sc = flow_nat(p, ep, &ver->cfg);
	if (!sc)
		return NULL;
	rc = ct_create(ctx, 1, p, sc, svc_id, idx, ep->gid, ver->cfg.mode,
		       !addr_is_zero(&ep->snat_ip), pickup, now, &v);
	if (rc != PL_CONTINUE) {
		*act = rc == PL_DROP ? XDP_DROP : XDP_PASS;
		return NULL;
	}
	count(PL_ST_XDP_NEW);
	return v;
}

/* A packet that missed ct_map: a half-open flow's or a new one. Not inlined: the fast path's
 * frame stays small. */
static __noinline int xdp_slow(struct xdp_md *ctx, const struct pkt *p,
			       const struct xdp_port *port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 now = xdp_now();
	struct ct_val *v;
	__u16 *check, sum;
	int act, rc;

	if (!p || !port)
		return XDP_PASS;
	check = xdp_l4_check(data, data_end, p);
	if (!check || !xdp_csum_ok(p, *check))
		return XDP_PASS;
	sum = *check;
	v = bpf_map_lookup_elem(&ct_half, &p->key);
	if (v && v->mode == PL_MODE_DSR)
		return xdp_dsr(ctx, p, v, port, now, 0);
	if (v) {
		/* routed before any state changes; promotion copies the hop into ct_map */
		if (!xdp_may_send(ctx, p, v, port, now, sum))
			return XDP_PASS;
		rc = ct_half_open(ctx, 1, p, &v, now);
		if (rc == PL_DROP)
			return XDP_DROP;
		if (rc == PL_RESTART)
			v = NULL;   /* a SYN on a finished flow's tuple: that flow is gone */
		else if (rc != PL_CONTINUE || !v->fib_ifindex || !pl_fib_fresh(v, now))
			return XDP_PASS;   /* (not fresh: promoted by another CPU before its hop was kept) */
	}
	if (!v) {
		v = xdp_new_flow(ctx, p, now, &act);
		if (!v)
			return act;
		if (v->mode == PL_MODE_DSR)
			return xdp_dsr(ctx, p, v, port, now, 1);
		/* a flow TC must send on (see the top): it finds it half-open */
		if (!xdp_may_send(ctx, p, v, port, now, sum))
			return XDP_PASS;
	}
	if (v->nat_family != p->key.family)
		return xdp_xlate_send(ctx, p, v);
	/* ct_create and ct_half_open read the packet through helpers: reload the pointers */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	check = xdp_l4_check(data, data_end, p);
	if (!check || data + ETH_HLEN > data_end || xdp_rewrite(data, data_end, p, v, check))
		return XDP_DROP;
	return xdp_send(data, p, v);
}

/* A SYN, FIN or RST of an established flow. A FIN or RST: TC's ct_tcp, which checks it against
 * the other direction's window (PL_CONTINUE or PL_DROP). A SYN: the client's on a finished
 * flow's tuple ends that flow (PL_RESTART, as ct_tcp); any other is TC's, the flow untouched
 * (PL_PASS). Not inlined: the partner's key stays in this frame. */
static __noinline int xdp_tcp_flags(struct xdp_md *ctx, const struct pkt *p, struct ct_val *v)
{
	struct ct_val *pv = NULL;
	struct tcp_seg s;

	if (!ctx || !p || !v)
		return PL_DROP;
	if (p->tcp_flags & TCPF_SYN) {
		if (tcp_bits(p->tcp_flags) != PL_CT_SYN || v->dir != PL_DIR_ORIG ||
		    !ct_syn_reuses(v, ct_partner(v, p->key.proto, 0)))
			return PL_PASS;
		return ct_restart(p, v, 0);
	}
	return ct_tcp(ctx, 1, p, v, 0, &s, &pv);
}

/* The XDP path; returns an XDP action. */
static __always_inline int xdp_fast(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct xdp_port *port;
	struct tcp_seg s = {};
	struct ct_val *v;
	__u16 *check;
	struct pkt p;   /* on the stack: the fast path is one call deep */
	__u64 now;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	port = xdp_ours(ctx, eth);
	if (!port)
		return XDP_PASS;
	if (parse_frame(data, data_end, data_end - data, &p) != PARSE_OK ||
	    p.frag != PL_FRAG_NONE || p.ttl <= 1)
		return XDP_PASS;
	if (p.key.proto != IPPROTO_TCP && p.key.proto != IPPROTO_UDP &&
	    p.key.proto != IPPROTO_ICMP)
		return XDP_PASS;   /* SCTP: TC's */
	v = bpf_map_lookup_elem(&ct_map, &p.key);
	if (!v)
		return xdp_slow(ctx, &p, port);
	if (p.key.proto == IPPROTO_TCP && (p.tcp_flags & TCPF_SYN)) {
		/* A new connection on a finished flow's tuple (clients reuse ports): the flow
		 * ends and opens anew, here. A SYN within a live flow: TC's. */
		if (xdp_tcp_flags(ctx, &p, v) == PL_RESTART)
			return xdp_slow(ctx, &p, port);
		return XDP_PASS;
	}
	now = xdp_now();
	/* The next hop as TC cached it; a stale or missing one, or a packet the cached MTU does
	 * not let through at a glance (TC's exact check needs the skb): TC's. */
	if (!v->fib_ifindex || !pl_fib_fresh(v, now) ||
	    p.len + xdp_grow(&p, v) > v->fib_mtu + ETH_HLEN ||
	    !xdp_can_redirect(port, v->fib_ifindex))
		return XDP_PASS;
	__u32 *pol = bpf_map_lookup_elem(&pol_svc, &v->svc_id);
	if (pol && *pol)   /* the rule's policer: TC's (its buckets are spin-locked there) */
		return XDP_PASS;
	/* the L4 header, checked before anything is written */
	check = xdp_l4_check(data, data_end, &p);
	if (!check)
		return XDP_PASS;
	if (p.key.proto == IPPROTO_TCP && tcp_segment_in(data, data_end, &p, &s))
		return XDP_PASS;
	if (!xdp_csum_ok(&p, *check) ||
	    (v->nat_family != p.key.family && !xdp_xlate_ok(&p, *check)))
		return XDP_PASS;

	/* committed: what ct_established and forward() do, in their order */
	if (p.key.proto == IPPROTO_TCP && (p.tcp_flags & (TCPF_FIN | TCPF_RST))) {
		if (xdp_tcp_flags(ctx, &p, v) != PL_CONTINUE)
			return XDP_DROP;   /* outside the window (counted) */
	} else if (p.key.proto == IPPROTO_TCP) {
		ct_tcp_track(v, &s, p.tcp_flags, tcp_bits(p.tcp_flags));
	} else if (!(v->seen & PL_CT_SEEN)) {
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	}
	ct_stamp(v, now);
	if (v->nat_family != p.key.family)
		return xdp_xlate_send(ctx, &p, v);
	if (xdp_rewrite(data, data_end, &p, v, check))
		return XDP_DROP;   /* as TC, whose rewrite failed the same way */
	return xdp_send(eth, &p, v);
}

#endif
