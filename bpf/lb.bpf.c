// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * pyloxi datapath: TC clsact ingress on every LB-facing interface.
 *
 *   parse -> conntrack hit?  yes: account, rewrite, route, redirect            (fast path)
 *                            no:  firewall -> service lookup -> allowed sources -> select endpoint
 *                                 -> NAT rewrites -> two conntrack entries
 *                                 -> rewrite, route, redirect                  (new flow)
 * IPv4 and IPv6 alike; a flow whose endpoint is of the other family (NAT64) changes family in
 * the rewrite (xlate.h). Anything that is not ours (ARP, neighbour discovery, no flow, no
 * service) goes to the kernel untouched.
 * pyloxi_xdp (xdp.h), where attached, runs first with the same stages and tables: it opens,
 * drives and forwards the TCP, UDP and echo flows it can, and leaves the rest to this program.
 * Each stage lives in a header of its own (include/pyloxi/); this file is the pipeline.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pyloxi/maps.h"
#include "pyloxi/tables.h"
#include "pyloxi/verdict.h"
#include "pyloxi/clock.h"
#include "pyloxi/stats.h"
#include "pyloxi/parse.h"
#include "pyloxi/frag.h"
#include "pyloxi/conntrack.h"
#include "pyloxi/sctp.h"
#include "pyloxi/service.h"
#include "pyloxi/select.h"
#include "pyloxi/nat.h"
#include "pyloxi/xlate.h"
#include "pyloxi/ct_create.h"
#include "pyloxi/sctp_flow.h"
#include "pyloxi/fwd.h"
#include "pyloxi/icmp.h"
#include "pyloxi/mirror.h"
#include "pyloxi/dsr.h"
#include "pyloxi/firewall.h"
#include "pyloxi/egress.h"
#include "pyloxi/policer.h"
#include "pyloxi/xdp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The parsed packet, per CPU: off the BPF stack, whose 512 bytes the pipeline's call chain
 * (lb -> new_flow -> conntrack creation) needs for itself. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pkt);
} pkt_map SEC(".maps");

/* NAT and forward: the packet of flow entry v leaves with v's rewrite, to v's next hop (DSR
 * flows: dsr_forward). */
static __always_inline enum pl_verdict forward(struct __sk_buff *skb, const struct pkt *p,
					       struct ct_val *v, __u64 now)
{
	struct hop hop = {};
	int nh, rc;

	mirr_rule(skb, v->svc_id);   /* mirror.h: the packet as received, before NAT */

	/* What a router does with a packet it cannot forward, before touching it: the answer
	 * quotes the header its sender sent. */
	if (pol_flow_red(p, v, now))   /* policer.h: the rule's, endpoint's, client's policers */
		return PL_DROP;
	if (p->ttl <= 1)
		return icmp_answer(skb, p, v, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0);
	nh = next_hop(skb, p, v, now, &hop);
	if (nh == NH_TOO_BIG) {
		/* IPv6 is never fragmented on the way; neither is an IPv4 packet with DF */
		if (p->key.family == PL_AF_INET6 || ip_df(skb))
			return icmp_answer(skb, p, v, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, hop.mtu);
		/* may be fragmented: the kernel does that (where it forwards the rewritten packet),
		 * but not into IPv6 (NAT64 replies): dropped, as a router without fragmentation */
		if (v->nat_family != p->key.family)
			return PL_DROP;
		count(PL_ST_MTU_PASS);
		nh = NH_PASS;
	}
	/* SCTP INIT from a client whose source is translated: its addresses too (sctp.h; IPv4
	 * address parameters only) */
	if (p->sctp_chunk == SCTP_INIT && p->key.proto == IPPROTO_SCTP && v->dir == PL_DIR_ORIG &&
	    p->frag == PL_FRAG_NONE && p->key.family == PL_AF_INET &&
	    v->nat_family == PL_AF_INET && !addr_eq(&v->nat_saddr, &p->key.saddr) &&
	    pl_sctp_init_out(skb, p, v))
		return PL_DROP;
	if (v->nat_family != p->key.family)
		rc = xlate(skb, p, v);
	else if (p->key.family == PL_AF_INET6)
		rc = rewrite_tuple6(skb, p, v);
	else
		rc = rewrite_tuple(skb, p, addr_v4(&v->nat_saddr), addr_v4(&v->nat_daddr),
				   v->nat_sport, v->nat_dport);
	if (rc)
		return PL_DROP;
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
	account(v, p->len);
	if (nh == NH_PASS)
		count(PL_ST_FIB_PASS);
	return transmit(skb, v, nh, &hop);
}

/* A packet no conntrack entry knows: service -> select -> NAT -> conntrack -> forward.
 * `egress`: a firewall SNAT rule matched, for a packet no service claims (egress.h). */
static __noinline int new_flow(struct __sk_buff *skb, const struct pkt *p, int egress)
{
	struct flow_scratch *sc;
	struct svc_ver *ver;
	struct ep_val *ep;
	struct ct_val *v;
	__u32 svc_id, ver_id;
	__u16 assoc_sport = 0;
	__u64 now;
	int idx, rc, assoc;

	/* service */
	if (p->key.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return PL_PASS;
	ver = svc_lookup(&p->key, skb->mark, &svc_id, &ver_id);
	if (!ver && egress) {
		now = pl_now();
		rc = egress_open(skb, p, now, &v);
		if (rc != PL_CONTINUE)
			return rc;
		return forward(skb, p, v, now);
	}
	if (!ver)
		return PL_PASS;
	if (!svc_allows(&ver->cfg, ver_id, &p->key.saddr)) {
		count(PL_ST_DROP_SOURCE);
		return PL_DROP;
	}
	if (p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST))
		return PL_PASS;   /* never open a flow on a reset */
	/* A router between client and endpoints would not forward it: answer from the VIP
	 * before any state exists (the kernel, for which the VIP is local, would accept it). */
	if (p->ttl <= 1) {
		if (p->key.family == PL_AF_INET6)
			return pl_icmp6_reply(skb, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0,
					      &p->key.daddr);
		return pl_icmp_reply(skb, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0,
				     addr_v4(&p->key.daddr));
	}
	/* Mid-stream TCP (its flow lost): hash selection finds the same endpoint again through the
	 * Maglev table (as Katran does), so the flow is picked up; any other selection would pick
	 * an endpoint that never saw the connection: the kernel refuses the packet to the local
	 * VIP with a RST, and the client reconnects. A picked-up flow is half-open until the
	 * endpoint answers (a flood of spoofed ACKs cannot fill the established table). */
	int pickup = p->key.proto == IPPROTO_TCP &&
		     (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN;
	if (pickup && ver->cfg.sel != PL_SEL_HASH) {
		count(PL_ST_PICKUP_REFUSED);
		return PL_PASS;
	}

	/* select */
	now = pl_now();
	/* SCTP on another path of a known association (multihoming): its endpoint, not a pick */
	assoc = sctp_assoc_ep(p, svc_id);
	if (assoc >= 0) {
		assoc_sport = (__u32)assoc >> PL_ASSOC_SHIFT;
		idx = assoc & (PL_MAX_EPS - 1);
	} else {
		idx = select_endpoint(p, svc_id, ver, now);
	}
	ep = idx < 0 ? NULL : svc_ep(&ver->cfg, idx);
	if (!ep || !(ep->flags & PL_EP_F_ACTIVE)) {
		/* The VIP is a local address: the kernel answers with a RST or port-unreachable,
		 * a fast refusal instead of a black hole. */
		count(PL_ST_NO_ENDPOINT);
		return PL_PASS;
	}
	if (ver->cfg.mode == PL_MODE_DSR)   /* no rewrite, one forward-only entry (dsr.h) */
		return dsr_new_flow(p, svc_id, idx, ep, pickup, now) ? PL_FORWARD : PL_DROP;

	/* NAT: what the packets of each direction are rewritten to */
	sc = flow_nat(p, ep, &ver->cfg);
	if (!sc)
		return PL_DROP;
	if (assoc >= 0) {
		sc->fwd.svc_id = svc_id;
		sc->fwd.ep_idx = idx;
		sc->fwd.ep_gid = ep->gid;
		sc->fwd.mode = ver->cfg.mode;
		sc->fwd.created_ns = sc->fwd.last_ns = now;
		if (sctp_path_join(p, sc, assoc_sport, !addr_is_zero(&ep->snat_ip), &v))
			return forward(skb, p, v, now);
	}

	/* conntrack */
	rc = ct_create(skb, 0, p, sc, svc_id, idx, ep->gid, ver->cfg.mode,
		       !addr_is_zero(&ep->snat_ip), pickup, now, &v);
	if (rc != PL_CONTINUE)
		return rc;
	if (p->key.proto == IPPROTO_SCTP && p->sctp_chunk == SCTP_INIT && addr_is_zero(&ep->snat_ip))
		pl_sctp_init_seen(skb, p, v);

	return forward(skb, p, v, now);
}

/* new_flow, and the forwarding of a DSR flow's first packet it leaves to its caller (dsr.h). */
static __always_inline int new_flow_fwd(struct __sk_buff *skb, const struct pkt *p)
{
	struct ct_val *v;
	int rc;

	rc = fw_check(skb, p);   /* firewall.h: before the service lookup, on conntrack misses */
	if (rc != PL_CONTINUE && rc != PL_EGRESS)
		return rc;
	rc = new_flow(skb, p, rc == PL_EGRESS);

	if (rc != PL_FORWARD)
		return rc;
	v = bpf_map_lookup_elem(&ct_half, &p->key);
	return v ? dsr_forward(skb, p, v, pl_now()) : PL_DROP;
}

static __always_inline enum pl_verdict lb(struct __sk_buff *skb)
{
	struct ct_val *v;
	struct pkt *p;
	__u32 zero = 0;
	__u64 now;
	int rc;

	mirr_port_in(skb);   /* mirror.h: every frame, before parsing (the clone may move data) */
	/* A frame sent to another host's MAC is not ours to forward: a switch floods unknown
	 * unicast (an HA peer's port went down, its MAC aged out, a port in promiscuous mode), and
	 * an HA BACKUP holding the MASTER's synced flows would forward a duplicate of every such
	 * packet, or serve a VIP that is not local. The kernel drops it (ip_rcv). */
	if (skb->pkt_type == PACKET_OTHERHOST)
		return PL_PASS;
	if (pol_port_red(skb))   /* policer.h: the interface's QoS policer */
		return PL_DROP;
	p = bpf_map_lookup_elem(&pkt_map, &zero);
	if (!p)
		return PL_PASS;
	/* parse */
	rc = parse_packet(skb, p);
	if (rc == PARSE_FRAGMENT) {
		if (frag_follow(p)) {
			count(PL_ST_FRAGMENT);
			return PL_PASS;
		}
	} else if (rc == PARSE_ICMP_ERROR) {
		if (p->key.family == PL_AF_INET6)
			return pl_icmp6_error_in(skb);
		return pl_icmp_error_in(skb);
	} else if (rc == PARSE_EXT_PASS) {
		count(PL_ST_EXT_PASS);
		return PL_PASS;
	} else if (rc != PARSE_OK) {
		return PL_PASS;
	} else if (p->frag == PL_FRAG_FIRST) {
		frag_remember(p);
	}

	/* conntrack: an established flow costs one lookup */
	v = bpf_map_lookup_elem(&ct_map, &p->key);
	if (v) {
		now = pl_now();
		rc = ct_established(skb, p, v, now);
	} else {
		v = bpf_map_lookup_elem(&ct_half, &p->key);
		/* an endpoint's packet on a path of its association the client has not used yet */
		if (!v && p->key.proto == IPPROTO_SCTP && pl_sctp_ep_path(skb, p) == 0)
			v = bpf_map_lookup_elem(&ct_half, &p->key);
		if (v) {
			now = pl_now();
			if (v->mode == PL_MODE_DSR)   /* a forward-only flow (dsr.h) */
				rc = dsr_track(p, v, now);
			else
				rc = ct_half_open(skb, 0, p, &v, now);
		}
	}
	/* one forward() for both tables: each inlined copy would take its own stack */
	if (v) {
		if (rc == PL_CONTINUE && v->mode == PL_MODE_DSR)
			return dsr_forward(skb, p, v, now);
		if (rc == PL_CONTINUE)
			return forward(skb, p, v, now);
		if (rc != PL_RESTART)
			return rc;
		return new_flow_fwd(skb, p);
	}
	if (pl_reply_miss(skb, &p->key, p->icmp_type))
		return PL_DROP;
	if (p->frag == PL_FRAG_LATER) {   /* only a first fragment may open a flow */
		count(PL_ST_FRAGMENT);
		return PL_PASS;
	}
	return new_flow_fwd(skb, p);
}

SEC("tc")
int pyloxi_lb(struct __sk_buff *skb)
{
	return tc_action(lb(skb));
}

/* The XDP path (xdp.h), on the interfaces the control plane lists in xdp_ports; what it leaves
 * passes to pyloxi_lb untouched. */
SEC("xdp")
int pyloxi_xdp(struct xdp_md *ctx)
{
	return xdp_fast(ctx);
}

/* Run by the control plane (BPF_PROG_TEST_RUN) to delete conntrack entries a snapshot saw,
 * only where the key still holds that entry (see struct ct_del_item), items read from
 * ct_del_map, results written back to it. Returns 0, or -1 when ct_del_map is missing. */
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

/* A peer's copy (PL_CT_F_SYNCED) of key k in ct_half: deleted (a flow established or ended
 * here is no longer half-open). A live local entry is left alone. */
static __always_inline void sync_half_drop(const struct ct_key *k, const struct ct_val *hv)
{
	if (hv && (hv->flags & PL_CT_F_SYNCED))
		bpf_map_delete_elem(&ct_half, k);
}

/* PL_SYNC_NEW: a peer's half-open flow into ct_half (not counted in conn_map: half-open flows
 * never are). An earlier synced copy is overwritten (the peer restarted the flow on the
 * tuple); else both entries are inserted with BPF_NOEXIST, the original first, so a flow the
 * datapath creates meanwhile wins. It ages out with the half-open timeout unless the flow's
 * packets (or the peer's EST) establish it. */
static __always_inline void sync_new(struct ct_sync_ev *ev, const struct ct_key *ok,
				     const struct ct_key *rk, struct ct_val *hcur,
				     struct ct_val *hrcur)
{
	int rc;

	asm volatile("" : "+r"(hrcur));   /* no OR of two pointers (see ct_sync_step) */
	if (hcur || hrcur) {   /* synced copies only: live local ones were refused before */
		bpf_map_update_elem(&ct_half, ok, &ev->oval, BPF_ANY);
		bpf_map_update_elem(&ct_half, rk, &ev->rval, BPF_ANY);
		ev->result = PL_SYNC_R_REFRESHED;
		return;
	}
	rc = bpf_map_update_elem(&ct_half, ok, &ev->oval, BPF_NOEXIST);
	if (rc) {
		ev->result = rc == -EEXIST ? PL_SYNC_R_LOCAL : PL_SYNC_R_FULL;
		return;
	}
	rc = bpf_map_update_elem(&ct_half, rk, &ev->rval, BPF_NOEXIST);
	if (rc) {
		bpf_map_delete_elem(&ct_half, ok);
		ev->result = rc == -EEXIST ? PL_SYNC_R_LOCAL : PL_SYNC_R_FULL;
		return;
	}
	ev->result = PL_SYNC_R_INSERTED;
}

/* One flow of pl_ct_sync (a bpf_loop callback). The values come ready from the control plane:
 * local svc_id/ep_idx/ep_gid, PL_CT_F_SYNCED, no cached next hop, time stamps on this node's clock. */
static long ct_sync_step(__u32 i, void *data)
{
	__u32 zero = 0;
	struct ct_sync_req *req = bpf_map_lookup_elem(&ct_sync_map, &zero);
	struct ct_val *cur, *rcur, *hcur, *hrcur;

	if (!req || i >= PL_SYNC_BATCH)
		return 1;
	struct ct_sync_ev *ev = &req->ev[i];
	struct ct_key ok = ev->okey, rk = ev->rkey;

	ev->result = PL_SYNC_R_NONE;
	cur = bpf_map_lookup_elem(&ct_map, &ok);
	rcur = bpf_map_lookup_elem(&ct_map, &rk);
	/* a live local flow on either key wins: never overwritten, never deleted from here */
	if ((cur && !(cur->flags & PL_CT_F_SYNCED)) || (rcur && !(rcur->flags & PL_CT_F_SYNCED))) {
		ev->result = PL_SYNC_R_LOCAL;
		return 0;
	}
	/* the same in the half-open table (a handshake of this node's own in progress) */
	hcur = bpf_map_lookup_elem(&ct_half, &ok);
	hrcur = bpf_map_lookup_elem(&ct_half, &rk);
	if ((hcur && !(hcur->flags & PL_CT_F_SYNCED)) ||
	    (hrcur && !(hrcur->flags & PL_CT_F_SYNCED))) {
		ev->result = PL_SYNC_R_LOCAL;
		return 0;
	}
	if (ev->type == PL_SYNC_NEW) {
		/* established here already (the EST came first): stays. The barrier keeps clang
		 * from testing `cur || rcur` as an OR of two pointers, which the verifier refuses. */
		asm volatile("" : "+r"(rcur));
		if (cur || rcur)
			ev->result = PL_SYNC_R_EXISTS;
		else
			sync_new(ev, &ok, &rk, hcur, hrcur);
		return 0;
	}
	/* EST and DEL: a synced half-open copy of the flow is done with (sync_half_drop, after the
	 * ct_map insert as pl_promote does). While ct_map holds a key the datapath never looks at
	 * ct_half for it, but the copy would come back to life once the established flow is
	 * deleted, and hold the tuple against a new flow. */
	if (ev->type == PL_SYNC_DEL) {
		sync_half_drop(&rk, hrcur);
		sync_half_drop(&ok, hcur);
		if (!cur)
			return 0;
		__u32 gid = cur->ep_gid;
		bpf_map_delete_elem(&ct_map, &rk);
		if (bpf_map_delete_elem(&ct_map, &ok) == 0) {
			conn_closed(gid);
			ev->result = PL_SYNC_R_DELETED;
		}
		return 0;
	}
	if (ev->type != PL_SYNC_EST)
		return 0;
	if (cur) {   /* an earlier copy of this flow: refresh it (counted opened already) */
		if (cur->ep_gid != ev->oval.ep_gid) {
			conn_closed(cur->ep_gid);
			conn_opened(ev->oval.ep_gid);
		}
		bpf_map_update_elem(&ct_map, &ok, &ev->oval, BPF_ANY);
		bpf_map_update_elem(&ct_map, &rk, &ev->rval, BPF_ANY);
		sync_half_drop(&rk, hrcur);
		sync_half_drop(&ok, hcur);
		ev->result = PL_SYNC_R_REFRESHED;
		return 0;
	}
	/* as pl_promote: the original direction first, both with BPF_NOEXIST (a flow the datapath
	 * creates meanwhile wins) */
	int rc = bpf_map_update_elem(&ct_map, &ok, &ev->oval, BPF_NOEXIST);
	if (rc) {
		ev->result = rc == -EEXIST ? PL_SYNC_R_LOCAL : PL_SYNC_R_FULL;
		return 0;
	}
	rc = bpf_map_update_elem(&ct_map, &rk, &ev->rval, BPF_NOEXIST);
	if (rc) {
		bpf_map_delete_elem(&ct_map, &ok);
		ev->result = rc == -EEXIST ? PL_SYNC_R_LOCAL : PL_SYNC_R_FULL;
		return 0;
	}
	conn_opened(ev->oval.ep_gid);
	sync_half_drop(&rk, hrcur);
	sync_half_drop(&ok, hcur);
	ev->result = PL_SYNC_R_INSERTED;
	return 0;
}

/* Run by the control plane to insert (or delete) flows a peer sent, items read from
 * ct_sync_map, results written back to it (ct_sync_ev.result). Returns 0, or -1. */
SEC("syscall")
int pl_ct_sync(void *ctx)
{
	__u32 zero = 0;
	struct ct_sync_req *req = bpf_map_lookup_elem(&ct_sync_map, &zero);

	if (!req)
		return -1;
	__u32 n = req->n;
	if (n > PL_SYNC_BATCH)
		n = PL_SYNC_BATCH;
	bpf_loop(n, ct_sync_step, NULL, 0);
	return 0;
}
