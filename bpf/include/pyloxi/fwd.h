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
	__u32 mtu;
	union pl_addr nh;     /* NH_NEIGH: the gateway or the destination itself */
	__u8 family;          /* PL_AF_* of nh */
};

/* The next hop bpf_fib_lookup wrote back (in the destination field). */
static __always_inline void fib_nh(const struct bpf_fib_lookup *fib, struct hop *out)
{
	out->ifindex = fib->ifindex;
	if (fib->family == AF_INET6) {
		__builtin_memcpy(&out->nh, fib->ipv6_dst, 16);
		out->family = PL_AF_INET6;
	} else {
		addr_set_v4(&out->nh, fib->ipv4_dst);
		out->family = PL_AF_INET;
	}
}

static __always_inline long redirect_neigh(const struct hop *h)
{
	struct bpf_redir_neigh n = {};

	if (h->family == PL_AF_INET6) {
		n.nh_family = AF_INET6;
		__builtin_memcpy(n.ipv6_nh, &h->nh, 16);
	} else {
		n.nh_family = AF_INET;
		n.ipv4_nh = addr_v4(&h->nh);
	}
	return bpf_redirect_neigh(h->ifindex, &n, sizeof(n), 0);
}

/* The exact check, for packets longer than the cached MTU: GSO packets are fine when their
 * segments fit (BPF_MTU_CHK_SEGS), which a plain length compare cannot tell. */
static __always_inline int too_big(struct __sk_buff *skb, __u32 ifindex, __u32 *mtu, __s32 grow)
{
	__u32 m = 0;
	/* the kernel takes a length difference only without BPF_MTU_CHK_SEGS (a NAT64 GSO packet
	 * is then let through: its segments are re-made, and measured, by the stack) */
	int rc = bpf_check_mtu(skb, ifindex, &m, grow, grow ? 0 : BPF_MTU_CHK_SEGS);

	*mtu = m - grow;   /* what the sender's packet may be */
	return rc == BPF_MTU_CHK_RET_FRAG_NEEDED || rc == BPF_MTU_CHK_RET_SEGS_TOOBIG;
}

/*
 * The next hops bpf_fib_lookup resolved lately, per CPU, direct-mapped by the lookup's inputs
 * (family, addresses, protocol, ingress interface: all bpf_fib_lookup is given). A new flow,
 * or a flow whose cached hop aged out, takes a hop from here instead of the helper (~200 ns of
 * a new flow) when another flow resolved the same inputs within PL_FIB_CACHE_NS: the age
 * travels with the copy (fib_tick), so no hop is used longer after its lookup than an entry's
 * own cache allows. Hits: a client's further connections to the same endpoint, and every flow
 * to an endpoint whose source is translated (fullnat, onearm: one source address).
 */
#define PL_FIB_MEMO_SLOTS 1024

struct fib_memo {
	union pl_addr saddr;
	union pl_addr daddr;
	__u32 in_ifindex;
	__u32 tick;           /* pl_fib_fresh's, of the lookup */
	__u32 ifindex;
	__u16 mtu;
	__u8 family;
	__u8 proto;
	__u8 smac[6];
	__u8 dmac[6];
	__u32 used;           /* 0: empty slot */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_FIB_MEMO_SLOTS);
	__type(key, __u32);
	__type(value, struct fib_memo);
} fib_memo_map SEC(".maps");

static __always_inline struct fib_memo *fib_memo_slot(const struct ct_val *v, __u32 in_ifindex)
{
	const __u32 *s = v->nat_saddr.w, *d = v->nat_daddr.w;
	__u32 dx = d[0] ^ d[1] ^ d[2] ^ d[3];
	__u32 h = s[0] ^ s[1] ^ s[2] ^ s[3] ^ ((dx << 16) | (dx >> 16)) ^ in_ifindex;

	/* murmur3's finalizer: every input bit reaches the slot bits */
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	h &= PL_FIB_MEMO_SLOTS - 1;
	return bpf_map_lookup_elem(&fib_memo_map, &h);
}

static __always_inline int fib_memo_match(const struct fib_memo *m, const struct ct_val *v,
					  __u8 proto, __u32 in_ifindex)
{
	const __u64 *ms = (const __u64 *)&m->saddr, *vs = (const __u64 *)&v->nat_saddr;
	const __u64 *md = (const __u64 *)&m->daddr, *vd = (const __u64 *)&v->nat_daddr;

	return m->used && m->in_ifindex == in_ifindex && m->family == v->nat_family &&
	       m->proto == proto && ms[0] == vs[0] && ms[1] == vs[1] && md[0] == vd[0] &&
	       md[1] == vd[1];
}

/* An entry without a fresh next hop takes the memo's for the same lookup inputs, if it has
 * one (still stale then: the caller looks it up). Returns the memo slot for the lookup's
 * result, or NULL. */
static __always_inline struct fib_memo *fib_memo_take(struct ct_val *cache, __u8 proto,
						      __u32 in_ifindex)
{
	struct fib_memo *memo = fib_memo_slot(cache, in_ifindex);

	if (memo && fib_memo_match(memo, cache, proto, in_ifindex)) {
		__builtin_memcpy(cache->fib_smac, memo->smac, ETH_ALEN);
		__builtin_memcpy(cache->fib_dmac, memo->dmac, ETH_ALEN);
		cache->fib_ifindex = memo->ifindex;
		cache->fib_mtu = memo->mtu;
		cache->fib_tick = memo->tick;
	}
	return memo;
}

/* Keep a resolved next hop in the entry and in its memo slot (if any). */
static __always_inline void fib_keep(struct ct_val *cache, const struct bpf_fib_lookup *fib,
				     __u64 now, struct fib_memo *memo, __u8 proto,
				     __u32 in_ifindex)
{
	__u32 mtu = fib->mtu_result;

	__builtin_memcpy(cache->fib_smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(cache->fib_dmac, fib->dmac, ETH_ALEN);
	cache->fib_ifindex = fib->ifindex;
	cache->fib_mtu = mtu > 0xffff ? 0xffff : mtu;   /* lo: 65536 (bigger: exact check) */
	cache->fib_tick = (__u32)(now >> PL_FIB_TICK_SHIFT);
	if (!memo)
		return;
	memo->saddr = cache->nat_saddr;
	memo->daddr = cache->nat_daddr;
	memo->in_ifindex = in_ifindex;
	memo->tick = cache->fib_tick;
	memo->ifindex = cache->fib_ifindex;
	memo->mtu = cache->fib_mtu;
	memo->family = cache->nat_family;
	memo->proto = proto;
	__builtin_memcpy(memo->smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(memo->dmac, fib->dmac, ETH_ALEN);
	memo->used = 1;
}

/*
 * The next hop of flow entry `cache`, called BEFORE the rewrite: the lookup uses the entry's
 * post-NAT addresses, and a packet that does not fit the egress must still carry the header
 * its sender sent (the 'fragmentation needed' quotes it). A resolved next hop and its device
 * MTU are remembered in the entry for PL_FIB_CACHE_NS; on that fast path the MTU costs one
 * compare (skb->len against the cached MTU) and the helper only runs for longer packets.
 * A NAT64 packet is measured as it will leave: 20 bytes longer as IPv6, 20 shorter as IPv4.
 * Not inlined: its bpf_fib_lookup params would otherwise sit in every caller's stack frame.
 * (XDP's: xdp_route, xdp.h.)
 */
static __noinline int next_hop(struct __sk_buff *skb, const struct pkt *p, struct ct_val *cache,
			       __u64 now, struct hop *out)
{
	struct bpf_fib_lookup fib = {};
	struct fib_memo *memo = NULL;
	__s32 grow = 0;
	int rc;

	if (!cache || !out)
		return NH_PASS;
	if (cache->nat_family != p->key.family)
		grow = cache->nat_family == PL_AF_INET6 ? 20 : -20;
	/* the memo only when the entry has no fresh hop: established packets never touch it */
	if (!(cache->fib_ifindex && pl_fib_fresh(cache, now)))
		memo = fib_memo_take(cache, p->key.proto, skb->ingress_ifindex);
	if (cache->fib_ifindex && pl_fib_fresh(cache, now)) {
		if (skb->len + grow > cache->fib_mtu + ETH_HLEN &&
		    too_big(skb, cache->fib_ifindex, &out->mtu, grow))
			return NH_TOO_BIG;
		return NH_CACHED;
	}
	fib_addrs(&fib, cache->nat_family, &cache->nat_saddr, &cache->nat_daddr);
	fib.l4_protocol = p->key.proto;
	/* tot_len stays 0: the kernel checks the skb against the device MTU and returns that MTU
	 * in mtu_result (route MTUs are not consulted: the redirect bypasses them too) */
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		fib_nh(&fib, out);
		if (too_big(skb, fib.ifindex, &out->mtu, grow))
			return NH_TOO_BIG;
		return NH_NEIGH;
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		fib_keep(cache, &fib, now, memo, p->key.proto, skb->ingress_ifindex);
		if (skb->len + grow > fib.mtu_result + ETH_HLEN &&
		    too_big(skb, fib.ifindex, &out->mtu, grow))
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
	if (nh == NH_NEIGH)
		return redirected(redirect_neigh(h));
	return PL_PASS;
}

/* Route a packet we built or translated ourselves (ICMP errors) from s to d of `family`: no
 * cache, off the fast path. Returns a verdict. */
static __noinline int route_out(struct __sk_buff *skb, __u8 family, const union pl_addr *s,
				const union pl_addr *d)
{
	struct bpf_fib_lookup fib = {};
	struct hop h = {};
	int rc;

	fib_addrs(&fib, family, s, d);
	fib.l4_protocol = family == PL_AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		fib_nh(&fib, &h);
		return redirected(redirect_neigh(&h));
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (set_macs(skb, fib.smac, fib.dmac))
			return PL_DROP;
		return redirected(bpf_redirect(fib.ifindex, 0));
	}
	return PL_PASS;   /* local, unroutable: the kernel decides */
}

/* The address this host would send from to reach `d` of `family` (the kernel's choice for its
 * own ICMP errors), in *out; -1 when there is none. */
static __noinline int local_src(struct __sk_buff *skb, __u8 family, const union pl_addr *d,
				union pl_addr *out)
{
	struct bpf_fib_lookup fib = {};
	union pl_addr any = {};
	int rc;

	if (family == PL_AF_INET)
		addr_set_v4(&any, 0);
	fib_addrs(&fib, family, &any, d);
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
	/* FRAG_NEEDED: the skb (the too-big packet being answered) is measured too; the source
	 * address was found all the same */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return -1;
	if (family == PL_AF_INET6)
		__builtin_memcpy(out, fib.ipv6_src, 16);
	else
		addr_set_v4(out, fib.ipv4_src);
	return 0;
}

#endif
