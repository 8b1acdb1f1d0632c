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

/* The key of the other direction's entry, derived from this entry's rewrite. */
static __always_inline void partner_key(const struct ct_val *v, __u8 proto, struct ct_key *out)
{
	out->saddr = v->nat_daddr;
	out->daddr = v->nat_saddr;
	if (proto == IPPROTO_ICMP) {   /* the echo identifier is the same both ways */
		out->sport = v->nat_sport;
		out->dport = 0;
	} else {
		out->sport = v->nat_dport;
		out->dport = v->nat_sport;
	}
	out->proto = proto;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
}

static __always_inline void conn_closed(__u32 svc_id, __u32 ep_idx)
{
	__u32 gid = svc_id * PL_MAX_EPS + (ep_idx & (PL_MAX_EPS - 1));
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->closed, 1);
}

/* A TCP flow is over once either side reset it, or both sides sent FIN. */
static __always_inline int tcp_closed(__u32 a, __u32 b)
{
	return ((a | b) & PL_CT_RST) || ((a & PL_CT_FIN) && (b & PL_CT_FIN));
}

/* Delete a flow (both entries) that the datapath itself ends, keeping lc counts right. */
static __always_inline void ct_delete_flow(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk;
	__u32 svc_id = v->svc_id, ep_idx = v->ep_idx;

	partner_key(v, key->proto, &pk);
	bpf_map_delete_elem(&ct_map, &pk);
	if (bpf_map_delete_elem(&ct_map, key) == 0)
		conn_closed(svc_id, ep_idx);
}

static __always_inline __u32 tcp_bits(__u8 f)
{
	__u32 bits;

	if ((f & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		bits = PL_CT_SYN;
	else if (f & TCPF_SYN)
		bits = PL_CT_SYNACK;
	else
		bits = (f & TCPF_ACK) ? PL_CT_ACK : 0;
	if (f & TCPF_FIN)
		bits |= PL_CT_FIN;
	if (f & TCPF_RST)
		bits |= PL_CT_RST;
	return bits;
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
	__u32 passed = 0;
	int rc;

	rc = rewrite_tuple(skb, p, v->nat_saddr, v->nat_daddr, v->nat_sport, v->nat_dport);
	if (rc == -1)
		return TC_ACT_OK;   /* TTL expiring: the kernel sends time-exceeded */
	if (rc)
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
	account(v, p->len);
	rc = forward(skb, p, v, now, &passed);
	if (passed)
		count(PL_ST_FIB_PASS);
	return rc;
}

#define CT_RESTART (-1000)

/* Established path: one lookup, a few flag bits, rewrite, forward. */
static __always_inline int ct_hit(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (p->key.proto == IPPROTO_TCP) {
		__u32 bits = tcp_bits(p->tcp_flags);

		if (bits == PL_CT_SYN && v->dir == PL_DIR_ORIG) {
			struct ct_key pk;
			struct ct_val *pv;
			__u32 other = 0;

			partner_key(v, p->key.proto, &pk);
			pv = bpf_map_lookup_elem(&ct_map, &pk);
			if (pv)
				other = pv->seen;
			/* A SYN on the tuple of a closed or closing flow (clients reuse ports
			 * quickly under Connection: close) is a new connection, not a
			 * retransmission: no SYN follows a FIN or RST within one connection. */
			if (!pv || ((v->seen | other) & (PL_CT_FIN | PL_CT_RST))) {
				ct_delete_flow(&p->key, v);
				count(PL_ST_REUSE);
				return CT_RESTART;
			}
		}
		if ((v->seen & bits) != bits)
			__sync_fetch_and_or(&v->seen, bits);
	} else if (!(v->seen & PL_CT_SEEN)) {
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	}
	/* Signed: another CPU may have stamped it with a clock read just after ours. */
	if ((__s64)(now - v->last_ns) > (__s64)NSEC_PER_SEC)
		v->last_ns = now;
	return apply(skb, p, v, now);
}

/* Least connections: the slot whose endpoint has the fewest active flows. A global function,
 * so the verifier checks the scan once instead of in every caller's state. */
__noinline int pl_select_lc(__u32 svc_id, __u32 n, const struct slot_table *t)
{
	__u64 best = ~0ULL;
	int best_slot = -1;

	if (!t)
		return -1;
	for (__u32 i = 0; i < PL_MAX_EPS; i++) {
		if (i >= n)
			break;
		__u32 gid = svc_id * PL_MAX_EPS + (t->ep[i] & (PL_MAX_EPS - 1));
		struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
		__u64 active = c ? c->opened - c->closed : 0;
		if (active < best) {
			best = active;
			best_slot = i;
		}
	}
	return best_slot;
}

static __always_inline int select_slot(const struct pkt *p, __u32 svc_id,
				       const struct svc_cfg *cfg, const struct slot_table *t)
{
	__u32 n = cfg->n_slots;

	if (n == 0 || n > PL_SLOTS)
		return -1;
	switch (cfg->sel) {
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
		return pl_select_lc(svc_id, n, t);
	}
	return -1;
}

/* The endpoint index for a new flow, or -1. */
static __always_inline int select_endpoint(const struct pkt *p, __u32 svc_id,
					   const struct svc_cfg *cfg, __u64 now)
{
	__u32 tk = svc_id * 2 + (cfg->gen & 1);
	struct slot_table *t = bpf_map_lookup_elem(&slot_map, &tk);
	struct aff_key ak = { .svc_id = svc_id, .saddr = p->key.saddr };
	int slot;

	if (!t)
		return -1;
	if (cfg->sel == PL_SEL_PERSIST) {
		struct aff_val *av = bpf_map_lookup_elem(&aff_map, &ak);
		/* Signed: a stamp a moment ahead of `now` (another CPU) is fresh, not 2^64 old. */
		if (av && (__s64)(now - av->last_ns) < (__s64)(cfg->persist_timeout * NSEC_PER_SEC)) {
			__u32 gid = svc_id * PL_MAX_EPS + (av->ep_idx & (PL_MAX_EPS - 1));
			struct ep_val *ep = bpf_map_lookup_elem(&ep_map, &gid);
			if (ep && (ep->flags & PL_EP_F_ACTIVE)) {
				av->last_ns = now;
				return av->ep_idx & (PL_MAX_EPS - 1);
			}
		}
	}
	slot = select_slot(p, svc_id, cfg, t);
	if (slot < 0 || slot >= PL_SLOTS_ALLOC)
		return -1;
	int idx = t->ep[slot];
	if (cfg->sel == PL_SEL_PERSIST) {
		struct aff_val nv = { .last_ns = now, .ep_idx = idx };
		bpf_map_update_elem(&aff_map, &ak, &nv, BPF_ANY);
	}
	return idx;
}

/* Take over a reply tuple whose flow has finished (or lost its other half). */
__noinline int pl_reclaim(const struct ct_key *rk)
{
	struct ct_val *old;
	struct ct_key ok;
	struct ct_val *orig;
	__u8 proto;

	if (!rk)
		return -1;
	proto = rk->proto;
	old = bpf_map_lookup_elem(&ct_map, rk);
	if (!old)
		return 0;
	partner_key(old, proto, &ok);
	orig = bpf_map_lookup_elem(&ct_map, &ok);
	if (orig && !(proto == IPPROTO_TCP && tcp_closed(old->seen, orig->seen)))
		return -1;
	if (orig)
		ct_delete_flow(&ok, orig);
	else
		bpf_map_delete_elem(&ct_map, rk);
	count(PL_ST_RECLAIM);
	return 0;
}

/* Insert the reply entry, choosing a free NAT source port when the source is translated. */
__noinline int pl_insert_reply(struct ct_val *fv, const struct ct_val *rv, const struct ct_key *key,
			    int snat)
{
	struct ct_key rk;
	__u16 sport;
	__u32 h, tries = snat ? PL_NAT_TRIES : 1;
	__u8 proto;

	if (!fv || !rv || !key)
		return -1;
	sport = key->sport;
	proto = key->proto;
	h = hash_tuple(key);
	/* the client's own port first (it is free unless another client took it), then hashes */
	__u32 lo = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_MIN : PL_NAT_PORT_MIN;
	__u32 span = fv->mode == PL_MODE_FULLNAT ? PL_VIP_PORT_SPAN : PL_NAT_PORT_SPAN;
	/* SCTP keeps its port: a new port would mean recomputing the CRC32c of the packet */
	if (proto == IPPROTO_SCTP)
		tries = 1;
	for (__u32 i = 0; i < PL_NAT_TRIES; i++) {
		if (i >= tries)
			break;
		__u16 cand = sport;
		if (snat && proto != IPPROTO_SCTP && (i > 0 || bpf_ntohs(sport) < lo))
			cand = bpf_htons(lo + (h + i * 7919) % span);
		fv->nat_sport = cand;
		partner_key(fv, proto, &rk);
		if (bpf_map_update_elem(&ct_map, &rk, rv, BPF_NOEXIST) == 0)
			return 0;
		if (pl_reclaim(&rk) == 0 &&
		    bpf_map_update_elem(&ct_map, &rk, rv, BPF_NOEXIST) == 0)
			return 0;
	}
	return -1;
}

static __noinline int new_flow(struct __sk_buff *skb, const struct pkt *p)
{
	struct svc_key sk = { .vip = p->key.daddr, .port = p->key.dport, .proto = p->key.proto };
	struct svc_val *sv;
	struct svc_cfg *cfg;
	struct ep_val *ep;
	__u32 svc_id, gid;
	__u64 now;
	int idx;

	if (p->key.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return TC_ACT_OK;
	sv = bpf_map_lookup_elem(&svc_map, &sk);
	if (!sv)
		return TC_ACT_OK;
	svc_id = sv->svc_id;
	cfg = bpf_map_lookup_elem(&cfg_map, &svc_id);
	if (!cfg)
		return TC_ACT_OK;
	if (cfg->flags & PL_SVC_F_ALLOWLIST) {
		struct allow_key ak = { .prefixlen = 64, .svc_id = svc_id, .addr = p->key.saddr };
		if (!bpf_map_lookup_elem(&allow_map, &ak)) {
			count(PL_ST_DROP_SOURCE);
			return TC_ACT_SHOT;
		}
	}
	if (p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST))
		return TC_ACT_OK;   /* never open a flow on a reset */

	now = bpf_ktime_get_coarse_ns();
	idx = select_endpoint(p, svc_id, cfg, now);
	gid = svc_id * PL_MAX_EPS + (idx & (PL_MAX_EPS - 1));
	ep = idx < 0 ? NULL : bpf_map_lookup_elem(&ep_map, &gid);
	if (!ep || !(ep->flags & PL_EP_F_ACTIVE)) {
		/* The VIP is a local address: the kernel answers with a RST or port-unreachable,
		 * a fast refusal instead of a black hole. */
		count(PL_ST_NO_ENDPOINT);
		return TC_ACT_OK;
	}

	__u16 dport = p->key.dport;
	if (ep->port && p->key.proto != IPPROTO_ICMP)
		dport = bpf_htons(bpf_ntohs(ep->port) + (bpf_ntohs(p->key.dport) - sv->port_base));

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

	if (pl_insert_reply(fv, rv, &p->key, ep->snat_ip != 0)) {
		count(PL_ST_NAT_EXHAUSTED);
		return TC_ACT_SHOT;
	}
	if (bpf_map_update_elem(&ct_map, &p->key, fv, BPF_NOEXIST)) {
		/* Another CPU created this flow first: undo our reply entry and use theirs. */
		struct ct_key rk;
		partner_key(fv, p->key.proto, &rk);
		bpf_map_delete_elem(&ct_map, &rk);
		struct ct_val *v = bpf_map_lookup_elem(&ct_map, &p->key);
		if (!v) {
			count(PL_ST_CT_INSERT_FAIL);
			return TC_ACT_SHOT;
		}
		return apply(skb, p, v, now);
	}

	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->opened, 1);
	__u64 *nf = bpf_map_lookup_elem(&svc_new, &svc_id);
	if (nf)
		*nf += 1;
	count(PL_ST_NEW_FLOW);

	struct ct_val *v = bpf_map_lookup_elem(&ct_map, &p->key);
	if (!v)
		return TC_ACT_SHOT;
	return apply(skb, p, v, now);
}

SEC("tc")
int pyloxi_lb(struct __sk_buff *skb)
{
	struct pkt p;
	int rc = parse_packet(skb, &p);

	if (rc != PARSE_OK) {
		if (rc == PARSE_FRAGMENT)
			count(PL_ST_FRAGMENT);
		return TC_ACT_OK;
	}
	struct ct_val *v = bpf_map_lookup_elem(&ct_map, &p.key);
	if (v) {
		rc = ct_hit(skb, &p, v);
		if (rc != CT_RESTART)
			return rc;
	}
	return new_flow(skb, &p);
}

/* Run by the control plane (BPF_PROG_TEST_RUN) to count flows it aged out, read from
 * close_map: the datapath adds to the same counters atomically, so user space may not simply
 * overwrite them. */
SEC("syscall")
int pl_conn_closed(void *ctx)
{
	__u32 zero = 0;
	struct conn_close_req *req = bpf_map_lookup_elem(&close_map, &zero);

	if (!req)
		return -1;
	for (__u32 i = 0; i < PL_CLOSE_BATCH; i++) {
		if (i >= req->n)
			break;
		__u32 gid = req->gid[i];
		struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
		if (c)
			__sync_fetch_and_add(&c->closed, req->count[i]);
	}
	return 0;
}
