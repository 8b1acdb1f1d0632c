// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * pyloxi datapath: TC clsact ingress on every LB-facing interface.
 *
 *   parse -> conntrack hit?  yes: account, rewrite, route, redirect            (fast path)
 *                            no:  service lookup -> allowed sources -> select endpoint
 *                                 -> NAT port allocation -> two conntrack entries
 *                                 -> rewrite, route, redirect                  (new flow)
 * Anything that is not ours (not IPv4, no flow, no service) goes to the kernel untouched.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pyloxi/maps.h"
#include "pyloxi/tables.h"
#include "pyloxi/parse.h"
#include "pyloxi/nat.h"
#include "pyloxi/fwd.h"
#include "pyloxi/ct.h"
#include "pyloxi/icmp.h"
#include "pyloxi/frag.h"

#define NSEC_PER_SEC 1000000000ULL
/* Time stamps only need second resolution (idle aging, the next-hop cache): the coarse clock
 * (CLOCK_MONOTONIC at tick resolution) costs a third of bpf_ktime_get_ns. */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void count(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&stats_map, &reason);
	if (v)
		*v += 1;
}

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
	return mix32(k->saddr ^ mix32(k->daddr ^ mix32(ports ^ k->proto)));
}

static __always_inline void conn_closed(__u32 svc_id, __u32 ep_idx)
{
	__u32 gid = svc_id * PL_MAX_EPS + (ep_idx & (PL_MAX_EPS - 1));
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->closed, 1);
}

/* Delete an established flow (both entries) that the datapath itself ends. The close is counted
 * by whoever deletes the original-direction entry, so two CPUs ending the same flow (each from
 * its own direction) count it exactly once. */
static __always_inline void ct_delete_flow(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk;
	__u32 svc_id = v->svc_id, ep_idx = v->ep_idx;
	int orig = v->dir == PL_DIR_ORIG;

	partner_key(v, key->proto, &pk);
	bpf_map_delete_elem(&ct_map, orig ? &pk : key);
	if (bpf_map_delete_elem(&ct_map, orig ? key : &pk) == 0)
		conn_closed(svc_id, ep_idx);
}

/* Half-open flows are not counted in conn_map (they may vanish by LRU eviction): deleting them
 * needs no bookkeeping. */
static __always_inline void ct_half_delete_flow(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk;

	partner_key(v, key->proto, &pk);
	bpf_map_delete_elem(&ct_half, &pk);
	bpf_map_delete_elem(&ct_half, key);
}

static __always_inline void account(const struct ct_val *v, __u32 len)
{
	__u32 gid = v->svc_id * PL_MAX_EPS + (v->ep_idx & (PL_MAX_EPS - 1));
	struct counters *c = bpf_map_lookup_elem(&ep_stats, &gid);
	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

static __always_inline int apply(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v,
				 __u64 now)
{
	struct hop hop = {};
	int nh, rc;

	/* What a router does with a packet it cannot forward, before touching it: the answer
	 * quotes the header its sender sent. */
	if (p->ttl <= 1)
		return icmp_answer(skb, p, v, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0);
	nh = next_hop(skb, p, v, now, &hop);
	if (nh == NH_TOO_BIG) {
		if (ip_df(skb))
			return icmp_answer(skb, p, v, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, hop.mtu);
		/* may be fragmented: the kernel does that (where it forwards the rewritten packet) */
		count(PL_ST_MTU_PASS);
		nh = NH_PASS;
	}
	rc = rewrite_tuple(skb, p, v->nat_saddr, v->nat_daddr, v->nat_sport, v->nat_dport);
	if (rc)
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
	account(v, p->len);
	if (nh == NH_PASS)
		count(PL_ST_FIB_PASS);
	return transmit(skb, v, nh, &hop);
}

#define CT_RESTART (-1000)   /* the packet starts a new flow on this tuple */
#define CT_DROP    (-1001)   /* the packet must not act on the flow: drop it */

#ifndef EEXIST
#define EEXIST 17
#endif

/* TCP bookkeeping common to both tables: a SYN on a finished tuple, window checks of RST and
 * FIN, flag bits, window tracking. Returns 0, CT_RESTART or CT_DROP. *pvp: the partner entry
 * if the caller has it already (else NULL), on return also if it had to be looked up here.
 * `half`: v lives in ct_half (else ct_map). */
static __always_inline int ct_tcp(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v,
				  int half, struct tcp_seg *s, struct ct_val **pvp)
{
	__u32 bits = tcp_bits(p->tcp_flags);
	struct ct_val *pv = *pvp;
	struct ct_key pk;

	if (tcp_segment(skb, p, s))
		return CT_DROP;
	if (!pv && ((bits == PL_CT_SYN && v->dir == PL_DIR_ORIG) || (bits & (PL_CT_RST | PL_CT_FIN)))) {
		partner_key(v, p->key.proto, &pk);
		pv = half ? bpf_map_lookup_elem(&ct_half, &pk) : bpf_map_lookup_elem(&ct_map, &pk);
	}
	if (bits == PL_CT_SYN && v->dir == PL_DIR_ORIG) {
		/* A SYN on the tuple of a closed or closing flow (clients reuse ports quickly
		 * under Connection: close) is a new connection, not a retransmission: no SYN
		 * follows a FIN or RST within one connection. Only in-window RSTs and FINs set
		 * those bits, so a blind reset cannot move a flow to another endpoint this way. */
		if (!pv || ((v->seen | pv->seen) & (PL_CT_FIN | PL_CT_RST))) {
			if (half)
				ct_half_delete_flow(&p->key, v);
			else
				ct_delete_flow(&p->key, v);
			count(PL_ST_REUSE);
			return CT_RESTART;
		}
	}
	if ((bits & (PL_CT_RST | PL_CT_FIN)) && pv && !td_in_window(v, pv, s, p->tcp_flags)) {
		count(PL_ST_OUT_OF_WINDOW);
		return CT_DROP;
	}
	if (p->tcp_flags & TCPF_SYN) {   /* SYN or SYN-ACK: its window-scale option */
		__u8 ws = tcp_wsopt(skb, p->l4off, s->doff);
		if (v->td_wsopt != ws)
			v->td_wsopt = ws;
	}
	td_update(v, s, p->tcp_flags);
	if ((v->seen & bits) != bits)
		__sync_fetch_and_or(&v->seen, bits);
	*pvp = pv;
	return 0;
}

/* Established path: one lookup, a few flag bits, rewrite, forward. */
static __always_inline int ct_hit(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		struct ct_val *pv = NULL;
		int rc = ct_tcp(skb, p, v, 0, &s, &pv);
		if (rc == CT_DROP)
			return TC_ACT_SHOT;
		if (rc)
			return rc;
	} else if (!(v->seen & PL_CT_SEEN)) {
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	}
	/* Signed: another CPU may have stamped it with a clock read just after ours. */
	if ((__s64)(now - v->last_ns) > (__s64)NSEC_PER_SEC)
		v->last_ns = now;
	return apply(skb, p, v, now);
}

/* Move a flow from ct_half into ct_map: insert both entries there first, then delete them
 * from ct_half, so a packet of either direction always finds one of the two. Returns 0 when
 * the flow is in ct_map (by us or by another CPU), 1 when ct_map refused it (full), -1 when
 * there is nothing to promote. The flow is counted in conn_map here, not at creation: an LRU
 * eviction of a half-open flow then leaves no phantom connection behind. */
__noinline int pl_promote(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk, ok, rk;
	struct flow_scratch *sc;
	struct ct_val *pv;
	__u32 zero = 0;
	int rc;

	if (!key || !v)
		return -1;
	sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return -1;
	partner_key(v, key->proto, &pk);
	pv = bpf_map_lookup_elem(&ct_half, &pk);
	if (!pv)
		return -1;
	if (v->dir == PL_DIR_ORIG) {
		sc->fwd = *v;
		sc->rev = *pv;
		ok = *key;
		rk = pk;
	} else {
		sc->fwd = *pv;
		sc->rev = *v;
		ok = pk;
		rk = *key;
	}
	rc = bpf_map_update_elem(&ct_map, &ok, &sc->fwd, BPF_NOEXIST);
	if (rc == -EEXIST)
		return 0;   /* another CPU promoted it a moment ago */
	if (rc) {
		count(PL_ST_CT_FULL);
		return 1;
	}
	rc = bpf_map_update_elem(&ct_map, &rk, &sc->rev, BPF_NOEXIST);
	if (rc) {
		bpf_map_delete_elem(&ct_map, &ok);
		count(rc == -EEXIST ? PL_ST_CT_INSERT_FAIL : PL_ST_CT_FULL);
		return 1;
	}
	__u32 gid = sc->fwd.svc_id * PL_MAX_EPS + (sc->fwd.ep_idx & (PL_MAX_EPS - 1));
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->opened, 1);
	count(PL_ST_PROMOTE);
	bpf_map_delete_elem(&ct_half, &rk);
	bpf_map_delete_elem(&ct_half, &ok);
	return 0;
}

/* Half-open path (second lookup): handshake progress, and promotion when the flow is
 * established: TCP when the client acknowledges the SYN-ACK, other protocols at the first
 * reply. */
static __always_inline int ct_half_hit(struct __sk_buff *skb, const struct pkt *p,
				       struct ct_val *v)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	int promote;

	if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		struct ct_val *pv = NULL;
		struct ct_key pk;
		int ack = v->dir == PL_DIR_ORIG &&
			  (p->tcp_flags & (TCPF_ACK | TCPF_SYN | TCPF_RST)) == TCPF_ACK;
		if (ack) {
			partner_key(v, p->key.proto, &pk);
			pv = bpf_map_lookup_elem(&ct_half, &pk);
			/* both SYNs seen: from this ACK on, windows are scaled */
			if (pv && (pv->seen & PL_CT_SYNACK))
				td_resolve_wscale(v, pv);
		}
		int rc = ct_tcp(skb, p, v, 1, &s, &pv);
		if (rc == CT_DROP)
			return TC_ACT_SHOT;
		if (rc)
			return rc;
		/* the ACK must acknowledge the SYN-ACK: a blind ACK cannot establish. A flow
		 * picked up mid-stream is established by the endpoint's first answer that is
		 * not a reset (it knows the connection). */
		promote = ack ? pv && (pv->seen & PL_CT_SYNACK) && s.ack == pv->td_end
			      : v->dir == PL_DIR_REPLY && (v->td_flags & PL_TD_LIBERAL) &&
				!(p->tcp_flags & (TCPF_RST | TCPF_SYN));
	} else {
		if (!(v->seen & PL_CT_SEEN))
			__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
		promote = v->dir == PL_DIR_REPLY;
	}
	if (now - v->last_ns > NSEC_PER_SEC)
		v->last_ns = now;
	if (promote) {
		int rc = pl_promote(&p->key, v);
		if (rc == 0) {
			struct ct_val *ev = bpf_map_lookup_elem(&ct_map, &p->key);
			return ev ? apply(skb, p, ev, now) : TC_ACT_SHOT;
		}
		/* Established table full: a TCP handshake is refused, the kernel answers the
		 * client's ACK to the (local) VIP with a RST; the half-open entries stay for the
		 * backend's retransmitted SYN-ACK, which then meets the client's RST. A flow
		 * promoted by a reply (other protocols, TCP picked up mid-stream) goes on from
		 * ct_half, where it is evictable: handing an endpoint's packet to the kernel
		 * would forward it un-NATed. */
		if (rc > 0 && v->dir == PL_DIR_ORIG)
			return TC_ACT_OK;
	}
	return apply(skb, p, v, now);
}

/* A packet that missed both tables and comes from an endpoint's ip:port is the reply of a lost
 * flow (evicted, aged, or never ours): forwarded by the kernel it would reach the client with
 * the endpoint's own address. Dropped, unless the kernel would not forward it anyway (a health
 * probe's answer to this host, a reply to a local SNAT address). */
__noinline int pl_reply_miss(struct __sk_buff *skb, const struct ct_key *k, __u32 icmp_type)
{
	struct bpf_fib_lookup fib = {};
	struct ep_addr_key ek = {};

	if (!skb || !k)
		return 0;
	ek.ip = k->saddr;
	ek.port = k->sport;
	ek.proto = k->proto;
	if (k->proto == IPPROTO_ICMP) {
		if (icmp_type != ICMP_ECHOREPLY)
			return 0;
		ek.port = 0;
	}
	if (!bpf_map_lookup_elem(&ep_addr_map, &ek))
		return 0;
	fib.family = AF_INET;
	fib.ipv4_src = k->saddr;
	fib.ipv4_dst = k->daddr;
	fib.l4_protocol = k->proto;
	fib.ifindex = skb->ingress_ifindex;
	switch (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH)) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		count(PL_ST_REPLY_MISS);
		return 1;
	}
	return 0;
}

/* The live version of a service (see struct svc_ver in maps.h). The generation word is read
 * once: everything this packet then reads comes from that one version, which the control
 * plane leaves untouched until a grace period after it stops being live. */
static __always_inline struct svc_ver *svc_version(__u32 svc_id, __u32 *ver_id)
{
	__u32 *g = bpf_map_lookup_elem(&gen_map, &svc_id);

	if (!g)
		return NULL;
	*ver_id = svc_id * 2 + (*(volatile __u32 *)g & 1);
	return bpf_map_lookup_elem(&ver_map, ver_id);
}

/* Least connections: the slot whose endpoint has the fewest active flows. A global function,
 * so the verifier checks the scan once instead of in every caller's state. */
__noinline int pl_select_lc(__u32 svc_id, __u32 n, const struct svc_ver *v)
{
	__u64 best = ~0ULL;
	int best_slot = -1;

	if (!v || n == 0)
		return -1;
	/* Only established flows are counted (half-open ones may vanish by LRU eviction without
	 * a trace): start the scan at a random slot so that a burst of new flows meeting equal
	 * counts is spread, not sent to the first endpoint. */
	__u32 m = n < PL_MAX_EPS ? n : PL_MAX_EPS;   /* lc slots: one per active endpoint */
	__u32 start = bpf_get_prandom_u32() % m;
	for (__u32 j = 0; j < PL_MAX_EPS; j++) {
		if (j >= m)
			break;
		__u32 i = (start + j < m ? start + j : start + j - m) & (PL_MAX_EPS - 1);
		__u32 gid = svc_id * PL_MAX_EPS + (v->slot[i] & (PL_MAX_EPS - 1));
		struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
		__u64 active = c ? c->opened - c->closed : 0;
		if (active < best) {
			best = active;
			best_slot = i;
		}
	}
	/* Hide the range from clang: knowing it, clang drops the caller's bounds check on the
	 * slot, which the verifier (blind to a global function's result) needs. */
	asm volatile("" : "+r"(best_slot));
	return best_slot;
}

static __always_inline int select_slot(const struct pkt *p, __u32 svc_id,
				       const struct svc_ver *v)
{
	__u32 n = v->cfg.n_slots;

	if (n == 0 || n > PL_SLOTS)
		return -1;
	switch (v->cfg.sel) {
	case PL_SEL_RR:
	case PL_SEL_PRIO: {
		__u64 *cursor = bpf_map_lookup_elem(&rr_map, &svc_id);
		if (!cursor)
			return -1;
		return __sync_fetch_and_add(cursor, 1) % n;
	}
	case PL_SEL_HASH:
		return hash_tuple(&p->key) % n;
	case PL_SEL_PERSIST:
		return mix32(p->key.saddr ^ 0x9e3779b9) % n;
	case PL_SEL_LC:
		return pl_select_lc(svc_id, n, v);
	}
	return -1;
}

/* The endpoint index for a new flow, or -1; all from version `v` of the service. */
static __always_inline int select_endpoint(const struct pkt *p, __u32 svc_id,
					   const struct svc_ver *v, __u64 now)
{
	struct aff_key ak = { .svc_id = svc_id, .saddr = p->key.saddr };
	int slot;

	if (v->cfg.sel == PL_SEL_PERSIST) {
		struct aff_val *av = bpf_map_lookup_elem(&aff_map, &ak);
		/* Signed: a stamp a moment ahead of `now` (another CPU) is fresh, not 2^64 old. */
		if (av && (__s64)(now - av->last_ns) < (__s64)(v->cfg.persist_timeout * NSEC_PER_SEC) &&
		    (v->ep[av->ep_idx & (PL_MAX_EPS - 1)].flags & PL_EP_F_ACTIVE)) {
			av->last_ns = now;
			return av->ep_idx & (PL_MAX_EPS - 1);
		}
	}
	slot = select_slot(p, svc_id, v);
	if (slot < 0 || slot >= PL_SLOTS_ALLOC)
		return -1;
	int idx = v->slot[slot];
	if (v->cfg.sel == PL_SEL_PERSIST) {
		struct aff_val nv = { .last_ns = now, .ep_idx = idx };
		bpf_map_update_elem(&aff_map, &ak, &nv, BPF_ANY);
	}
	return idx;
}

/* Free the tuple `rk` of table ct_half (half) or ct_map for a new flow, if its flow has finished,
 * or if it is an orphan (its partner gone) older than PL_RECLAIM_MIN_NS: a younger orphan may be
 * the first half of a flow another CPU is inserting right now. Returns 0 when the tuple is free. */
__noinline int pl_reclaim(const struct ct_key *rk, int half)
{
	struct ct_val *old, *orig;
	struct ct_key ok;
	__u8 proto;

	if (!rk)
		return -1;
	proto = rk->proto;
	old = half ? bpf_map_lookup_elem(&ct_half, rk) : bpf_map_lookup_elem(&ct_map, rk);
	if (!old)
		return 0;
	partner_key(old, proto, &ok);
	orig = half ? bpf_map_lookup_elem(&ct_half, &ok) : bpf_map_lookup_elem(&ct_map, &ok);
	if (orig) {
		if (!(proto == IPPROTO_TCP && tcp_closed(old->seen, orig->seen)))
			return -1;
		if (half)
			ct_half_delete_flow(&ok, orig);
		else
			ct_delete_flow(&ok, orig);
	} else {
		/* A young orphan in ct_half may be a flow another CPU is creating (new_flow inserts
		 * the reply entry first): leave it. ct_map never has that state (promotion inserts
		 * the original direction first, deletes remove the reply first), so an orphan there
		 * lost its other half for good: take it over at once, or the client reusing its
		 * port would be refused. Written as a sum: no unsigned underflow after boot. */
		if (half && old->created_ns + PL_RECLAIM_MIN_NS > bpf_ktime_get_coarse_ns())
			return -1;
		if (half)
			bpf_map_delete_elem(&ct_half, rk);
		else
			ct_delete_flow(rk, old);
	}
	count(PL_ST_RECLAIM);
	return 0;
}

/* Insert the reply entry into ct_half, choosing a free NAT source port when the source is
 * translated. The reply tuple must be free in both tables: ct_map is looked up first, so a taken
 * tuple there would steal the new flow's replies. */
__noinline int pl_insert_reply(struct ct_val *fv, const struct ct_val *rv, const struct ct_key *key,
			       int snat)
{
	struct ct_key rk;
	__u16 sport;
	__u32 tries = snat ? PL_NAT_TRIES : 1;
	__u8 proto;

	if (!fv || !rv || !key)
		return -1;
	sport = key->sport;
	proto = key->proto;
	__u32 lo = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_MIN : PL_NAT_PORT_MIN;
	__u32 span = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_SPAN : PL_NAT_PORT_SPAN;
	/* SCTP keeps its port: a new port would mean recomputing the CRC32c of the packet */
	if (proto == IPPROTO_SCTP)
		tries = 1;
	for (__u32 i = 0; i < PL_NAT_TRIES; i++) {
		if (i >= tries)
			break;
		/* The client's own port first (free unless another client took it: a flow picked
		 * up again by hash then gets its old tuple back), then random candidates, fresh for
		 * every attempt, so a retransmitted SYN does not retry the same taken ports. */
		__u16 cand = sport;
		if (snat && proto != IPPROTO_SCTP && (i > 0 || bpf_ntohs(sport) < lo))
			cand = bpf_htons(lo + bpf_get_prandom_u32() % span);
		fv->nat_sport = cand;
		partner_key(fv, proto, &rk);
		if (pl_reclaim(&rk, 0) || pl_reclaim(&rk, 1))
			continue;
		if (bpf_map_update_elem(&ct_half, &rk, rv, BPF_NOEXIST) == 0)
			return 0;
	}
	return -1;
}

static __noinline int new_flow(struct __sk_buff *skb, const struct pkt *p)
{
	struct svc_key sk = { .vip = p->key.daddr, .port = p->key.dport, .proto = p->key.proto };
	struct svc_val *sv;
	struct svc_ver *ver;
	struct svc_cfg *cfg;
	struct ep_val *ep;
	__u32 svc_id, ver_id;
	__u64 now;
	int idx;

	if (p->key.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return TC_ACT_OK;
	sv = bpf_map_lookup_elem(&svc_map, &sk);
	if (!sv)
		return TC_ACT_OK;
	svc_id = sv->svc_id;
	ver = svc_version(svc_id, &ver_id);
	if (!ver)
		return TC_ACT_OK;
	cfg = &ver->cfg;
	if (cfg->flags & PL_SVC_F_ALLOWLIST) {
		struct allow_key ak = { .prefixlen = 64, .ver_id = ver_id, .addr = p->key.saddr };
		if (!bpf_map_lookup_elem(&allow_map, &ak)) {
			count(PL_ST_DROP_SOURCE);
			return TC_ACT_SHOT;
		}
	}
	if (p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST))
		return TC_ACT_OK;   /* never open a flow on a reset */
	/* A router between client and endpoints would not forward it: answer from the VIP
	 * before any state exists (the kernel, for which the VIP is local, would accept it). */
	if (p->ttl <= 1)
		return pl_icmp_reply(skb, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0, p->key.daddr);
	/* Mid-stream TCP (its flow lost): hash selection finds the same endpoint again through the
	 * Maglev table (as Katran does), so the flow is picked up; any other selection would pick
	 * an endpoint that never saw the connection: the kernel refuses the packet to the local
	 * VIP with a RST, and the client reconnects. A picked-up flow is half-open until the
	 * endpoint answers (a flood of spoofed ACKs cannot fill the established table). */
	int pickup = p->key.proto == IPPROTO_TCP &&
		     (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN;
	if (pickup && cfg->sel != PL_SEL_HASH) {
		count(PL_ST_PICKUP_REFUSED);
		return TC_ACT_OK;
	}

	now = bpf_ktime_get_coarse_ns();
	idx = select_endpoint(p, svc_id, ver, now);
	ep = idx < 0 ? NULL : &ver->ep[idx & (PL_MAX_EPS - 1)];
	if (!ep || !(ep->flags & PL_EP_F_ACTIVE)) {
		/* The VIP is a local address: the kernel answers with a RST or port-unreachable,
		 * a fast refusal instead of a black hole. */
		count(PL_ST_NO_ENDPOINT);
		return TC_ACT_OK;
	}

	__u16 dport = p->key.dport;
	if (ep->port && p->key.proto != IPPROTO_ICMP)
		dport = bpf_htons(bpf_ntohs(ep->port) + (bpf_ntohs(p->key.dport) - cfg->port_base));

	__u32 zero = 0;
	struct flow_scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return TC_ACT_SHOT;
	struct ct_val *fv = &sc->fwd, *rv = &sc->rev;
	__builtin_memset(sc, 0, sizeof(*sc));
	fv->nat_saddr = ep->snat_ip ? ep->snat_ip : p->key.saddr;
	fv->nat_daddr = ep->ip;
	fv->nat_sport = p->key.sport;
	fv->nat_dport = dport;
	fv->svc_id = rv->svc_id = svc_id;
	fv->ep_idx = rv->ep_idx = idx;
	fv->dir = PL_DIR_ORIG;
	rv->dir = PL_DIR_REPLY;
	fv->mode = rv->mode = cfg->mode;
	fv->created_ns = fv->last_ns = rv->created_ns = rv->last_ns = now;
	fv->seen = p->key.proto == IPPROTO_TCP ? tcp_bits(p->tcp_flags) : PL_CT_SEEN;
	rv->nat_saddr = p->key.daddr;
	rv->nat_daddr = p->key.saddr;
	rv->nat_sport = p->key.proto == IPPROTO_ICMP ? p->key.sport : p->key.dport;
	rv->nat_dport = p->key.proto == IPPROTO_ICMP ? 0 : p->key.sport;

	if (pickup) {
		/* the window is unknown: judge no RST/FIN of this flow (as Linux's "be liberal") */
		fv->td_flags = rv->td_flags = PL_TD_LIBERAL;
		fv->td_wsopt = rv->td_wsopt = PL_TD_NO_WS;
	} else if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		if (tcp_segment(skb, p, &s))
			return TC_ACT_SHOT;
		td_update(fv, &s, p->tcp_flags);
		fv->td_wsopt = tcp_wsopt(skb, p->l4off, s.doff);
		rv->td_wsopt = PL_TD_NO_WS;
	}

	/* New flows go to ct_half until established. When there is no room (no free NAT port)
	 * the packet goes to the kernel: the VIP is local, so the client gets a RST or
	 * port-unreachable, not silence. */
	if (pl_insert_reply(fv, rv, &p->key, ep->snat_ip != 0)) {
		count(PL_ST_NAT_EXHAUSTED);
		return TC_ACT_OK;
	}
	if (bpf_map_update_elem(&ct_half, &p->key, fv, BPF_NOEXIST)) {
		/* Another CPU created this flow first: undo our reply entry and use theirs. */
		struct ct_key rk;
		partner_key(fv, p->key.proto, &rk);
		bpf_map_delete_elem(&ct_half, &rk);
		struct ct_val *v = bpf_map_lookup_elem(&ct_half, &p->key);
		if (!v) {
			count(PL_ST_CT_INSERT_FAIL);
			return TC_ACT_SHOT;
		}
		return apply(skb, p, v, now);
	}

	if (pickup)
		count(PL_ST_PICKUP);
	__u64 *nf = bpf_map_lookup_elem(&svc_new, &svc_id);
	if (nf)
		*nf += 1;
	count(PL_ST_NEW_FLOW);

	struct ct_val *v = bpf_map_lookup_elem(&ct_half, &p->key);
	if (!v)
		return TC_ACT_SHOT;
	return apply(skb, p, v, now);
}

SEC("tc")
int pyloxi_lb(struct __sk_buff *skb)
{
	struct pkt p;
	int rc = parse_packet(skb, &p);

	if (rc == PARSE_FRAGMENT) {
		if (frag_follow(&p)) {
			count(PL_ST_FRAGMENT);
			return TC_ACT_OK;
		}
	} else if (rc == PARSE_ICMP_ERROR) {
		return pl_icmp_error_in(skb);
	} else if (rc != PARSE_OK) {
		return TC_ACT_OK;
	} else if (p.frag == PL_FRAG_FIRST) {
		frag_remember(&p);
	}
	/* established flows: one lookup */
	struct ct_val *v = bpf_map_lookup_elem(&ct_map, &p.key);
	if (v) {
		rc = ct_hit(skb, &p, v);
		if (rc != CT_RESTART)
			return rc;
		return new_flow(skb, &p);
	}
	v = bpf_map_lookup_elem(&ct_half, &p.key);
	if (v) {
		rc = ct_half_hit(skb, &p, v);
		if (rc != CT_RESTART)
			return rc;
		return new_flow(skb, &p);
	}
	if (pl_reply_miss(skb, &p.key, p.icmp_type))
		return TC_ACT_SHOT;
	if (p.frag == PL_FRAG_LATER) {   /* only a first fragment may open a flow */
		count(PL_ST_FRAGMENT);
		return TC_ACT_OK;
	}
	return new_flow(skb, &p);
}

/* One item of pl_ct_delete (a bpf_loop callback: verified once, not once per item). */
static long ct_del_step(__u32 i, void *data)
{
	__u32 zero = 0;
	struct ct_del_req *req = bpf_map_lookup_elem(&ct_del_map, &zero);

	if (!req || i >= PL_CT_DEL_BATCH)
		return 1;
	struct ct_del_item *it = &req->item[i];
	struct ct_key k = it->key;
	int half = it->table == PL_CT_DEL_HALF;
	struct ct_val *v = half ? bpf_map_lookup_elem(&ct_half, &k)
				: bpf_map_lookup_elem(&ct_map, &k);

	it->deleted = 0;
	if (!v || v->created_ns != it->created_ns || v->svc_id != it->svc_id ||
	    v->ep_idx != it->ep_idx || v->dir != it->dir)
		return 0;   /* gone, or another flow owns the key now: not ours to delete */
	/* Between this lookup and the delete another CPU could still end the flow and start a
	 * new one on the key, but that window is a few instructions, not a whole sweep. */
	if (half ? bpf_map_delete_elem(&ct_half, &k) : bpf_map_delete_elem(&ct_map, &k))
		return 0;   /* the datapath deleted it first (and counted it, if it had to) */
	it->deleted = 1;
	/* As the datapath does: whoever deletes the original-direction entry of an established
	 * flow counts its close, so a flow ended by two parties at once is counted once. Half-open
	 * flows were never counted opened. */
	if (!half && it->dir == PL_DIR_ORIG) {
		conn_closed(it->svc_id, it->ep_idx);
		req->closed++;
	}
	return 0;
}

/* Run by the control plane (BPF_PROG_TEST_RUN) to delete conntrack entries a snapshot saw,
 * only where the key still holds that entry (see struct ct_del_item), items read from
 * ct_del_map, results written back to it. */
SEC("syscall")
int pl_ct_delete(void *ctx)
{
	__u32 zero = 0;
	struct ct_del_req *req = bpf_map_lookup_elem(&ct_del_map, &zero);

	if (!req)
		return -1;
	__u32 n = req->n;
	if (n > PL_CT_DEL_BATCH)
		n = PL_CT_DEL_BATCH;
	req->closed = 0;
	bpf_loop(n, ct_del_step, NULL, 0);
	return 0;
}
