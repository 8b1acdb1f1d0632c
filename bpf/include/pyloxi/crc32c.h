/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * SCTP's CRC32c (RFC 4960 Appendix B), updated incrementally when the ports change.
 *
 * The CRC is linear over GF(2): for two packets of the same length L that differ only in
 * their first 4 bytes (the ports) by d, CRC_new = CRC_old ^ crc0(d, 0 x (L - 4)), where crc0
 * has no initial value and no final xor. In the reflected domain (bit 31 is x^0) that term
 * is d * x^(8L) mod P, d being the 4 bytes read little-endian. x^(8L) is a product over the
 * bits of L of x^(8 * 2^k) mod P (the constants below, computed offline), each product one
 * 32-step carry-less multiplication: at most 17 of them for a 64 KiB packet, and only for the
 * packets whose ports change.
 */
#ifndef PYLOXI_CRC32C_H
#define PYLOXI_CRC32C_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the CRC32c fix-up reads the ports and the checksum field as little-endian words"
#endif

#define PL_CRC32C_POLY 0x82F63B78u   /* Castagnoli, reflected */
#define PL_CRC32C_ONE  0x80000000u   /* x^0 in the reflected domain */

/* a * b mod P in the reflected domain (a global function: verified once, bounded loop) */
__noinline __u32 pl_crc32c_mul(__u32 a, __u32 b)
{
	__u32 prod = 0;

	for (int i = 0; i < 32; i++) {
		prod ^= b & -(a >> 31);
		b = (b >> 1) ^ (PL_CRC32C_POLY & -(b & 1));
		a <<= 1;
	}
	return prod;
}

/* x^(8 * 2^k) mod P */
static __always_inline __u32 crc32c_x8pow2(int k)
{
	switch (k) {
	case 0:  return 0x00800000;
	case 1:  return 0x00008000;
	case 2:  return 0x82f63b78;
	case 3:  return 0x6ea2d55c;
	case 4:  return 0x18b8ea18;
	case 5:  return 0x510ac59a;
	case 6:  return 0xb82be955;
	case 7:  return 0xb8fdb1e7;
	case 8:  return 0x88e56f72;
	case 9:  return 0x74c360a4;
	case 10: return 0xe4172b16;
	case 11: return 0x0d65762a;
	case 12: return 0x35d73a62;
	case 13: return 0x28461564;
	case 14: return 0xbf455269;
	}
	return 0xe2ea32dc;
}

/* The change of the CRC32c of an SCTP packet of `len` bytes (common header included) whose
 * first 4 bytes change by `diff` (old ^ new, read little-endian). */
static __always_inline __u32 crc32c_port_delta(__u32 diff, __u32 len)
{
	__u32 xp = PL_CRC32C_ONE;

#pragma unroll
	for (int k = 0; k < 16; k++)
		if (len & (1u << k))
			xp = pl_crc32c_mul(xp, crc32c_x8pow2(k));
	return pl_crc32c_mul(xp, diff);
}

#endif
