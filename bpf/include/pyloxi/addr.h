/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Addresses in the one layout of both families (union pl_addr in maps.h): IPv4 is stored
 * IPv4-mapped, ::ffff:a.b.c.d, with the 4 bytes of the IPv4 header field in w[3]. */
#ifndef PYLOXI_ADDR_H
#define PYLOXI_ADDR_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include "pyloxi/maps.h"

#define PL_V4MAPPED_W2 bpf_htonl(0xffff)

/* Store the IPv4 address `ip4` (network order, as in the header) IPv4-mapped. */
static __always_inline void addr_set_v4(union pl_addr *a, __u32 ip4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = PL_V4MAPPED_W2;
	a->w[3] = ip4;
}

/* The IPv4 address of an IPv4-mapped address (network order). */
static __always_inline __u32 addr_v4(const union pl_addr *a)
{
	return a->w[3];
}

static __always_inline int addr_eq(const union pl_addr *a, const union pl_addr *b)
{
	return ((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) |
		(a->w[3] ^ b->w[3])) == 0;
}

static __always_inline int addr_is_zero(const union pl_addr *a)
{
	return (a->w[0] | a->w[1] | a->w[2] | a->w[3]) == 0;
}

/* 32 bits of an address for hashing: the XOR of its words, with the mapped prefix cancelled,
 * so an IPv4 address hashes as its 4 bytes did before both families shared a layout (the
 * same Maglev/persist selection for the same client). */
static __always_inline __u32 addr_fold(const union pl_addr *a)
{
	return a->w[0] ^ a->w[1] ^ a->w[2] ^ a->w[3] ^ PL_V4MAPPED_W2;
}

/* The route lookup of a packet from s to d of `family`. */
static __always_inline void fib_addrs(struct bpf_fib_lookup *fib, __u8 family,
				      const union pl_addr *s, const union pl_addr *d)
{
	if (family == PL_AF_INET6) {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, s, 16);
		__builtin_memcpy(fib->ipv6_dst, d, 16);
	} else {
		fib->family = AF_INET;
		fib->ipv4_src = addr_v4(s);
		fib->ipv4_dst = addr_v4(d);
	}
}

#endif
