// SPDX-License-Identifier: GPL-2.0
/* Tiny TC program for the libbpf binding tests (tests/datapath/test_libbpf.py).
 * Not part of the datapath: it only exercises the binding's features. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#ifndef MINI_MARK
#define MINI_MARK 0xAA /* byte written over the first byte of the packet */
#endif

struct mini_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct mini_val {
	__u64 packets;
	__u64 bytes;
	__u32 flags;
	__u8 mac[6];
	__u16 tail;
	union {
		__u32 v4;
		__u8 v6[16];
	};
};

/* [0] packets seen, [1] bytes seen; per-CPU, no locks */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} mini_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mini_key);
	__type(value, struct mini_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mini_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} mini_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32); /* 4-byte value: per-CPU slots are padded to 8 */
} mini_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} mini_array SEC(".maps");

SEC("tc")
int mini_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 k = 0, len = skb->len;
	__u64 *c, one = 1;

	if (data + 14 > data_end)
		return TC_ACT_SHOT;
	c = bpf_map_lookup_elem(&mini_counters, &k);
	if (c)
		*c += 1;
	k = 1;
	c = bpf_map_lookup_elem(&mini_counters, &k);
	if (c)
		*c += len;
	bpf_map_update_elem(&mini_lru, &len, &one, BPF_ANY);
	((__u8 *)data)[0] = MINI_MARK;
	return TC_ACT_OK;
}

/* A second program to attach in place of the first (atomic replace). */
SEC("tc")
int mini_tc_drop(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";

#ifdef MINI_BAD
/* Built only with -DMINI_BAD: the verifier must reject it (unbounded packet access), so the
 * tests can check that a failed load reports the verifier's words. */
SEC("tc")
int mini_bad(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;

	return data[20];
}
#endif
