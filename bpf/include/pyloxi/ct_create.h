/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * A new flow's two conntrack entries. They go to ct_half until the flow is established
 * (conntrack.h), the reply entry first, on a reply tuple that is free in both tables: with a
 * translated source that takes a free NAT source port.
 */
#ifndef PYLOXI_CT_CREATE_H
#define PYLOXI_CT_CREATE_H

#include "pyloxi/clock.h"
#include "pyloxi/conntrack.h"
#include "pyloxi/ct.h"
#include "pyloxi/ctsync.h"
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"
#include "pyloxi/verdict.h"

/* The per-CPU scratch of packet p's new flow to endpoint ep, its two entries cleared and
 * their rewrites filled in (nat_flow); NULL if the scratch is missing. */
static __always_inline struct flow_scratch *flow_nat(const struct pkt *p, const struct ep_val *ep,
						     const struct svc_cfg *cfg)
{
	__u32 zero = 0;
	struct flow_scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);

	if (!sc)
		return NULL;
	__builtin_memset(&sc->fwd, 0, sizeof(sc->fwd));
	__builtin_memset(&sc->rev, 0, sizeof(sc->rev));
	nat_flow(&sc->fwd, &sc->rev, p, ep, cfg);
	return sc;
}

/* Free the tuple sc->rk of table ct_half (half) or ct_map for a new flow, if its flow has
 * finished, or if it is an orphan (its partner gone) older than PL_RECLAIM_MIN_NS: a younger
 * orphan may be the first half of a flow another CPU is inserting right now. Returns 0 when the
 * tuple is free, else -1. */
__noinline int pl_reclaim(struct flow_scratch *sc, int half)
{
	struct ct_val *old, *orig;
	struct ct_key *rk, *ok;
	__u8 proto;

	if (!sc)
		return -1;
	rk = &sc->rk;
	ok = &sc->ok;
	proto = rk->proto;
	old = half ? bpf_map_lookup_elem(&ct_half, rk) : bpf_map_lookup_elem(&ct_map, rk);
	if (!old)
		return 0;
	/* A DSR entry (only ever in ct_half) has no partner by design (dsr.h): it is no orphan,
	 * it is taken over only once its TCP flow is closed. */
	if (old->mode == PL_MODE_DSR) {
		if (proto != IPPROTO_TCP || !(old->seen & (PL_CT_FIN | PL_CT_RST)))
			return -1;
		bpf_map_delete_elem(&ct_half, rk);
		count(PL_ST_RECLAIM);
		return 0;
	}
	partner_key(old, proto, ok);
	orig = half ? bpf_map_lookup_elem(&ct_half, ok) : bpf_map_lookup_elem(&ct_map, ok);
	if (orig) {
		if (!(proto == IPPROTO_TCP && tcp_closed(old->seen, orig->seen)) &&
		    !(proto == IPPROTO_SCTP && sctp_closed(old->seen, orig->seen)))
			return -1;
		if (half)
			ct_half_delete_flow_in(ok, orig, &sc->dk);
		else
			ct_delete_flow_in(ok, orig, &sc->dk);
	} else {
		/* A young orphan in ct_half may be a flow another CPU is creating (ct_create
		 * inserts the reply entry first): leave it. ct_map never has that state (promotion
		 * inserts the original direction first, deletes remove the reply first), so an
		 * orphan there lost its other half for good: take it over at once, or the client
		 * reusing its port would be refused. Written as a sum: no unsigned underflow after
		 * boot. */
		if (half && old->created_ns + PL_RECLAIM_MIN_NS > pl_now())
			return -1;
		if (half)
			bpf_map_delete_elem(&ct_half, rk);
		else
			ct_delete_flow_in(rk, old, &sc->dk);
	}
	count(PL_ST_RECLAIM);
	return 0;
}

/* ct_create's `snat`: how the translated source port is chosen */
#define PL_SNAT_NONE  0   /* the source is not translated: the client's port */
#define PL_SNAT_ALLOC 1   /* a free NAT port (the client's own first, if in range and free) */
#define PL_SNAT_FIXED 2   /* exactly sc->fwd.nat_sport (egress toPort): one try */

/* Insert the reply entry sc->rev into ct_half, choosing a free NAT source port when the source
 * is translated (in sc->fwd's rewrite). The reply tuple must be free in both tables: ct_map is
 * looked up first, so a taken tuple there would steal the new flow's replies. Returns 0 when
 * inserted (its key in sc->rk), else -1. */
__noinline int pl_insert_reply(struct flow_scratch *sc, const struct ct_key *key, int snat)
{
	struct ct_val *fv;
	__u16 sport;
	__u32 tries = snat == PL_SNAT_ALLOC ? PL_NAT_TRIES : 1;
	__u8 proto;

	if (!sc || !key)
		return -1;
	fv = &sc->fwd;
	sport = snat == PL_SNAT_FIXED ? fv->nat_sport : key->sport;
	proto = key->proto;
	__u32 lo = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_MIN : PL_NAT_PORT_MIN;
	__u32 span = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_SPAN : PL_NAT_PORT_SPAN;
	__u32 zero = 0;
	struct nat_share *share = bpf_map_lookup_elem(&nat_share_map, &zero);
	if (share && share->count > 1 && share->index < share->count) {
		span /= share->count;   /* active-active: this node's own part of the range */
		lo += share->index * span;
	}
	for (__u32 i = 0; i < PL_NAT_TRIES; i++) {
		if (i >= tries)
			break;
		/* The client's own port first (free unless another client took it: a flow picked
		 * up again by hash then gets its old tuple back) if it is in this node's range,
		 * then random candidates, fresh for every attempt, so a retransmitted SYN does not
		 * retry the same taken ports. */
		__u16 cand = sport;
		if (snat == PL_SNAT_ALLOC &&
		    (i > 0 || bpf_ntohs(sport) < lo || bpf_ntohs(sport) >= lo + span))
			cand = bpf_htons(lo + bpf_get_prandom_u32() % span);
		fv->nat_sport = cand;
		partner_key(fv, proto, &sc->rk);
		if (pl_reclaim(sc, 0) || pl_reclaim(sc, 1))
			continue;
		if (bpf_map_update_elem(&ct_half, &sc->rk, &sc->rev, BPF_NOEXIST) == 0)
			return 0;
	}
	return -1;
}

/*
 * Create the flow of packet `p` from the two entries in `sc`, whose rewrites are set (nat.h):
 * their bookkeeping, TCP state, then the reply entry (on a free tuple; `snat`: PL_SNAT_*, how
 * the translated source's port is chosen) and the original-direction entry. Returns PL_CONTINUE
 * with *vp the entry of `p` (the flow's, or another CPU's that created it first), PL_PASS when
 * there is no free tuple (the VIP is local: the client gets a RST or port-unreachable, not
 * silence) or PL_DROP. TC's and XDP's (ctx, xdp: see tcp_segment).
 */
static __always_inline enum pl_verdict ct_create(void *ctx, int xdp, const struct pkt *p,
						 struct flow_scratch *sc, __u32 svc_id,
						 __u32 ep_idx, __u32 gid, __u8 mode, int snat,
						 int pickup,
						 __u64 now, struct ct_val **vp)
{
	struct ct_val *fv = &sc->fwd, *rv = &sc->rev;

	fv->svc_id = rv->svc_id = svc_id;
	fv->ep_idx = rv->ep_idx = ep_idx;
	fv->ep_gid = rv->ep_gid = gid;
	fv->dir = PL_DIR_ORIG;
	rv->dir = PL_DIR_REPLY;
	fv->mode = rv->mode = mode;
	fv->created_ns = fv->last_ns = rv->created_ns = rv->last_ns = now;
	fv->seen = p->key.proto == IPPROTO_TCP ? tcp_bits(p->tcp_flags)
		 : p->key.proto == IPPROTO_SCTP ? sctp_bits(p->sctp_chunk) : PL_CT_SEEN;
	if (pickup) {
		/* the window is unknown: judge no RST/FIN of this flow (as Linux's "be liberal") */
		fv->td_flags = rv->td_flags = PL_TD_LIBERAL;
		fv->td_wsopt = rv->td_wsopt = PL_TD_NO_WS;
	} else if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		if (tcp_segment(ctx, xdp, p, &s))
			return PL_DROP;
		td_update(fv, &s, p->tcp_flags);
		fv->td_wsopt = tcp_wsopt(ctx, xdp, p->l4off, s.doff);
		rv->td_wsopt = PL_TD_NO_WS;
	}

	if (pl_insert_reply(sc, &p->key, snat)) {
		count(PL_ST_NAT_EXHAUSTED);
		return PL_PASS;
	}
	if (bpf_map_update_elem(&ct_half, &p->key, fv, BPF_NOEXIST)) {
		/* Another CPU created this flow first: undo our reply entry and use theirs. */
		bpf_map_delete_elem(&ct_half, &sc->rk);
		*vp = bpf_map_lookup_elem(&ct_half, &p->key);
		if (!*vp) {
			count(PL_ST_CT_INSERT_FAIL);
			return PL_DROP;
		}
		return PL_CONTINUE;
	}

	if (pickup)
		count(PL_ST_PICKUP);
	svc_count_new(svc_id);
	count(PL_ST_NEW_FLOW);
	/* to the peers, so one taking over mid-handshake knows the flow (DSR flows do not come
	 * here: forward-only, dsr.h, they are not synced) */
	sync_emit_new(&p->key, sc);
	*vp = bpf_map_lookup_elem(&ct_half, &p->key);
	return *vp ? PL_CONTINUE : PL_DROP;
}

#endif
