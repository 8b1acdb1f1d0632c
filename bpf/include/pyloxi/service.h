/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Services: the live version of the service a new flow's destination names, and its allowed
 * sources. */
#ifndef PYLOXI_SERVICE_H
#define PYLOXI_SERVICE_H

#include "pyloxi/tables.h"

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

/* The service of a packet to VIP:port/proto (the tuple `k` as received), or NULL. A marked
 * packet (the firewall's fwMark, or anything before us that set skb->mark) goes to the rule of
 * that block if there is one, else to the rule without a block, as loxilb steers marked
 * traffic (its rule key holds the block). */
static __always_inline struct svc_ver *svc_lookup(const struct ct_key *k, __u32 mark,
						  __u32 *svc_id, __u32 *ver_id)
{
	struct svc_key sk = { .vip = k->daddr, .port = k->dport, .proto = k->proto,
			      .family = k->family, .mark = mark };
	struct svc_val *sv = bpf_map_lookup_elem(&svc_map, &sk);

	if (!sv && mark) {
		sk.mark = 0;
		sv = bpf_map_lookup_elem(&svc_map, &sk);
	}
	if (!sv)
		return NULL;
	*svc_id = sv->svc_id;
	return svc_version(*svc_id, ver_id);
}

/* Endpoint `idx` of a version (ep_pool, see struct svc_cfg), or NULL past its endpoints. */
static __always_inline struct ep_val *svc_ep(const struct svc_cfg *cfg, __u32 idx)
{
	if (idx >= cfg->n_eps || idx >= PL_MAX_EPS)
		return NULL;
	__u32 i = cfg->ep_base + idx;
	return bpf_map_lookup_elem(&ep_pool, &i);
}

/* The endpoint index in slot `s` of a version's slot table (slot_pool), or -1. */
static __always_inline int svc_slot(const struct svc_cfg *cfg, __u32 s)
{
	if (s >= cfg->n_slots)
		return -1;
	__u32 i = cfg->slot_base + s / PL_SLOT_CHUNK;
	struct slot_chunk *c = bpf_map_lookup_elem(&slot_pool, &i);
	return c ? c->idx[s & (PL_SLOT_CHUNK - 1)] : -1;
}

/* May `saddr` open flows to version ver_id of a service? */
static __always_inline int svc_allows(const struct svc_cfg *cfg, __u32 ver_id,
				      const union pl_addr *saddr)
{
	if (!(cfg->flags & PL_SVC_F_ALLOWLIST))
		return 1;
	struct allow_key ak = { .prefixlen = 32 + 128, .ver_id = ver_id, .addr = *saddr };
	return bpf_map_lookup_elem(&allow_map, &ak) != NULL;
}

#endif
