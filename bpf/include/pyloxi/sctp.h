/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * SCTP: association states in conntrack and multihoming.
 *
 * States. Each packet's first chunk sets a PL_CT_SC_* bit on its direction's entry (as loxilb,
 * which looks at the first chunk only: COOKIE-ECHO and COOKIE-ACK may carry DATA behind them,
 * INIT, INIT-ACK and SHUTDOWN-COMPLETE travel alone). A flow stays half-open (ct_half, LRU)
 * until the association is up: a COOKIE-ACK, or other chunks (DATA, HEARTBEAT ...) both ways
 * (a secondary path, or a flow picked up again, has no handshake of its own). ABORT or
 * SHUTDOWN-COMPLETE close it: its tuple may then be reused by a new INIT (conntrack.h) or taken
 * over by a new flow (pl_reclaim). The control plane names the states and ages them.
 *
 * Multihoming. The endpoint's INIT-ACK carries its initiate tag, which every later packet to the
 * endpoint carries as its verification tag, on whatever path: assoc_map remembers (service,
 * tag) -> endpoint, so a packet of the association that reaches a secondary VIP without a
 * conntrack entry (client address 2 -> VIP 2) goes to the same endpoint, with entries of its
 * own. The endpoint's IPv4 address parameters in the INIT-ACK are rewritten to the service's
 * VIPs (primary first), so the client's alternate paths go to the LB and never straight to an
 * endpoint address (CRC32c updated incrementally, crc32c.h).
 */
#ifndef PYLOXI_SCTP_H
#define PYLOXI_SCTP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pyloxi/crc32c.h"
#include "pyloxi/ct.h"
#include "pyloxi/maps.h"
#include "pyloxi/parse.h"
#include "pyloxi/tables.h"

#define SCTP_DATA              0
#define SCTP_INIT              1
#define SCTP_INIT_ACK          2
#define SCTP_ABORT             6
#define SCTP_SHUTDOWN          7
#define SCTP_SHUTDOWN_ACK      8
#define SCTP_COOKIE_ECHO       10
#define SCTP_COOKIE_ACK        11
#define SCTP_SHUTDOWN_COMPLETE 14
#define SCTP_PARAM_IPV4        5

#define SCTP_CHUNK_OFF    12      /* first chunk, after the common header */
#define SCTP_INIT_FIXED   20      /* INIT / INIT-ACK chunk header and fixed fields */
#define SCTP_MAX_PARAMS   16      /* INIT-ACK parameters looked at (cookie, addresses ...) */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_MH_ENTRIES);
	__type(key, __u32);
	__type(value, struct mh_val);
	PINNED;
} mh_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PL_ASSOC_ENTRIES);
	__type(key, struct assoc_key);
	__type(value, struct assoc_val);
	PINNED;
} assoc_map SEC(".maps");

/* The conntrack bits of a packet whose first chunk is `chunk`. */
static __always_inline __u32 sctp_bits(__u8 chunk)
{
	switch (chunk) {
	case SCTP_INIT:              return PL_CT_SEEN | PL_CT_SC_INIT;
	case SCTP_INIT_ACK:          return PL_CT_SEEN | PL_CT_SC_INITACK;
	case SCTP_COOKIE_ECHO:       return PL_CT_SEEN | PL_CT_SC_COOKIE;
	case SCTP_COOKIE_ACK:        return PL_CT_SEEN | PL_CT_SC_COOKIEACK;
	case SCTP_SHUTDOWN:          return PL_CT_SEEN | PL_CT_SC_SHUT;
	case SCTP_SHUTDOWN_ACK:      return PL_CT_SEEN | PL_CT_SC_SHUTACK;
	case SCTP_SHUTDOWN_COMPLETE: return PL_CT_SEEN | PL_CT_SC_SHUTDONE;
	case SCTP_ABORT:             return PL_CT_SEEN | PL_CT_SC_ABORT;
	case PL_SCTP_NONE:           return PL_CT_SEEN;
	}
	return PL_CT_SEEN | PL_CT_SC_DATA;
}

/* An association is over once either side aborted it or its shutdown completed. */
#define PL_ASSOC_SHIFT 10   /* log2(PL_MAX_EPS): sctp_assoc_ep's packing */
_Static_assert(1 << PL_ASSOC_SHIFT == PL_MAX_EPS, "assoc packing");

static __always_inline int sctp_closed(__u32 a, __u32 b)
{
	return ((a | b) & (PL_CT_SC_ABORT | PL_CT_SC_SHUTDONE)) != 0;
}

/* The endpoint of an association already set up with service svc_id (the packet's verification
 * tag is the endpoint's initiate tag) and the port the endpoint sees the client on, packed as
 * port << PL_ASSOC_SHIFT | endpoint index (no pointer argument: a stack slot in new_flow's frame is what
 * the 512-byte stack cannot spare); -1 when there is none. INIT carries tag 0 and is always
 * a new association. */
static __noinline int sctp_assoc_ep(const struct pkt *p, __u32 svc_id)
{
	struct assoc_key ak = { .svc_id = svc_id, .vtag = p->sctp_vtag };
	struct assoc_val *av;

	if (p->key.proto != IPPROTO_SCTP || p->sctp_chunk == SCTP_INIT || !p->sctp_vtag)
		return -1;
	av = bpf_map_lookup_elem(&assoc_map, &ak);
	if (!av)
		return -1;
	return (int)((__u32)av->nat_sport << PL_ASSOC_SHIFT | (av->ep_idx & (PL_MAX_EPS - 1)));
}

/* A packet of a path sharing its reply entry pv with other paths (original entry v, marked
 * PL_CT_SC_MPATH): the endpoint's answers go back on this packet's path, from the VIP it went
 * to, to the client address it came from (fullnat: the endpoint cannot pick the path, so the
 * client's latest choice does). Aligned 32-bit stores (IPv4), so a reader sees one address or
 * the other, never a mix; the cached next hop is dropped when the client address changes. */
static __always_inline void sctp_follow_path(const struct pkt *p, struct ct_val *pv)
{
	if (!pv || pv->dir != PL_DIR_REPLY || p->key.family != PL_AF_INET ||
	    pv->nat_family != PL_AF_INET)
		return;   /* IPv4 paths only (what parse.h hands over today) */
	if (pv->nat_saddr.w[3] != p->key.daddr.w[3])
		pv->nat_saddr.w[3] = p->key.daddr.w[3];
	if (pv->nat_daddr.w[3] != p->key.saddr.w[3]) {
		pv->nat_daddr.w[3] = p->key.saddr.w[3];
		pv->fib_ifindex = 0;
	}
}

/*
 * A new path of a known association (sc->fwd: its rewrite, from nat_flow) whose endpoint-side
 * tuple is already a flow of that association: the client reaches a secondary VIP from the
 * address of another path (usrsctp sends everything from one address), or the source is
 * translated (fullnat/onearm: the endpoint must see the association's NAT port). The endpoint
 * cannot tell the paths apart, so the packet joins that flow: an original-direction entry of
 * its own (its VIP) whose partner is the flow's reply entry, in the same table. Both original
 * entries are marked PL_CT_SC_MPATH: the endpoint's packets then go back from the VIP the
 * client last sent to (sctp_follow_path), which is on a path the client can reach (a client
 * whose primary path died has no route back from the primary VIP: rp_filter drops those).
 * The caller has set sc->fwd's service, endpoint index, mode and time stamps. Returns 1 with
 * *vp the new entry, 0 when the path needs a flow of its own (ct_create). Not inlined: its
 * frame would add to new_flow's, which the 512-byte stack cannot afford.
 */
static __noinline int sctp_path_join(const struct pkt *p, struct flow_scratch *sc,
				     __u16 nat_sport, int snat, struct ct_val **vp)
{
	struct ct_val *fv, *rv;
	__u32 svc_id, ep_idx;
	int half = 0;

	if (!p || !sc || !vp)
		return 0;
	fv = &sc->fwd;
	svc_id = fv->svc_id;
	ep_idx = fv->ep_idx;

	if (snat)
		fv->nat_sport = nat_sport;
	partner_key(fv, p->key.proto, &sc->rk);
	rv = bpf_map_lookup_elem(&ct_map, &sc->rk);
	if (!rv) {
		rv = bpf_map_lookup_elem(&ct_half, &sc->rk);
		half = 1;
	}
	if (!rv || rv->svc_id != svc_id || rv->ep_idx != ep_idx || rv->dir != PL_DIR_REPLY ||
	    (rv->seen & (PL_CT_SC_ABORT | PL_CT_SC_SHUTDONE)))
		return 0;
	fv->dir = PL_DIR_ORIG;
	fv->seen = sctp_bits(p->sctp_chunk) | PL_CT_SC_MPATH | PL_CT_SC_JOIN;
	if (half ? bpf_map_update_elem(&ct_half, &p->key, fv, BPF_NOEXIST)
		 : bpf_map_update_elem(&ct_map, &p->key, fv, BPF_NOEXIST))
		return 0;
	/* the flow's own original entry (the reply entry's partner) */
	partner_key(rv, p->key.proto, &sc->ok);
	struct ct_val *ov = half ? bpf_map_lookup_elem(&ct_half, &sc->ok)
				 : bpf_map_lookup_elem(&ct_map, &sc->ok);
	if (ov && !(ov->seen & PL_CT_SC_MPATH))
		__sync_fetch_and_or(&ov->seen, PL_CT_SC_MPATH);
	/* this path's packet, the latest: the endpoint's answers go back on its path */
	sctp_follow_path(p, rv);
	*vp = half ? bpf_map_lookup_elem(&ct_half, &p->key) : bpf_map_lookup_elem(&ct_map, &p->key);
	return *vp != NULL;
}

/* The walk over an INIT-ACK's parameters (pl_sctp_param), on the stack of pl_sctp_init_ack. */
struct sctp_walk {
	__u32 l4off;
	__u32 off;            /* of the next parameter, from the common header */
	__u32 end;            /* of the chunk (at most the packet) */
	__u32 slen;           /* the SCTP packet's length */
	__u32 used;           /* address parameters seen */
	__u32 nvip;
	__u32 delta;          /* CRC32c change so far */
	__u32 vip[1 + PL_MH_MAX];
};

/* One parameter: an IPv4 address parameter gets the next VIP. A global function, verified once
 * on its own: a loop over parameters with this body inlined branches on every one of them,
 * and the verifier gives up on the paths. Returns 1 to go on, 0 at the end, -1 on failure. */
__noinline int pl_sctp_param(struct __sk_buff *skb, struct sctp_walk *w)
{
	__u32 ph, old, new, off;
	__u16 ptype, plen;

	if (!skb || !w)
		return -1;
	off = w->off;
	if (off + 4 > w->end || bpf_skb_load_bytes(skb, w->l4off + off, &ph, 4))
		return 0;
	ptype = bpf_ntohs((__u16)ph);
	plen = bpf_ntohs((__u16)(ph >> 16));
	if (plen < 4)
		return 0;
	w->off = off + (((__u32)plen + 3) & ~3u);
	if (ptype != SCTP_PARAM_IPV4 || plen != 8 || off + 8 > w->end ||
	    bpf_skb_load_bytes(skb, w->l4off + off + 4, &old, 4))
		return 1;
	new = w->vip[(w->used < w->nvip ? w->used : 0) & PL_MH_MAX];
	w->used++;
	if (new == old)
		return 1;
	if (bpf_skb_store_bytes(skb, w->l4off + off + 4, &new, 4, 0))
		return -1;
	/* 4 bytes at offset off + 4 of an slen-byte packet change as the first 4 bytes of an
	 * (slen - off - 4)-byte packet would (crc32c.h) */
	w->delta ^= crc32c_port_delta(old ^ new, w->slen - off - 4);
	return 1;
}

/* Rewrite the IPv4 address parameters of the INIT or INIT-ACK of `p` to w->vip[] (w->l4off and
 * w->vip/nvip set by the caller) and fix the CRC32c. Returns 0, or -1 on a failed store. */
static __always_inline int sctp_rewrite_params(struct __sk_buff *skb, const struct pkt *p,
					       struct sctp_walk *w)
{
	__u32 hdr, crc;
	__u16 ip_len;
	int rc;

	if (bpf_skb_load_bytes(skb, w->l4off + SCTP_CHUNK_OFF, &hdr, 4) ||
	    bpf_skb_load_bytes(skb, (p->l3off & 0x7f) + 2, &ip_len, 2))
		return 0;
	/* the SCTP packet: IP total length minus the IP header; the chunk: its length field */
	w->slen = bpf_ntohs(ip_len) - (w->l4off - (p->l3off & 0x7f));
	w->end = SCTP_CHUNK_OFF + bpf_ntohs((__u16)(hdr >> 16));
	if (w->end > w->slen)
		w->end = w->slen;
	w->off = SCTP_CHUNK_OFF + SCTP_INIT_FIXED;
	for (int i = 0; i < SCTP_MAX_PARAMS; i++) {
		rc = pl_sctp_param(skb, w);
		if (rc < 0)
			return -1;
		if (!rc)
			break;
	}
	if (!w->delta || bpf_skb_load_bytes(skb, w->l4off + 8, &crc, 4))
		return 0;
	if (crc) {   /* zero: the CRC is still to be computed (offload), over the new bytes */
		crc ^= w->delta;
		if (bpf_skb_store_bytes(skb, w->l4off + 8, &crc, 4, 0))
			return -1;
	}
	return 0;
}

/*
 * An INIT-ACK from endpoint entry v's endpoint (reply direction), before its tuple is rewritten:
 * remember the association's endpoint by its initiate tag, and rewrite the endpoint's IPv4
 * address parameters to the service's VIPs (primary first; more endpoint addresses than VIPs
 * get the primary again, so no endpoint address ever reaches the client). A global function:
 * it runs once per association. Returns 0, or -1 when the packet could not be rewritten.
 */
__noinline int pl_sctp_init_ack(struct __sk_buff *skb, const struct pkt *p,
				 const struct ct_val *v, __u64 now)
{
	struct sctp_walk w = {};
	struct assoc_key ak = {};
	struct assoc_val av = {};
	struct mh_val *mh;
	__u32 tag;

	if (!skb || !p || !v)
		return -1;
	w.l4off = p->l4off & 0x7f;
	if (bpf_skb_load_bytes(skb, w.l4off + SCTP_CHUNK_OFF + 4, &tag, 4))
		return 0;   /* not a whole INIT-ACK: forwarded as it is */
	ak.svc_id = v->svc_id;
	ak.vtag = tag;
	av.created_ns = now;
	av.ep_idx = v->ep_idx;
	av.nat_sport = p->key.dport;
	bpf_map_update_elem(&assoc_map, &ak, &av, BPF_ANY);

	/* IPv4 address parameters of an IPv4 packet to an IPv4 client only (the walk reads the
	 * IPv4 header; IPv6 VIPs would need type 6 parameters) */
	if (p->key.family != PL_AF_INET || v->nat_family != PL_AF_INET)
		return 0;
	mh = bpf_map_lookup_elem(&mh_map, &ak.svc_id);
	if (mh) {
		w.nvip = mh->n;
		for (int i = 0; i <= PL_MH_MAX; i++)
			w.vip[i] = mh->vip[i].w[3];
	} else {
		w.nvip = 1;
		w.vip[0] = addr_v4(&v->nat_saddr);
	}
	return sctp_rewrite_params(skb, p, &w);
}

/*
 * A client's INIT leaving with a translated source (fullnat, onearm; entry v): its IPv4 address
 * parameters become that source, so the endpoint knows the association by the LB's address
 * only and never sends to a client address directly (which the LB, seeing an endpoint's packet
 * without conntrack, would drop). The endpoint sees one path; the LB follows the client's
 * paths (sctp_path_join). Returns 0, or -1 when the packet could not be rewritten.
 */
__noinline int pl_sctp_init_out(struct __sk_buff *skb, const struct pkt *p,
				const struct ct_val *v)
{
	struct sctp_walk w = {};

	if (!skb || !p || !v)
		return -1;
	if (p->key.family != PL_AF_INET || v->nat_family != PL_AF_INET)
		return 0;
	w.l4off = p->l4off & 0x7f;
	w.nvip = 1;
	w.vip[0] = addr_v4(&v->nat_saddr);
	return sctp_rewrite_params(skb, p, &w);
}

#endif
