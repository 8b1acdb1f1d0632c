/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Conntrack: the flows the datapath knows, two entries per flow (one per direction, each with
 * its own rewrite), in two tables (tables.h). ct_map holds established flows and is a plain
 * hash, so nothing evicts them; ct_half is an LRU for half-open TCP and for UDP/ICMP/SCTP flows
 * without a reply yet, so a flood of new flows evicts only its own kind. A flow is promoted
 * (both entries copied into ct_map, then removed from ct_half) when TCP's handshake completes
 * (the client's ACK acknowledging the SYN-ACK) or when the first reply of another protocol
 * arrives. One entry's state (its partner's key, TCP flags and window) is in ct.h; creating a
 * flow in ct_create.h.
 */
#ifndef PYLOXI_CONNTRACK_H
#define PYLOXI_CONNTRACK_H

#include "pyloxi/clock.h"
#include "pyloxi/ct.h"
#include "pyloxi/ctsync.h"
#include "pyloxi/parse.h"
#include "pyloxi/sctp.h"
#include "pyloxi/stats.h"
#include "pyloxi/tables.h"
#include "pyloxi/verdict.h"

#ifndef EEXIST
#define EEXIST 17
#endif

/* The entry of `k` in either table (established first). For code outside the conntrack path
 * (ICMP errors, fragments) that needs a flow's rewrite whatever its state: a flow is in ct_half
 * until its first reply, so looking in ct_map alone misses young flows. */
static __always_inline struct ct_val *ct_lookup(const struct ct_key *k)
{
	struct ct_val *v = bpf_map_lookup_elem(&ct_map, k);

	return v ? v : bpf_map_lookup_elem(&ct_half, k);
}

/* The partner entry of v, in ct_half (half) or ct_map. Not inlined, and neither are the two
 * deletes below: the partner's key (40 bytes) then sits in their frames, not in the frame of
 * the packet path, which the 512-byte stack limit counts along the deepest call chain. Only
 * SYN, FIN and RST packets of established flows get here. */
static __noinline struct ct_val *ct_partner(const struct ct_val *v, __u32 proto, int half)
{
	struct ct_key pk;

	if (!v)
		return NULL;
	partner_key(v, proto, &pk);
	return half ? bpf_map_lookup_elem(&ct_half, &pk) : bpf_map_lookup_elem(&ct_map, &pk);
}

/* Delete an established flow (both entries) that the datapath itself ends, the partner's key
 * built in *pk. The close is counted by whoever deletes the original-direction entry, so two
 * CPUs ending the same flow (each from its own direction) count it exactly once. */
static __always_inline void ct_delete_flow_in(const struct ct_key *key, const struct ct_val *v,
					      struct ct_key *pk)
{
	__u32 gid = v->ep_gid;
	int orig = v->dir == PL_DIR_ORIG;
	int counted = !(v->seen & PL_CT_SC_JOIN);   /* an SCTP path joined to a flow: no */

	partner_key(v, key->proto, pk);
	bpf_map_delete_elem(&ct_map, orig ? pk : key);
	if (bpf_map_delete_elem(&ct_map, orig ? key : pk) == 0) {
		if (counted)
			conn_closed(gid);
		/* the one deleting the original entry tells the peers, once */
		sync_emit_del(orig ? key : pk, orig ? pk : key);
	}
}

/* Half-open flows are not counted in conn_map (they may vanish by LRU eviction): deleting them
 * needs no bookkeeping. */
static __always_inline void ct_half_delete_flow_in(const struct ct_key *key,
						   const struct ct_val *v, struct ct_key *pk)
{
	partner_key(v, key->proto, pk);
	bpf_map_delete_elem(&ct_half, pk);
	bpf_map_delete_elem(&ct_half, key);
}

/* The same with the partner's key in this function's own frame (see ct_partner). */
static __noinline void ct_delete_flow(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk;

	if (key && v)
		ct_delete_flow_in(key, v, &pk);
}

static __noinline void ct_half_delete_flow(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk;

	if (key && v)
		ct_half_delete_flow_in(key, v, &pk);
}

/* The flow of entry v is over and packet p opens a new one on its tuple: delete both entries
 * (from ct_half when `half`) and start over. */
static __always_inline enum pl_verdict ct_restart(const struct pkt *p, const struct ct_val *v,
						  int half)
{
	if (half)
		ct_half_delete_flow(&p->key, v);
	else
		ct_delete_flow(&p->key, v);
	count(PL_ST_REUSE);
	return PL_RESTART;
}

/* A node of an active-active cluster (its NAT port range is shared: --cluster) may see a flow's
 * two directions on different nodes: a router that re-hashes its ECMP route (a node went)
 * moves the client's packets to a peer holding the synced copy while the endpoint's replies,
 * sent to this node's instance IP, still come here. The window of the direction this node no
 * longer sees is stale, so it cannot judge a RST or FIN (the endpoint's last data segment
 * carries its FIN): as Linux's nf_conntrack_tcp_be_liberal for asymmetric paths, it does not
 * (synced and picked-up copies are liberal anyway). */
static __always_inline int ct_cluster_liberal(void)
{
	__u32 zero = 0;
	struct nat_share *share = bpf_map_lookup_elem(&nat_share_map, &zero);

	return share && share->count > 1;
}

/* What every TCP segment a flow accepts leaves in its entry: window tracking and flag bits
 * (`bits`: tcp_bits(flags)). All XDP's conntrack does for a TCP segment (xdp.h). */
static __always_inline void ct_tcp_track(struct ct_val *v, const struct tcp_seg *s, __u8 flags,
					 __u32 bits)
{
	td_update(v, s, flags);
	if ((v->seen & bits) != bits)
		__sync_fetch_and_or(&v->seen, bits);
}

/* The last-seen time stamp aging reads, written at most once a second (a clean cache line).
 * Signed: another CPU may have stamped it with a clock read just after ours. */
static __always_inline void ct_stamp(struct ct_val *v, __u64 now)
{
	if ((__s64)(now - v->last_ns) > (__s64)NSEC_PER_SEC)
		v->last_ns = now;
}

/* Does the client's SYN on the tuple of entry v (its partner pv, or NULL) open a new connection?
 * On the tuple of a closed or closing flow (clients reuse ports quickly under Connection:
 * close) it does, not a retransmission: no SYN follows a FIN or RST within one connection.
 * Only in-window RSTs and FINs set those bits, so a blind reset cannot move a flow to another
 * endpoint this way. */
static __always_inline int ct_syn_reuses(const struct ct_val *v, const struct ct_val *pv)
{
	return !pv || ((v->seen | pv->seen) & (PL_CT_FIN | PL_CT_RST));
}

/* TCP bookkeeping common to both tables: a SYN on a finished tuple, window checks of RST and
 * FIN, flag bits, window tracking. Returns PL_CONTINUE, PL_RESTART or PL_DROP. *pvp: the
 * partner entry if the caller has it already (else NULL), on return also if it had to be looked
 * up here. `half`: v lives in ct_half (else ct_map). */
static __always_inline enum pl_verdict ct_tcp(void *ctx, int xdp, const struct pkt *p,
					      struct ct_val *v, int half, struct tcp_seg *s,
					      struct ct_val **pvp)
{
	__u32 bits = tcp_bits(p->tcp_flags);
	struct ct_val *pv = *pvp;

	if (tcp_segment(ctx, xdp, p, s))
		return PL_DROP;
	if (!pv && ((bits == PL_CT_SYN && v->dir == PL_DIR_ORIG) || (bits & (PL_CT_RST | PL_CT_FIN))))
		pv = ct_partner(v, p->key.proto, half);
	if (bits == PL_CT_SYN && v->dir == PL_DIR_ORIG && ct_syn_reuses(v, pv))
		return ct_restart(p, v, half);
	if ((bits & (PL_CT_RST | PL_CT_FIN)) && pv && !td_in_window(v, pv, s, p->tcp_flags) &&
	    !ct_cluster_liberal()) {
		count(PL_ST_OUT_OF_WINDOW);
		return PL_DROP;
	}
	if (p->tcp_flags & TCPF_SYN) {   /* SYN or SYN-ACK: its window-scale option */
		__u8 ws = tcp_wsopt(ctx, xdp, p->l4off, s->doff);
		if (v->td_wsopt != ws)
			v->td_wsopt = ws;
	}
	ct_tcp_track(v, s, p->tcp_flags, bits);
	*pvp = pv;
	return PL_CONTINUE;
}

/* SCTP bookkeeping common to both tables (sctp.h): an INIT on a closed association's tuple
 * starts a new flow, an INIT-ACK is remembered and rewritten, chunk bits. Sets *promote when a
 * half-open flow's association is up. Returns PL_CONTINUE, PL_RESTART or PL_DROP. */
static __always_inline enum pl_verdict ct_sctp(struct __sk_buff *skb, const struct pkt *p,
					       struct ct_val *v, int half, __u64 now, int *promote)
{
	__u32 bits = sctp_bits(p->sctp_chunk);
	struct ct_val *pv;

	*promote = 0;
	if (p->sctp_chunk == SCTP_INIT && v->dir == PL_DIR_ORIG) {
		/* An INIT within a live association is the peer restarting: same endpoint. After
		 * ABORT or SHUTDOWN-COMPLETE it is a new association (clients reuse their port). */
		pv = ct_partner(v, p->key.proto, half);
		if (!pv || sctp_closed(v->seen, pv->seen)) {
			return ct_restart(p, v, half);
		}
	}
	if (p->sctp_chunk == SCTP_INIT_ACK && v->dir == PL_DIR_REPLY &&
	    p->frag == PL_FRAG_NONE && pl_sctp_init_ack(skb, p, v, now))
		return PL_DROP;
	if ((v->seen & bits) != bits)
		__sync_fetch_and_or(&v->seen, bits);
	if (v->dir == PL_DIR_ORIG && (v->seen & PL_CT_SC_MPATH))
		sctp_follow_path(p, ct_partner(v, p->key.proto, half));
	if (!half)
		return PL_CONTINUE;
	if (bits & PL_CT_SC_COOKIEACK) {
		*promote = 1;
	} else if (bits & PL_CT_SC_DATA) {
		pv = ct_partner(v, p->key.proto, half);
		*promote = pv && (pv->seen & PL_CT_SC_DATA);
	}
	return PL_CONTINUE;
}

/* A packet of an established flow (entry v of ct_map): a few flag bits and the time stamp.
 * Returns PL_CONTINUE (on to the rewrite), PL_RESTART or PL_DROP. */
static __always_inline enum pl_verdict ct_established(struct __sk_buff *skb, const struct pkt *p,
						      struct ct_val *v, __u64 now)
{
	if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		struct ct_val *pv = NULL;
		enum pl_verdict rc = ct_tcp(skb, 0, p, v, 0, &s, &pv);
		if (rc != PL_CONTINUE)
			return rc;
	} else if (p->key.proto == IPPROTO_SCTP) {
		int promote;
		enum pl_verdict rc = ct_sctp(skb, p, v, 0, now, &promote);
		if (rc != PL_CONTINUE)
			return rc;
	} else if (!(v->seen & PL_CT_SEEN)) {
		__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
	}
	ct_stamp(v, now);
	return PL_CONTINUE;
}

/* What pl_promote did. */
enum pl_promote_rc {
	PL_PROMOTE_NONE = -1,    /* nothing to promote */
	PL_PROMOTED = 0,         /* the flow is in ct_map (by us or by another CPU) */
	PL_PROMOTE_REFUSED = 1,  /* ct_map is full */
};

/* Move a flow from ct_half into ct_map: insert both entries there first, then delete them
 * from ct_half, so a packet of either direction always finds one of the two. The flow is
 * counted in conn_map here, not at creation: an LRU eviction of a half-open flow then leaves no
 * phantom connection behind. */
__noinline int pl_promote(const struct ct_key *key, const struct ct_val *v)
{
	struct ct_key pk, ok, rk;
	struct flow_scratch *sc;
	struct ct_val *pv;
	__u32 zero = 0;
	int rc;

	if (!key || !v)
		return PL_PROMOTE_NONE;
	sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return PL_PROMOTE_NONE;
	partner_key(v, key->proto, &pk);
	pv = bpf_map_lookup_elem(&ct_half, &pk);
	if (!pv)
		return PL_PROMOTE_NONE;
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
		return PL_PROMOTED;   /* another CPU promoted it a moment ago */
	if (rc) {
		count(PL_ST_CT_FULL);
		return PL_PROMOTE_REFUSED;
	}
	rc = bpf_map_update_elem(&ct_map, &rk, &sc->rev, BPF_NOEXIST);
	if (rc) {
		bpf_map_delete_elem(&ct_map, &ok);
		count(rc == -EEXIST ? PL_ST_CT_INSERT_FAIL : PL_ST_CT_FULL);
		return PL_PROMOTE_REFUSED;
	}
	conn_opened(sc->fwd.ep_gid);
	count(PL_ST_PROMOTE);
	sync_emit_est(&ok, &rk, &sc->fwd, &sc->rev);
	bpf_map_delete_elem(&ct_half, &rk);
	bpf_map_delete_elem(&ct_half, &ok);
	return PL_PROMOTED;
}

/* A packet of a half-open flow (entry *vp of ct_half): handshake progress, and promotion when
 * the flow is established: TCP when the client acknowledges the SYN-ACK, other protocols at the
 * first reply. Returns PL_CONTINUE with *vp the entry to rewrite by (the ct_map one if the
 * flow was promoted), PL_RESTART, PL_DROP or PL_PASS. TC's and XDP's (ctx, xdp: see
 * tcp_segment). */
static __always_inline enum pl_verdict ct_half_open(void *ctx, int xdp, const struct pkt *p,
						    struct ct_val **vp, __u64 now)
{
	struct ct_val *v = *vp;
	int promote;

	if (p->key.proto == IPPROTO_TCP) {
		struct tcp_seg s;
		struct ct_val *pv = NULL;
		int ack = v->dir == PL_DIR_ORIG &&
			  (p->tcp_flags & (TCPF_ACK | TCPF_SYN | TCPF_RST)) == TCPF_ACK;
		if (ack) {
			pv = ct_partner(v, p->key.proto, 1);
			/* both SYNs seen: from this ACK on, windows are scaled */
			if (pv && (pv->seen & PL_CT_SYNACK))
				td_resolve_wscale(v, pv);
		}
		enum pl_verdict rc = ct_tcp(ctx, xdp, p, v, 1, &s, &pv);
		if (rc != PL_CONTINUE)
			return rc;
		/* the ACK must acknowledge the SYN-ACK: a blind ACK cannot establish. A flow
		 * picked up mid-stream is established by the endpoint's first answer that is
		 * not a reset (it knows the connection). */
		promote = ack ? pv && (pv->seen & PL_CT_SYNACK) && s.ack == pv->td_end
			      : v->dir == PL_DIR_REPLY && (v->td_flags & PL_TD_LIBERAL) &&
				!(p->tcp_flags & (TCPF_RST | TCPF_SYN));
	} else if (p->key.proto == IPPROTO_SCTP) {
		if (xdp)   /* SCTP is TC's (sctp.h needs the skb) */
			return PL_PASS;
		enum pl_verdict rc = ct_sctp(ctx, p, v, 1, now, &promote);
		if (rc != PL_CONTINUE)
			return rc;
	} else {
		if (!(v->seen & PL_CT_SEEN))
			__sync_fetch_and_or(&v->seen, PL_CT_SEEN);
		promote = v->dir == PL_DIR_REPLY;
	}
	if (now - v->last_ns > NSEC_PER_SEC)
		v->last_ns = now;
	if (promote) {
		int rc = pl_promote(&p->key, v);
		if (rc == PL_PROMOTED) {
			*vp = bpf_map_lookup_elem(&ct_map, &p->key);
			return *vp ? PL_CONTINUE : PL_DROP;
		}
		/* Established table full: a TCP handshake is refused, the kernel answers the
		 * client's ACK to the (local) VIP with a RST; the half-open entries stay for the
		 * backend's retransmitted SYN-ACK, which then meets the client's RST. A flow
		 * promoted by a reply (other protocols, TCP picked up mid-stream) goes on from
		 * ct_half, where it is evictable: handing an endpoint's packet to the kernel
		 * would forward it un-NATed. */
		if (rc == PL_PROMOTE_REFUSED && v->dir == PL_DIR_ORIG)
			return PL_PASS;
	}
	return PL_CONTINUE;
}

/* A packet that missed both tables and comes from an endpoint's ip:port is the reply of a lost
 * flow (evicted, aged, or never ours): forwarded by the kernel it would reach the client with
 * the endpoint's own address. Returns 1 when it must be dropped, 0 unless the kernel would not
 * forward it anyway (a health probe's answer to this host, a reply to a local SNAT address). */
/* Is the source of tuple k an endpoint's ip:port (an echo reply: its address)? */
static __always_inline int from_endpoint(const struct ct_key *k, __u32 icmp_type)
{
	struct ep_addr_key ek = {};

	ek.ip = k->saddr;
	ek.port = k->sport;
	ek.proto = k->proto;
	ek.family = k->family;
	if (k->proto == IPPROTO_ICMP) {
		if (icmp_type != ICMP_ECHOREPLY)
			return 0;
		ek.port = 0;
	}
	return bpf_map_lookup_elem(&ep_addr_map, &ek) != NULL;
}

__noinline int pl_reply_miss(struct __sk_buff *skb, const struct ct_key *k, __u32 icmp_type)
{
	struct bpf_fib_lookup fib = {};

	if (!skb || !k || !from_endpoint(k, icmp_type))
		return 0;
	fib_addrs(&fib, k->family, &k->saddr, &k->daddr);
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
	int joined = (v->seen & PL_CT_SC_JOIN) != 0;   /* not a connection of its own */
	__u32 gid = v->ep_gid;
	/* Between this lookup and the delete another CPU could still end the flow and start a
	 * new one on the key, but that window is a few instructions, not a whole sweep. */
	if (half ? bpf_map_delete_elem(&ct_half, &k) : bpf_map_delete_elem(&ct_map, &k))
		return 0;   /* the datapath deleted it first (and counted it, if it had to) */
	it->deleted = 1;
	/* As the datapath does: whoever deletes the original-direction entry of an established
	 * flow counts its close, so a flow ended by two parties at once is counted once. Half-open
	 * flows were never counted opened. */
	if (!half && it->dir == PL_DIR_ORIG && !joined) {
		conn_closed(gid);
		req->closed++;
	}
	return 0;
}

#endif
