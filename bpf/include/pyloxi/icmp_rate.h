/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* The rate limit of the ICMP and ICMPv6 errors the datapath generates. */
#ifndef PYLOXI_ICMP_RATE_H
#define PYLOXI_ICMP_RATE_H

#include "pyloxi/tables.h"

#define PL_NS_PER_TOKEN   (1000000000ULL / PL_ICMP_RATE)

/* Per-CPU token bucket for generated errors. */
static __always_inline int icmp_allow(void)
{
	__u32 zero = 0;
	struct icmp_bucket *b = bpf_map_lookup_elem(&icmp_rate, &zero);
	__u64 now = bpf_ktime_get_ns(), add;

	if (!b)
		return 0;
	/* a clock behind the bucket (never in the datapath; user space may set it) grants nothing */
	add = now > b->last_ns ? (now - b->last_ns) / PL_NS_PER_TOKEN : 0;
	if (add) {
		if (b->tokens + add >= PL_ICMP_BURST) {
			b->tokens = PL_ICMP_BURST;
			b->last_ns = now;
		} else {
			b->tokens += add;
			b->last_ns += add * PL_NS_PER_TOKEN;
		}
	}
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

#endif
