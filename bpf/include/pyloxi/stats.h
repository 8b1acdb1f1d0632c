/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * What the datapath counts: events (stats_map, enum pl_stat), and per endpoint its traffic
 * (ep_stats, per CPU) and its established flows (conn_map, atomics: read across CPUs by least
 * connections).
 */
#ifndef PYLOXI_STATS_H
#define PYLOXI_STATS_H

#include "pyloxi/tables.h"

static __always_inline void count(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&stats_map, &reason);
	if (v)
		*v += 1;
}

/* Per endpoint, by its counter id (ep_val.gid, carried by each conntrack entry): the counters
 * stay with the endpoint while versions of its service come and go. */
static __always_inline void account(const struct ct_val *v, __u32 len)
{
	__u32 gid = v->ep_gid;
	struct counters *c = bpf_map_lookup_elem(&ep_stats, &gid);
	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

/* Established flows only: half-open ones may vanish by LRU eviction without a trace. */
static __always_inline void conn_opened(__u32 gid)
{
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->opened, 1);
}

static __always_inline void conn_closed(__u32 gid)
{
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);
	if (c)
		__sync_fetch_and_add(&c->closed, 1);
}

static __always_inline __u64 conn_active(__u32 gid)
{
	struct ep_conn *c = bpf_map_lookup_elem(&conn_map, &gid);

	return c ? c->opened - c->closed : 0;
}

/* A new flow of service svc_id (svc_new, per CPU). */
static __always_inline void svc_count_new(__u32 svc_id)
{
	__u64 *nf = bpf_map_lookup_elem(&svc_new, &svc_id);
	if (nf)
		*nf += 1;
}

#endif
