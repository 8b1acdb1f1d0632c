// SPDX-License-Identifier: GPL-2.0
/* The endpoint side of L3 DSR in tests/integration/test_dsr.py: strip the outer IPv4 header of
 * an IPIP packet at TC ingress, so the inner packet (client -> VIP) is delivered to the VIP on
 * the endpoint's loopback. What an `ipip` device (or tunl0) does; this kernel is built without
 * CONFIG_NET_IPIP, so the tests cannot make one. Not part of the datapath. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

SEC("tc")
int ipip_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_IPIP || ip->ihl != 5)
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -(int)sizeof(*ip), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
