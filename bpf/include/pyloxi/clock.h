/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
#ifndef PYLOXI_CLOCK_H
#define PYLOXI_CLOCK_H

#include <bpf/bpf_helpers.h>

#define NSEC_PER_SEC 1000000000ULL

/* Time stamps only need second resolution (idle aging, the next-hop cache): the coarse clock
 * (CLOCK_MONOTONIC at tick resolution) costs a third of bpf_ktime_get_ns. */
static __always_inline __u64 pl_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

#endif
