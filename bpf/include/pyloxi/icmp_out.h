/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* What generating an ICMP or ICMPv6 error takes, for both families: the rate limit, and the
 * checksum of the quoted packet. */
#ifndef PYLOXI_ICMP_OUT_H
#define PYLOXI_ICMP_OUT_H

#include "pyloxi/nat.h"
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

/*
 * The one's complement sum of a quote of q bytes (a multiple of 4, at most qmax) whose first
 * hlen bytes (at most hmax) are the quoted IP header, for the checksum of the error carrying it; -1 when the
 * packet is shorter than that. `l4c`: offset in the quote of the quoted L4 checksum, 0 if none.
 *
 * That field is preset: a packet from a local stack (veth) or from GRO is CHECKSUM_PARTIAL, and
 * the device (or the kernel before it) will write a checksum over [its L4 header, end) into the
 * field, which is now inside our message. No helper clears CHECKSUM_PARTIAL, so the field gets
 * the value this fill-in writes back unchanged: the fill-in stores ~(R + F) over the L4 bytes R
 * and the field F, a fixed point when 2F = ~R, i.e. F = ~R rotated right by one (one's
 * complement doubling is a rotation). On other skbs the fill-in never happens and the value is
 * harmless.
 */
static __always_inline int quote_sum(void *quote, void *data_end, __u32 hlen, __u32 hmax,
				     __u32 q, __u32 qmax, __u32 l4c, __u64 *out)
{
	__u16 *f = quote + (l4c & 0x7f);
	__u64 sum_ip = 0, sum_all = 0, sum_l4;

	if (l4c) {
		if ((void *)(f + 1) > data_end)
			return -1;
		*f = 0;
	}
	for (__u32 i = 0; i < hmax / 4; i++) {
		if (i >= hlen / 4)
			break;
		__u32 *w = quote + i * 4;
		if ((void *)(w + 1) > data_end)
			return -1;
		sum_ip += *w;
	}
	for (__u32 i = 0; i < qmax / 4; i++) {
		if (i >= q / 4)
			break;
		__u32 *w = quote + i * 4;
		if ((void *)(w + 1) > data_end)
			return -1;
		sum_all += *w;
	}
	sum_l4 = csum_add(csum_fold64(sum_all), (__u16)~csum_fold64(sum_ip));
	if (l4c) {
		__u16 t = ~csum_fold64(sum_l4);
		__u16 f0 = (t >> 1) | ((t & 1) << 15);

		if ((void *)(f + 1) > data_end)
			return -1;
		*f = f0;
		sum_l4 += f0;
	}
	*out = sum_ip + sum_l4;
	return 0;
}

#endif
