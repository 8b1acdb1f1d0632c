/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * QoS policers (loxilb's /config/policy): colour-blind token buckets, trTCM (RFC 2698) or srTCM
 * (RFC 2697). Green and yellow packets pass, red ones are dropped and counted (pol_stats per
 * policer, PL_ST_POLICER_DROP). A policer is attached to an interface (every IP packet entering
 * it, pol_port: checked first thing in lb()) or to an LB rule (every packet of its flows, both
 * directions, on one bucket: pol_svc by the flow's service id, checked where a flow's packet is
 * forwarded). pyloxi extensions: to an endpoint (every packet of the flows a service sent to
 * it, both directions, whatever the rule: pol_ep by the flow's service id and endpoint index)
 * and to a client (every packet of its flows: pol_client by its address). A packet meets each
 * policer that covers it, each takes its tokens, red in any drops it.
 * Sizes are IP bytes (IP header and payload, no Ethernet header), as routers' policers count.
 *
 * One policer's buckets are shared by every CPU: refill and take happen under the bpf_spin_lock
 * in its pol_val (a few arithmetic operations, no helper call inside). Traffic no policer
 * covers costs one array lookup per packet (pol_cfg_map for interfaces; pol_svc for rules and
 * pol_cfg_map for endpoints and clients, per flow packet).
 */
#ifndef PYLOXI_POLICER_H
#define PYLOXI_POLICER_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pyloxi/tables.h"
#include "pyloxi/stats.h"
#include "pyloxi/clock.h"
#include "pyloxi/parse.h"

#define PL_NS 1000000000ULL

/* Tokens earned in `elapsed` ns at `rate` bytes/s; elapsed is clamped to the fill time of the
 * bucket first (the bucket is full by then anyway), which keeps the product below 2^64. */
static __always_inline __u64 pol_earned(__u64 elapsed, __u64 fill_ns, __u64 rate)
{
	if (elapsed > fill_ns)
		elapsed = fill_ns;
	return elapsed * rate / PL_NS;
}

/* 1: red (drop), 0: green or yellow (pass). Not inlined: one copy for both call sites, and
 * its frame is not added to the callers'. */
static __noinline int pol_police(__u32 id, __u32 len, __u64 now)
{
	struct pol_counters *st;
	struct pol_val *b;
	__u64 e, t, room;
	int red = 0;

	if (id == 0 || id >= PL_POL_MAX)
		return 0;
	b = bpf_map_lookup_elem(&pol_map, &id);
	if (!b)
		return 0;
	bpf_spin_lock(&b->lock);
	/* refill: what the time since the last packet earned; a clock that went back earns none */
	e = now > b->last_ns ? now - b->last_ns : 0;
	if (b->last_ns == 0)
		e = ~0ULL;   /* just configured: full */
	if (e) {
		if (b->type == PL_POL_SRTCM) {
			/* one rate: bucket c fills first, its overflow goes to bucket e */
			t = pol_earned(e, b->fill_c_ns, b->rate_c);
			room = b->size_c - b->tok_c;
			if (t <= room) {
				b->tok_c += t;
			} else {
				b->tok_c = b->size_c;
				b->tok_e += t - room;
				if (b->tok_e > b->size_e)
					b->tok_e = b->size_e;
			}
		} else {
			b->tok_c += pol_earned(e, b->fill_c_ns, b->rate_c);
			if (b->tok_c > b->size_c)
				b->tok_c = b->size_c;
			b->tok_e += pol_earned(e, b->fill_e_ns, b->rate_e);
			if (b->tok_e > b->size_e)
				b->tok_e = b->size_e;
		}
		b->last_ns = now;
	}
	/* colour (blind) */
	if (b->type == PL_POL_SRTCM) {
		if (b->tok_c >= len)
			b->tok_c -= len;            /* green */
		else if (b->tok_e >= len)
			b->tok_e -= len;            /* yellow */
		else
			red = 1;
	} else {
		if (b->tok_e < len) {           /* over the peak rate: red */
			red = 1;
		} else {
			b->tok_e -= len;
			if (b->tok_c >= len)
				b->tok_c -= len;    /* green; else yellow (peak taken only) */
		}
	}
	bpf_spin_unlock(&b->lock);
	st = bpf_map_lookup_elem(&pol_stats, &id);
	if (st) {
		if (red) {
			st->drop_packets += 1;
			st->drop_bytes += len;
		} else {
			st->ok_packets += 1;
			st->ok_bytes += len;
		}
	}
	if (red)
		count(PL_ST_POLICER_DROP);
	return red;
}

/* Interface policer: 1 when the packet entering skb->ifindex is red. IP packets only (ARP and
 * other non-IP frames pass: neighbour resolution must survive a port at its rate). */
static __always_inline int pol_port_red(struct __sk_buff *skb)
{
	__u32 zero = 0, ifindex;
	struct pol_cfg *cfg = bpf_map_lookup_elem(&pol_cfg_map, &zero);
	__u32 *id;

	if (!cfg || cfg->nports == 0)
		return 0;
	if (skb->protocol != bpf_htons(0x0800) && skb->protocol != bpf_htons(0x86DD))
		return 0;
	ifindex = skb->ifindex;
	id = bpf_map_lookup_elem(&pol_port, &ifindex);
	return id && skb->len > 14 ? pol_police(*id, skb->len - 14, pl_now()) : 0;
}

/* LB rule policer: 1 when this packet of a flow of service svc_id is red. */
static __always_inline int pol_svc_red(__u32 svc_id, __u32 len, __u64 now)
{
	__u32 *id = bpf_map_lookup_elem(&pol_svc, &svc_id);

	return id && *id ? pol_police(*id, len, now) : 0;
}

/* Every policer of this packet of flow entry v: its rule's, its endpoint's, its client's. Each
 * one met is applied (takes the packet's tokens); 1 when any says red. Not inlined: its frame
 * (the client key) stays off the forwarding path's. */
static __noinline int pol_flow_red(const struct pkt *p, const struct ct_val *v, __u64 now)
{
	struct pol_client_key ck = {};
	struct pol_cfg *cfg;
	__u32 zero = 0, slot, *id;
	int red;

	red = pol_svc_red(v->svc_id, p->l3len, now);
	if (v->svc_id >= PL_MAX_SERVICES)   /* egress SNAT flows: no rule, endpoint or client */
		return red;
	cfg = bpf_map_lookup_elem(&pol_cfg_map, &zero);
	if (!cfg)
		return red;
	if (cfg->neps) {
		slot = v->ep_gid;
		id = bpf_map_lookup_elem(&pol_ep, &slot);
		if (id && *id)
			red |= pol_police(*id, p->l3len, now);
	}
	if (cfg->nclients) {
		/* the client: the original direction's source; a reply goes to it (its rewritten
		 * destination, in the client's family: NAT64 and SNAT modes included) */
		if (v->dir == PL_DIR_REPLY) {
			ck.ip = v->nat_daddr;
			ck.family = v->nat_family;
		} else {
			ck.ip = p->key.saddr;
			ck.family = p->key.family;
		}
		id = bpf_map_lookup_elem(&pol_client, &ck);
		if (id && *id)
			red |= pol_police(*id, p->l3len, now);
	}
	return red;
}

#endif
