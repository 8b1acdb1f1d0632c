/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Endpoint selection for a new flow, all from one version of its service: the version's slot
 * table (n_slots entries in slot_pool, built by the control plane for rr, hash (Maglev sized to
 * the endpoints), priority and persist) names an endpoint index per slot; least connections scans one slot per active
 * endpoint. Persist keeps a client on its endpoint while it stays active (aff_map).
 */
#ifndef PYLOXI_SELECT_H
#define PYLOXI_SELECT_H

#include "pyloxi/clock.h"
#include "pyloxi/parse.h"
#include "pyloxi/service.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"

#define PL_NO_ENDPOINT (-1)   /* no slot or endpoint could be chosen */

static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 hash_tuple(const struct ct_key *k)
{
	__u32 ports = ((__u32)k->sport << 16) | k->dport;
	return mix32(addr_fold(&k->saddr) ^ mix32(addr_fold(&k->daddr) ^ mix32(ports ^ k->proto)));
}

/* Least connections: the slot whose endpoint has the fewest active flows. The scan (up to
 * PL_MAX_EPS slots) runs in bpf_loop, so the verifier checks its body once. */
struct lc_scan {
	struct svc_cfg cfg;   /* a copy: the callback reads the version's pools through it */
	__u64 best;
	__u32 start;
	__u32 m;
	int best_slot;
};

static long lc_step(__u32 j, void *data)
{
	struct lc_scan *s = data;
	__u32 i = s->start + j < s->m ? s->start + j : s->start + j - s->m;
	int idx = svc_slot(&s->cfg, i);
	struct ep_val *ep = idx < 0 ? NULL : svc_ep(&s->cfg, idx);

	if (!ep)
		return 0;
	__u64 active = conn_active(ep->gid);
	if (active < s->best) {
		s->best = active;
		s->best_slot = i;
	}
	return 0;
}

__noinline int pl_select_lc(__u32 n, const struct svc_cfg *cfg)
{
	struct lc_scan s = { .best = ~0ULL, .best_slot = PL_NO_ENDPOINT };

	if (!cfg || n == 0)
		return PL_NO_ENDPOINT;
	s.cfg = *cfg;
	/* Only established flows are counted (half-open ones may vanish by LRU eviction without
	 * a trace): start the scan at a random slot so that a burst of new flows meeting equal
	 * counts is spread, not sent to the first endpoint. */
	s.m = n < PL_MAX_EPS ? n : PL_MAX_EPS;   /* lc slots: one per active endpoint */
	s.start = bpf_get_prandom_u32() % s.m;
	bpf_loop(s.m, lc_step, &s, 0);
	int best_slot = s.best_slot;
	/* Hide the range from clang: knowing it, clang drops the caller's bounds check on the
	 * slot, which the verifier (blind to a global function's result) needs. */
	asm volatile("" : "+r"(best_slot));
	return best_slot;
}

static __always_inline int select_slot(const struct pkt *p, __u32 svc_id,
				       const struct svc_ver *v)
{
	__u32 n = v->cfg.n_slots;

	if (n == 0 || n > PL_MAX_SLOTS)
		return PL_NO_ENDPOINT;
	switch (v->cfg.sel) {
	case PL_SEL_RR:
	case PL_SEL_PRIO: {
		__u64 *cursor = bpf_map_lookup_elem(&rr_map, &svc_id);
		if (!cursor)
			return PL_NO_ENDPOINT;
		return __sync_fetch_and_add(cursor, 1) % n;
	}
	case PL_SEL_HASH:
		return hash_tuple(&p->key) % n;
	case PL_SEL_PERSIST:
		return mix32(addr_fold(&p->key.saddr) ^ 0x9e3779b9) % n;
	case PL_SEL_LC:
		return pl_select_lc(n, &v->cfg);
	}
	return PL_NO_ENDPOINT;
}

/* The endpoint index for a new flow, or PL_NO_ENDPOINT; all from version `v` of the service. */
static __always_inline int select_endpoint(const struct pkt *p, __u32 svc_id,
					   const struct svc_ver *v, __u64 now)
{
	struct aff_key ak = { .svc_id = svc_id, .saddr = p->key.saddr };
	int slot;

	if (v->cfg.sel == PL_SEL_PERSIST) {
		struct aff_val *av = bpf_map_lookup_elem(&aff_map, &ak);
		/* Signed: a stamp a moment ahead of `now` (another CPU) is fresh, not 2^64 old. */
		if (av && (__s64)(now - av->last_ns) < (__s64)(v->cfg.persist_timeout * NSEC_PER_SEC)) {
			__u32 aidx = av->ep_idx & (PL_MAX_EPS - 1);
			struct ep_val *aep = svc_ep(&v->cfg, aidx);
			if (aep && (aep->flags & PL_EP_F_ACTIVE)) {
				av->last_ns = now;
				return aidx;
			}
		}
	}
	slot = select_slot(p, svc_id, v);
	if (slot < 0)
		return PL_NO_ENDPOINT;
	int idx = svc_slot(&v->cfg, slot);
	if (idx < 0)
		return PL_NO_ENDPOINT;
	if (v->cfg.sel == PL_SEL_PERSIST) {
		struct aff_val nv = { .last_ns = now, .ep_idx = idx };
		bpf_map_update_elem(&aff_map, &ak, &nv, BPF_ANY);
	}
	return idx;
}

#endif
