/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * SCTP multihoming, the endpoint's side (default mode): an endpoint sends HEARTBEATs to every
 * address the client's INIT listed, from the start, and may send there before the client ever
 * used that path. Such a packet (endpoint ip:port -> client address 2) finds no flow and would
 * be dropped as the reply of a lost flow (pl_reply_miss). The client's INIT is remembered
 * (rassoc_map, by the endpoint and the client's initiate tag, which the endpoint's packets
 * carry), and that packet opens the path as the client would have: a flow client address 2 ->
 * VIP, created by ct_create, whose reply entry is the packet's own tuple. Under fullnat and
 * onearm the endpoint never learns the client's addresses (sctp.h rewrites the INIT).
 * Needs nat.h, service.h and ct_create.h, hence a header of its own after them.
 */
#ifndef PYLOXI_SCTP_FLOW_H
#define PYLOXI_SCTP_FLOW_H

#include "pyloxi/ct_create.h"
#include "pyloxi/nat.h"
#include "pyloxi/sctp.h"
#include "pyloxi/service.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PL_ASSOC_ENTRIES);
	__type(key, struct rassoc_key);
	__type(value, struct rassoc_val);
	PINNED;
} rassoc_map SEC(".maps");

/* A client's INIT that opened flow entry v (original direction) without a translated source:
 * remember it for the endpoint's packets to the client's other addresses. Global: verified
 * once. Returns 0. */
__noinline int pl_sctp_init_seen(struct __sk_buff *skb, const struct pkt *p,
				 const struct ct_val *v)
{
	struct rassoc_key rk = {};
	struct rassoc_val rv = {};
	__u32 tag;

	if (!skb || !p || !v || p->key.family != PL_AF_INET ||
	    bpf_skb_load_bytes(skb, (p->l4off & 0x7f) + SCTP_CHUNK_OFF + 4, &tag, 4))
		return 0;
	rk.ep = v->nat_daddr;
	rk.vtag = tag;
	rk.ep_port = v->nat_dport;
	rk.family = v->nat_family;
	rv.vip = p->key.daddr;
	rv.svc_id = v->svc_id;
	rv.vport = p->key.dport;
	rv.ep_idx = v->ep_idx;
	bpf_map_update_elem(&rassoc_map, &rk, &rv, BPF_ANY);
	return 0;
}

/* An SCTP packet `p` from an endpoint that no flow knows: if it belongs to an association a
 * client opened (rassoc_map), create the flow of the client address it goes to (ct_half).
 * Returns 0 when created (the caller looks p's key up again), -1 otherwise. */
__noinline int pl_sctp_ep_path(struct __sk_buff *skb, const struct pkt *p)
{
	struct rassoc_key rk = {};
	struct rassoc_val *rv;
	struct flow_scratch *sc;
	struct svc_ver *ver;
	struct ct_val *v;
	struct ep_val *ep;
	struct pkt fp;
	__u32 ver_id;

	if (!skb || !p || p->key.proto != IPPROTO_SCTP || p->key.family != PL_AF_INET ||
	    p->sctp_chunk == SCTP_INIT || p->sctp_chunk == SCTP_INIT_ACK || !p->sctp_vtag)
		return -1;
	rk.ep = p->key.saddr;
	rk.vtag = p->sctp_vtag;
	rk.ep_port = p->key.sport;
	rk.family = p->key.family;
	rv = bpf_map_lookup_elem(&rassoc_map, &rk);
	if (!rv)
		return -1;
	ver = svc_version(rv->svc_id, &ver_id);
	if (!ver || ver->cfg.mode != PL_MODE_DEFAULT)
		return -1;
	ep = svc_ep(&ver->cfg, rv->ep_idx);
	if (!ep || !addr_eq(&ep->ip, &p->key.saddr))
		return -1;   /* the endpoint index went to another endpoint since */
	/* the packet the client would have sent on that path: address 2 -> the VIP */
	fp = *p;
	fp.key.saddr = p->key.daddr;
	fp.key.daddr = rv->vip;
	fp.key.sport = p->key.dport;
	fp.key.dport = rv->vport;
	fp.sctp_chunk = PL_SCTP_NONE;
	fp.sctp_vtag = 0;
	sc = flow_nat(&fp, ep, &ver->cfg);
	if (!sc)
		return -1;
	if (sc->fwd.nat_dport != p->key.sport)
		return -1;   /* not the tuple this packet has */
	if (ct_create(skb, 0, &fp, sc, rv->svc_id, rv->ep_idx, ep->gid, PL_MODE_DEFAULT, 0, 0,
		      pl_now(), &v) != PL_CONTINUE)
		return -1;
	return 0;
}

#endif
