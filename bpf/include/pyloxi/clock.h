/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
#ifndef PYLOXI_CLOCK_H
#define PYLOXI_CLOCK_H

#include <bpf/bpf_helpers.h>
#include "pyloxi/maps.h"

#define NSEC_PER_SEC 1000000000ULL

/* Time stamps only need second resolution (idle aging, the next-hop cache): the coarse clock
 * (CLOCK_MONOTONIC at tick resolution) costs a third of bpf_ktime_get_ns. */
static __always_inline __u64 pl_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* Is the next hop cached in `v` (ct_val.fib_tick) younger than PL_FIB_CACHE_NS at `now`?
 * Signed: XDP's clock (xdp_now, read once a jiffy) may be a tick behind the one TC cached
 * the hop with, and a hop cached "in the future" is fresh. */
static __always_inline int pl_fib_fresh(const struct ct_val *v, __u64 now)
{
	return (__s32)((__u32)(now >> PL_FIB_TICK_SHIFT) - v->fib_tick) < (__s32)PL_FIB_CACHE_TICKS;
}

#endif
