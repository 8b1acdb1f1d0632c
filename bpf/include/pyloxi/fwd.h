/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Forwarding after the rewrite: the kernel's FIB and neighbour tables, no mirrors of our own. */
#ifndef PYLOXI_FWD_H
#define PYLOXI_FWD_H

#include "pyloxi/parse.h"
#include "pyloxi/verdict.h"

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

/* What next_hop() found for a packet. */
enum pl_nh {
	NH_CACHED = 0,   /* the entry's cached next hop (fib_ifindex, fib_smac/dmac) */
	NH_NEIGH,        /* no neighbour yet: bpf_redirect_neigh to hop.ifindex via hop.nh */
	NH_PASS,         /* local destination, no route...: the kernel routes it */
	NH_TOO_BIG,      /* longer than the egress MTU (hop.mtu) allows */
};

struct hop {
	__u32 ifindex;
	__u32 nh;
	__u32 mtu;
};

/* The exact check, for packets longer than the cached MTU: GSO packets are fine when their
 * segments fit (BPF_MTU_CHK_SEGS), which a plain length compare cannot tell. */
static __always_inline int too_big(struct __sk_buff *skb, __u32 ifindex, __u32 *mtu)
{
	__u32 m = 0;
	int rc = bpf_check_mtu(skb, ifindex, &m, 0, BPF_MTU_CHK_SEGS);

	*mtu = m;
	return rc == BPF_MTU_CHK_RET_FRAG_NEEDED || rc == BPF_MTU_CHK_RET_SEGS_TOOBIG;
}

/*
 * The next hop of flow entry `cache`, called BEFORE the rewrite: the lookup uses the entry's
 * post-NAT addresses, and a packet that does not fit the egress must still carry the header
 * its sender sent (the 'fragmentation needed' quotes it). A resolved next hop and its device
 * MTU are remembered in the entry for PL_FIB_CACHE_NS; on that fast path the MTU costs one
 * compare (skb->len against the cached MTU) and the helper only runs for longer packets.
 * Not inlined: its bpf_fib_lookup params would otherwise sit in every caller's stack frame.
 */
static __noinline int next_hop(struct __sk_buff *skb, const struct pkt *p, struct ct_val *cache,
			       __u64 now, struct hop *out)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	if (!cache || !out)
		return NH_PASS;
	if (cache->fib_ifindex && now - cache->fib_ns < PL_FIB_CACHE_NS) {
		if (skb->len > cache->fib_mtu + ETH_HLEN &&
		    too_big(skb, cache->fib_ifindex, &out->mtu))
			return NH_TOO_BIG;
		return NH_CACHED;
	}
	fib.family = AF_INET;
	fib.ipv4_src = addr_v4(&cache->nat_saddr);
	fib.ipv4_dst = addr_v4(&cache->nat_daddr);
	fib.l4_protocol = p->key.proto;
	/* tot_len stays 0: the kernel checks the skb against the device MTU and returns that MTU
	 * in mtu_result (route MTUs are not consulted: the redirect bypasses them too) */
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		out->ifindex = fib.ifindex;
		out->nh = fib.ipv4_dst;
		if (too_big(skb, fib.ifindex, &out->mtu))
			return NH_TOO_BIG;
		return NH_NEIGH;
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		__u32 mtu = fib.mtu_result;

		__builtin_memcpy(cache->fib_smac, fib.smac, ETH_ALEN);
		__builtin_memcpy(cache->fib_dmac, fib.dmac, ETH_ALEN);
		cache->fib_ifindex = fib.ifindex;
		cache->fib_mtu = mtu;
		cache->fib_ns = now;
		if (skb->len > mtu + ETH_HLEN && too_big(skb, fib.ifindex, &out->mtu))
			return NH_TOO_BIG;
		return NH_CACHED;
	}
	return NH_PASS;
}

/* Hand the (rewritten) packet to what next_hop() found. */
static __always_inline enum pl_verdict transmit(struct __sk_buff *skb, const struct ct_val *cache,
						int nh, const struct hop *h)
{
	if (nh == NH_CACHED) {
		if (set_macs(skb, cache->fib_smac, cache->fib_dmac))
			return PL_DROP;
		return redirected(bpf_redirect(cache->fib_ifindex, 0));
	}
	if (nh == NH_NEIGH) {
		struct bpf_redir_neigh n = { .nh_family = AF_INET, .ipv4_nh = h->nh };
		return redirected(bpf_redirect_neigh(h->ifindex, &n, sizeof(n), 0));
	}
	return PL_PASS;
}

/* Route a packet we built or translated ourselves (ICMP errors): no cache, off the fast path.
 * Returns a verdict. */
static __noinline int route_out(struct __sk_buff *skb, __u32 saddr, __u32 daddr)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.l4_protocol = IPPROTO_ICMP;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh n = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };
		return redirected(bpf_redirect_neigh(fib.ifindex, &n, sizeof(n), 0));
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (set_macs(skb, fib.smac, fib.dmac))
			return PL_DROP;
		return redirected(bpf_redirect(fib.ifindex, 0));
	}
	return PL_PASS;   /* local, unroutable: the kernel decides */
}

/* The address this host would send from to reach `daddr` (the kernel's choice for its own
 * ICMP errors); 0 when there is none. */
static __noinline __u32 local_src(struct __sk_buff *skb, __u32 daddr)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
	/* FRAG_NEEDED: the skb (the too-big packet being answered) is measured too; the source
	 * address was found all the same */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return 0;
	return fib.ipv4_src;
}

#endif
