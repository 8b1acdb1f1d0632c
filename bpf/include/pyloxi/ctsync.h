/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Conntrack sync, the datapath's part: a flow's establishment (pl_promote) and its deletion by
 * the datapath (ct_delete_flow_in) are written to the ct_events ring buffer, for the daemon to
 * stream to its peers (src/pyloxi/cluster/ctsync.py). Never on the established fast path: only
 * promotion and deletion emit. BPF_RB_NO_WAKEUP: the daemon drains the ring on its own timer
 * (a wakeup per flow would cost a syscall's worth per event). A full ring drops the event and
 * counts it (PL_ST_SYNC_DROP); the daemon's periodic full resync heals what was lost.
 */
#ifndef PYLOXI_CTSYNC_H
#define PYLOXI_CTSYNC_H

#include "pyloxi/stats.h"
#include "pyloxi/tables.h"

/* Not inlined: one copy of the reserve/copy/submit code, whoever emits. */
static __noinline void sync_emit_est(const struct ct_key *okey, const struct ct_key *rkey,
				     const struct ct_val *oval, const struct ct_val *rval)
{
	struct ct_sync_ev *ev;

	if (!okey || !rkey || !oval || !rval)
		return;
	ev = bpf_ringbuf_reserve(&ct_events, sizeof(*ev), 0);
	if (!ev) {
		count(PL_ST_SYNC_DROP);
		return;
	}
	ev->type = PL_SYNC_EST;
	ev->result = 0;
	ev->okey = *okey;
	ev->rkey = *rkey;
	ev->oval = *oval;
	ev->rval = *rval;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __noinline void sync_emit_del(const struct ct_key *okey, const struct ct_key *rkey)
{
	struct ct_sync_ev *ev;

	if (!okey || !rkey)
		return;
	ev = bpf_ringbuf_reserve(&ct_events, sizeof(*ev), 0);
	if (!ev) {
		count(PL_ST_SYNC_DROP);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = PL_SYNC_DEL;
	ev->okey = *okey;
	ev->rkey = *rkey;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

#endif
