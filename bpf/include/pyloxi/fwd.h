/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Forwarding after the rewrite: the kernel's FIB and neighbour tables, no mirrors of our own. */
#ifndef PYLOXI_FWD_H
#define PYLOXI_FWD_H

#include <linux/pkt_cls.h>
#include "pyloxi/parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->ttl <= 1)
		return -1;
	/* TTL is the high byte of the 16-bit word it shares with the protocol */
	__u16 old = bpf_htons((__u16)ip->ttl << 8);
	__u16 new = bpf_htons((__u16)(ip->ttl - 1) << 8);
	ip->ttl--;
	return bpf_l3_csum_replace(skb, IP_CSUM_OFF(p), old, new, sizeof(__u16));
}

/* Route the (already rewritten) packet and hand it to the egress device. */
static __always_inline int forward(struct __sk_buff *skb, const struct pkt *p,
				   __u32 saddr, __u32 daddr, __u32 *stats_reason)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.l4_protocol = p->key.proto;
	/* tot_len stays 0: the kernel then checks the MTU against the skb itself, GSO-aware */
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		if (dec_ttl(skb, p))
			return TC_ACT_OK;   /* TTL expiring: let the kernel send time-exceeded */
		if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
			struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };
			return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
		}
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return TC_ACT_SHOT;
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		return bpf_redirect(fib.ifindex, 0);
	}
	/* Local destination, no route, MTU exceeded...: the kernel routes the rewritten packet
	 * itself (and sends whatever ICMP error applies). */
	*stats_reason = PL_ST_FIB_PASS;
	return TC_ACT_OK;
}

#endif
