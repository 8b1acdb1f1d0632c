/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Mirror (loxilb's /config/mirror): a copy of the traffic of an interface or of a load-balancer
 * rule, sent out of a mirror port with bpf_clone_redirect. SPAN sends the packet as received,
 * RSPAN with an 802.1Q tag pushed (on the original just for the clone, popped right after).
 *
 * - port mirrors (mirr_port): every packet entering the interface, cloned first thing in the
 *   program, before the packet is parsed;
 * - rule mirrors (mirr_svc): every packet of the rule's flows, both directions, as received
 *   (before NAT): cloned in forward() right before the rewrite.
 * bpf_clone_redirect (and the VLAN push/pop) may move the packet's data, so no packet pointer
 * may be live across mirr_clone: the parse results are values in pkt_map, and every stage
 * after it reloads skb->data (the verifier enforces this). Each clone sent is counted per slot.
 */
#ifndef PYLOXI_MIRROR_H
#define PYLOXI_MIRROR_H

#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include "pyloxi/tables.h"

/* Not inlined: one copy of the clone for every call site (forward() is inlined three times). */
static __noinline int mirr_clone(struct __sk_buff *skb, __u32 slot)
{
	struct mirr_cfg *m = bpf_map_lookup_elem(&mirr_map, &slot);
	struct counters *st;
	__u32 len = skb->len;
	int rc;

	if (!m || !m->ifindex)
		return 0;
	if (m->type == PL_MIRR_RSPAN) {
		if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), m->vlan))
			return 0;
		rc = bpf_clone_redirect(skb, m->ifindex, 0);
		bpf_skb_vlan_pop(skb);   /* the original goes on as it came */
	} else {
		rc = bpf_clone_redirect(skb, m->ifindex, 0);
	}
	if (rc)
		return 0;
	st = bpf_map_lookup_elem(&mirr_stats, &slot);
	if (st) {
		st->packets += 1;
		st->bytes += len;
	}
	return 1;
}

/* A packet entering a mirrored interface (before anything else looks at it). */
static __always_inline void mirr_port_in(struct __sk_buff *skb)
{
	__u32 zero = 0, ifindex = skb->ifindex;
	struct mirr_gate *g = bpf_map_lookup_elem(&mirr_gate, &zero);
	__u32 *slot;

	if (!g || !g->ports)
		return;
	slot = bpf_map_lookup_elem(&mirr_port, &ifindex);
	if (slot)
		mirr_clone(skb, *slot);
}

/* A packet of a flow of service svc_id, before its rewrite. */
static __always_inline void mirr_rule(struct __sk_buff *skb, __u32 svc_id)
{
	__u32 zero = 0;
	struct mirr_gate *g = bpf_map_lookup_elem(&mirr_gate, &zero);
	__u32 *slot;

	if (!g || !g->rules)
		return;
	slot = bpf_map_lookup_elem(&mirr_svc, &svc_id);
	if (slot)
		mirr_clone(skb, *slot);
}

#endif
