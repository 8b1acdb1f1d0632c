/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Forwarding after the rewrite: the kernel's FIB and neighbour tables, no mirrors of our own. */
#ifndef PYLOXI_FWD_H
#define PYLOXI_FWD_H

#include <linux/pkt_cls.h>
#include "pyloxi/parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline int set_macs(struct __sk_buff *skb, const __u8 *smac, const __u8 *dmac)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return 0;
}

/* Route the (already rewritten) packet of flow entry `cache` and hand it to the egress
 * device; a resolved next hop is remembered in the entry for PL_FIB_CACHE_NS.
 * Not inlined: its bpf_fib_lookup params would otherwise sit in every caller's stack frame.
 * Returns the TC verdict; *passed is set when the kernel has to route the packet. */
static __noinline int forward(struct __sk_buff *skb, const struct pkt *p, struct ct_val *cache,
			      __u64 now, __u32 *passed)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	if (!cache)
		return TC_ACT_SHOT;
	if (cache->fib_ifindex && now - cache->fib_ns < PL_FIB_CACHE_NS) {
		if (set_macs(skb, cache->fib_smac, cache->fib_dmac))
			return TC_ACT_SHOT;
		return bpf_redirect(cache->fib_ifindex, 0);
	}
	fib.family = AF_INET;
	fib.ipv4_src = cache->nat_saddr;
	fib.ipv4_dst = cache->nat_daddr;
	fib.l4_protocol = p->key.proto;
	/* tot_len stays 0: the kernel then checks the MTU against the skb itself, GSO-aware */
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (set_macs(skb, fib.smac, fib.dmac))
			return TC_ACT_SHOT;
		__builtin_memcpy(cache->fib_smac, fib.smac, ETH_ALEN);
		__builtin_memcpy(cache->fib_dmac, fib.dmac, ETH_ALEN);
		cache->fib_ifindex = fib.ifindex;
		cache->fib_ns = now;
		return bpf_redirect(fib.ifindex, 0);
	}
	/* Local destination, no route, MTU exceeded...: the kernel routes the rewritten packet
	 * itself (and sends whatever ICMP error applies). */
	*passed = 1;
	return TC_ACT_OK;
}

#endif
