/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Map definitions. Every map is pinned by name, so a restarted daemon finds the same tables
 * (and established flows keep working while it is away). */
#ifndef PYLOXI_TABLES_H
#define PYLOXI_TABLES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyloxi/maps.h"

#define PINNED __uint(pinning, LIBBPF_PIN_BY_NAME)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_MAX_SVC_KEYS);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	PINNED;
} svc_map SEC(".maps");

/* Per endpoint, by its counter id (ep_val.gid, ct_val.ep_gid) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_EP_GIDS);
	__type(key, __u32);
	__type(value, struct counters);
	PINNED;
} ep_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_EP_GIDS);
	__type(key, __u32);
	__type(value, struct ep_conn);
	PINNED;
} conn_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
	PINNED;
} svc_new SEC(".maps");   /* new flows per service */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
	PINNED;
} rr_map SEC(".maps");    /* one shared cursor per service: strict rotation across CPUs */

/* Established flows: a plain hash, so no insert can ever evict one. Only the datapath's own
 * close/reclaim and the control plane's aging delete from it; when it is full, new flows are
 * refused (see conntrack.h), never old ones dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_CT_ENTRIES);
	__uint(map_flags, PL_CT_MAP_FLAGS);   /* maps.h: why preallocated */
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	PINNED;
} ct_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PL_AFF_ENTRIES);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
	PINNED;
} aff_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PL_ALLOW_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct allow_key);
	__type(value, __u32);
	PINNED;
} allow_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
	PINNED;
} stats_map SEC(".maps");

/* Per-CPU scratch for the two conntrack entries of a new flow and the keys its creation works
 * with (too big for the BPF stack, which counts every frame of the deepest call chain). */
struct flow_scratch {
	struct ct_val fwd;
	struct ct_val rev;
	struct ct_key rk;     /* the reply entry's key (pl_insert_reply, then ct_create) */
	struct ct_key ok;     /* pl_reclaim: the partner of a tuple being reclaimed */
	struct ct_key dk;     /* pl_reclaim: the partner of that partner, to delete the flow */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_scratch);
} scratch_map SEC(".maps");

/* Half-open TCP flows and UDP/ICMP/SCTP flows that have not seen a reply yet: a bounded LRU,
 * so a flood of spoofed new flows evicts only its own kind (early aging under pressure). A flow
 * moves to ct_map when it is established. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PL_CT_HALF_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	PINNED;
} ct_half SEC(".maps");

/* Endpoint addresses (ip:port/proto) of every installed service, written by the control plane:
 * a packet from one that misses conntrack is a reply of a lost flow and must not be forwarded
 * un-NATed. The value is unused (the control plane keeps the reference counts). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_EP_ADDR_ENTRIES);
	__type(key, struct ep_addr_key);
	__type(value, __u32);
	PINNED;
} ep_addr_map SEC(".maps");

/* First-fragment ports of IP datagrams in flight (frag.h). LRU: a datagram whose last fragment
 * never came must not hold its slot forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PL_FRAG_ENTRIES);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	PINNED;
} frag_map SEC(".maps");

/* Token bucket of generated ICMP errors (icmp.h); per CPU, so it takes no lock. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_bucket);
} icmp_rate SEC(".maps");

/* Service versions (see struct svc_ver): the live generation of each service, flipped last. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
	PINNED;
} gen_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_MAX_SERVICES * 2);
	__type(key, __u32);
	__type(value, struct svc_ver);
	PINNED;
} ver_map SEC(".maps");

/* The endpoints and slot tables of every version (struct svc_cfg): extents the control plane
 * allocates per version and reuses a grace period after the version stopped being live. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_EP_POOL);
	__type(key, __u32);
	__type(value, struct ep_val);
	PINNED;
} ep_pool SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_SLOT_POOL);
	__type(key, __u32);
	__type(value, struct slot_chunk);
	PINNED;
} slot_pool SEC(".maps");

/* Input and output of pl_ct_delete, written and read back by the control plane around each
 * run. Not pinned: it holds nothing between runs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_del_req);
} ct_del_map SEC(".maps");

/* This node's share of the NAT port range (struct nat_share), set by the daemon at start
 * from its cluster position. Not pinned: written on every start. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat_share);
} nat_share_map SEC(".maps");

/* Conntrack sync events (ctsync.h), drained by the daemon. Pinned: a restarted daemon reads
 * the same ring (it resyncs in full anyway). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PL_SYNC_RING);
	PINNED;
} ct_events SEC(".maps");

/* Input and output of pl_ct_sync (flows received from a peer). Not pinned. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_sync_req);
} ct_sync_map SEC(".maps");

/* Firewall (firewall.h, struct fw_table): two rule sets, fw_gen[0] names the live one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fw_table);
	PINNED;
} fw_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	PINNED;
} fw_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_FW_MAX);
	__type(key, __u32);
	__type(value, struct counters);
	PINNED;
} fw_stats SEC(".maps");   /* per rule id: packets and bytes the rule matched */

/* QoS policers (policer.h, struct pol_val): buckets by policer id, what each interface, each
 * service (dp id), each endpoint of a service and each client is policed by (0: nothing),
 * per-policer counters. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_POL_MAX);
	__type(key, __u32);
	__type(value, struct pol_val);
	PINNED;
} pol_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);     /* ifindex */
	__type(value, __u32);   /* policer id */
	PINNED;
} pol_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_MAX_SERVICES);
	__type(key, __u32);     /* service (dp) id */
	__type(value, __u32);   /* policer id; 0: none */
	PINNED;
} pol_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_POL_EPS);
	__type(key, __u32);     /* the endpoint's counter id (ct_val.ep_gid) */
	__type(value, __u32);   /* policer id */
	PINNED;
} pol_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_POL_CLIENTS);
	__type(key, struct pol_client_key);
	__type(value, __u32);   /* policer id */
	PINNED;
} pol_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pol_cfg);
	PINNED;
} pol_cfg_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_POL_MAX);
	__type(key, __u32);
	__type(value, struct pol_counters);
	PINNED;
} pol_stats SEC(".maps");

/* Mirror (mirror.h, struct mirr_cfg): mirrors by slot, what each watches, their counters. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_MIRR_MAX);
	__type(key, __u32);
	__type(value, struct mirr_cfg);
	PINNED;
} mirr_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirr_gate);
	PINNED;
} mirr_gate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_MIRR_MAX);
	__type(key, __u32);     /* ingress ifindex */
	__type(value, __u32);   /* mirror slot */
	PINNED;
} mirr_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PL_MAX_SERVICES);
	__type(key, __u32);     /* service (dp) id: every service of the mirrored rule name */
	__type(value, __u32);   /* mirror slot */
	PINNED;
} mirr_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PL_MIRR_MAX);
	__type(key, __u32);
	__type(value, struct counters);
	PINNED;
} mirr_stats SEC(".maps");   /* per slot: packets and bytes cloned to the mirror port */

/* The interfaces the XDP program serves (xdp.h), indexed by ifindex; set by the control plane
 * when it attaches XDP, zeroed when it detaches: an entry that is not `on` hands every frame to
 * TC. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PL_XDP_PORTS);
	__type(key, __u32);     /* ingress ifindex */
	__type(value, struct xdp_port);
	PINNED;
} xdp_ports SEC(".maps");

#endif
