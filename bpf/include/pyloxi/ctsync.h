/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Conntrack sync, the datapath's part: a flow's creation (ct_create, best effort: see
 * sync_emit_new), its establishment (pl_promote) and its deletion by the datapath
 * (ct_delete_flow_in) are written to the ct_events ring buffer, for the daemon to stream to its
 * peers (src/pyloxi/cluster/ctsync.py). Never on the established fast path: only creation,
 * promotion and deletion emit. BPF_RB_NO_WAKEUP: the daemon drains the ring on its own timer
 * (a wakeup per flow would cost a syscall's worth per event). A full ring drops the event and
 * counts it (PL_ST_SYNC_DROP); the daemon's periodic full resync heals what was lost.
 */
#ifndef PYLOXI_CTSYNC_H
#define PYLOXI_CTSYNC_H

#include "pyloxi/stats.h"
#include "pyloxi/tables.h"

/* Not inlined: one copy of the reserve/copy/submit code, whoever emits. */
static __noinline void sync_emit_flow(__u32 type, const struct ct_key *okey,
				      const struct ct_key *rkey, const struct ct_val *oval,
				      const struct ct_val *rval)
{
	struct ct_sync_ev *ev;

	if (!okey || !rkey || !oval || !rval)
		return;
	ev = bpf_ringbuf_reserve(&ct_events, sizeof(*ev), 0);
	if (!ev) {
		count(PL_ST_SYNC_DROP);
		return;
	}
	ev->type = type;
	ev->result = 0;
	ev->layout = PL_SYNC_LAYOUT;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	ev->okey = *okey;
	ev->rkey = *rkey;
	ev->oval = *oval;
	ev->rval = *rval;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __always_inline void sync_emit_est(const struct ct_key *okey, const struct ct_key *rkey,
					  const struct ct_val *oval, const struct ct_val *rval)
{
	sync_emit_flow(PL_SYNC_EST, okey, rkey, oval, rval);
}

/* A new flow (its two half-open entries), so a peer taking over mid-handshake knows it. Best
 * effort: emitted only while the ring's unread data is below 1/PL_SYNC_NEW_ROOM of the ring, so
 * a SYN flood (every spoofed SYN is a new flow) fills at most that part and never takes the
 * room established and delete events need; the rest is counted PL_ST_SYNC_NEW_SKIP. Called
 * once per new flow, never for packets of a known flow. The flow's entries are those ct_create
 * just inserted (sc: the reply key, both values); two arguments keep new_flow's frame small. */
static __noinline void sync_emit_new(const struct ct_key *okey, const struct flow_scratch *sc)
{
	__u64 size = bpf_ringbuf_query(&ct_events, BPF_RB_RING_SIZE);

	if (!sc)
		return;
	if (bpf_ringbuf_query(&ct_events, BPF_RB_AVAIL_DATA) >= size / PL_SYNC_NEW_ROOM) {
		count(PL_ST_SYNC_NEW_SKIP);
		return;
	}
	sync_emit_flow(PL_SYNC_NEW, okey, &sc->rk, &sc->fwd, &sc->rev);
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
	ev->layout = PL_SYNC_LAYOUT;
	ev->okey = *okey;
	ev->rkey = *rkey;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

#endif
