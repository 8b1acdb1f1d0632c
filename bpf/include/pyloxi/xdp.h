/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * The XDP fast path: a packet of an established TCP or UDP flow (ct_map) of the same family
 * (no NAT64), not DSR, whose next hop the entry has cached, is tracked, rewritten, counted and
 * redirected here, before an skb exists (native XDP) or before TC runs (generic XDP). Anything
 * else leaves with XDP_PASS untouched, and the TC program (attached in every mode) handles it
 * exactly as without XDP: new flows, half-open flows, SYN/FIN/RST segments and closing flows,
 * ICMP, SCTP, fragments, TTL <= 1, packets longer than the cached MTU, a stale next hop, mirrors
 * and policers. One conntrack table: a flow may move between the two programs at any packet.
 *
 * The shared stages are TC's own: parse_frame, tcp_segment_in and ct_tcp_track, ct_stamp,
 * tuple_diff4/6 and store_tuple4/6, account. Only the L4 checksum is applied differently: TC
 * calls bpf_l4_csum_replace, which knows the skb's checksum state; XDP updates the field in
 * place as that helper does for a complete checksum (csum_apply_diff), so both leave the same
 * bytes. A packet whose checksum field holds a local sender's offload seed (CHECKSUM_PARTIAL:
 * veth carries them) cannot be told from its bytes alone, except that the field then equals
 * the pseudo-header sum: such packets go to TC (a complete checksum equal to it by chance,
 * one in 65536, goes there too, which costs only time).
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
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"

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

/* The fast path; returns an XDP action. */
static __always_inline int xdp_fast(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct xdp_port *port;
	struct tcp_seg s = {};
	struct ct_val *v;
	__u32 *pol, addr_diff, port_diff;
	__u16 *check;
	struct pkt p;   /* on the stack: this path is one call deep */
	__u64 now;
	int mangled0, rc;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	port = xdp_ours(ctx, eth);
	if (!port)
		return XDP_PASS;
	if (parse_frame(data, data_end, data_end - data, &p) != PARSE_OK ||
	    p.frag != PL_FRAG_NONE || p.ttl <= 1)
		return XDP_PASS;
	if (p.key.proto == IPPROTO_TCP) {
		/* SYN (a restart), FIN and RST (window checks, the flow's end): TC's */
		if (p.tcp_flags & (TCPF_SYN | TCPF_FIN | TCPF_RST))
			return XDP_PASS;
	} else if (p.key.proto != IPPROTO_UDP) {
		return XDP_PASS;
	}
	v = bpf_map_lookup_elem(&ct_map, &p.key);
	if (!v || v->mode == PL_MODE_DSR || v->nat_family != p.key.family ||
	    (v->seen & (PL_CT_FIN | PL_CT_RST)))
		return XDP_PASS;
	pol = bpf_map_lookup_elem(&pol_svc, &v->svc_id);
	if (pol && *pol)   /* the rule's policer: TC's (its buckets are spin-locked there) */
		return XDP_PASS;
	now = xdp_now();
	/* The next hop as TC cached it; a stale or missing one, or a packet the cached MTU does
	 * not let through at a glance (TC's exact check needs the skb): TC's. */
	if (!v->fib_ifindex || !pl_fib_fresh(v, now) ||
	    p.len > v->fib_mtu + ETH_HLEN || !xdp_can_redirect(port, v->fib_ifindex))
		return XDP_PASS;
	/* the L4 header, checked before anything is written */
	check = data + ((p.l4off + (p.key.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							       : offsetof(struct udphdr, check))) & 0xff);
	if ((void *)(check + 1) > data_end)
		return XDP_PASS;
	if (p.key.proto == IPPROTO_TCP && tcp_segment_in(data, data_end, &p, &s))
		return XDP_PASS;
	if (csum_looks_partial(&p, *check)) {
		count(PL_ST_XDP_PARTIAL);
		return XDP_PASS;
	}

	/* committed: what ct_established and forward() do, in their order */
	if (p.key.proto == IPPROTO_TCP)
		ct_tcp_track(v, &s, p.tcp_flags, tcp_bits(p.tcp_flags));
	else if (!(v->seen & PL_CT_SEEN))
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	ct_stamp(v, now);

	mangled0 = p.key.proto == IPPROTO_UDP;
	if (p.key.family == PL_AF_INET) {
		tuple_diff4(&p, addr_v4(&v->nat_saddr), addr_v4(&v->nat_daddr), v->nat_sport,
			    v->nat_dport, &addr_diff, &port_diff);
		/* as TC's two helper calls: the addresses, then the ports */
		if (addr_diff)
			csum_apply_diff(check, addr_diff, mangled0);
		if (port_diff)
			csum_apply_diff(check, port_diff, mangled0);
		rc = store_tuple4(data, data_end, &p, addr_diff, addr_v4(&v->nat_saddr),
				  addr_v4(&v->nat_daddr), v->nat_sport, v->nat_dport);
	} else {
		tuple_diff6(&p, v, &addr_diff, &port_diff);
		if (addr_diff)
			csum_apply_diff(check, addr_diff, mangled0);
		if (port_diff)
			csum_apply_diff(check, port_diff, mangled0);
		rc = store_tuple6(data, data_end, &p, v);
	}
	if (rc)
		return XDP_DROP;   /* as TC, whose rewrite failed the same way */
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p.len);
	account(v, p.len);
	count(PL_ST_XDP_FWD);
	__builtin_memcpy(eth->h_dest, v->fib_dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, v->fib_smac, ETH_ALEN);
	return bpf_redirect(v->fib_ifindex, 0);
}

#endif
