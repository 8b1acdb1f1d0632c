/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * pyloxi datapath tables: THE single definition of every map key and value.
 * The Python mirrors (src/pyloxi/datapath/ebpf/layout.py) are checked against the BTF of the
 * compiled object by tests/datapath/test_layout.py, so the two cannot drift.
 * Addresses and ports are in network byte order unless a field says "host order".
 *
 * Addresses: one layout for both families (union pl_addr, 16 bytes) plus a family byte, so a
 * NAT64 flow's two entries (one IPv6, one IPv4) live in the same table. An IPv4 address is
 * stored IPv4-mapped, ::ffff:a.b.c.d (w[3] holds the 4 bytes of the IPv4 header field), not in
 * the first word as Cilium and Katran do: an address alone then names its family, and one LPM
 * trie holds the prefixes of both (an IPv4 /N is a 96 + N bit prefix of the mapped address).
 * The family byte stays in the keys anyway (cheap: it fits their padding) so that a lookup
 * never depends on every writer having filled the mapped prefix right.
 */
#ifndef PYLOXI_MAPS_H
#define PYLOXI_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>   /* struct bpf_spin_lock (pol_val) */

#define PL_MAX_SERVICES   65536   /* service ids 1..PL_MAX_SERVICES-1 */
#define PL_MAX_EPS        1024    /* endpoint indexes per service (a power of two) */
#define PL_MAX_SLOTS      262139  /* longest selection table (a prime: Maglev's largest) */
#define PL_MAX_SVC_KEYS   65536   /* service keys (one per VIP/proto/port) */
/* Pools the versions of all services share (see struct svc_cfg): endpoints, slot tables in
 * chunks of PL_SLOT_CHUNK entries, and the stable per-endpoint counter ids (ep_gid). Sized for
 * 64K services of a few endpoints with both versions written, or a few of 1,024; the daemon may
 * size them at load (map_sizes). */
#define PL_EP_POOL        262144  /* ep_pool entries (struct ep_val) */
#define PL_SLOT_CHUNK     32      /* slot entries per slot_pool element */
#define PL_SLOT_POOL      262144  /* slot_pool elements: 8M slots */
#define PL_EP_GIDS        262144  /* counter ids: ep_stats / conn_map entries */
#define PL_CT_ENTRIES     2097152 /* established flows, two entries per flow (never evicted):
                                   * 1M flows */
/* ct_map is preallocated: its 2M elements (~465 MiB of kernel memory) are taken at load, so a
 * new flow's two inserts take theirs from a free list and never fail for want of memory, and a
 * node that cannot afford the table finds out when it starts, not under load. Without
 * preallocation (BPF_F_NO_PREALLOC) the table costs 32 MiB idle and ~250 B per entry in use,
 * but promoting a flow into it costs ~0.7-1 us more (memory from bpf_mem_alloc, and charged to
 * the daemon's memory cgroup as flows come) and deleting one more too; lookups, the established
 * path, are the same. Measured side by side by bench/ct_scale.py (docs/benchmarks.md,
 * "Conntrack at 2M entries"). Build with -DPL_CT_MAP_FLAGS=BPF_F_NO_PREALLOC for the other
 * trade (or size the table with the daemon's --conntrack-entries). */
#ifndef PL_CT_MAP_FLAGS
#define PL_CT_MAP_FLAGS   0
#endif
#define PL_CT_HALF_ENTRIES 262144 /* half-open / one-way flows, two per flow (LRU: a flood evicts
                                   * only these) */
#define PL_EP_ADDR_ENTRIES 262144 /* endpoint ip:port/proto of every service (as many as ep_pool) */
#define PL_AFF_ENTRIES    131072  /* persist: client affinities */
#define PL_ALLOW_ENTRIES  65536   /* allowed-source prefixes, all services */

/* NAT source ports. onearm translates to the LB's own address, so it keeps to 49152-65535 and
 * the daemon moves the host's ephemeral range below that: a translated flow never shadows the
 * LB's own connections. fullnat translates to the VIP, which the host does not connect from,
 * so it may use 1024-65535: four times the room for connections per endpoint. */
#define PL_NAT_PORT_MIN   49152
#define PL_NAT_PORT_SPAN  16384
#define PL_VIP_PORT_MIN   1024
#define PL_VIP_PORT_SPAN  64512
#define PL_NAT_TRIES      32

/* Active-active clusters: each node allocates NAT source ports from its own share of the
 * range (share `index` of `count` equal parts), so two nodes never pick the same reply tuple
 * for flows they both end up holding through conntrack sync. count 0 or 1: the whole range. */
struct nat_share {
	__u16 index;
	__u16 count;
};
/* An entry whose partner is missing is taken over only when it is older than this: the two
 * entries of a flow are inserted microseconds apart, so a younger orphan may be a flow another
 * CPU is creating right now. */
#define PL_RECLAIM_MIN_NS 2000000000ULL

/* How long a flow reuses its cached next hop before asking the FIB again: a route or
 * neighbour change reaches established flows within this time. */
#define PL_FIB_CACHE_NS   1000000000ULL
/* ... kept in ct_val as a 32-bit tick of 2^20 ns (~1 ms; wraps after ~52 days, and the
 * unsigned difference stays right across the wrap): PL_FIB_CACHE_NS in ticks */
#define PL_FIB_TICK_SHIFT 20
#define PL_FIB_CACHE_TICKS ((__u32)(PL_FIB_CACHE_NS >> PL_FIB_TICK_SHIFT))

#define PL_AF_INET   2     /* AF_INET: family bytes of the structs below */
#define PL_AF_INET6  10    /* AF_INET6 */

union pl_addr {
	__u8  b[16];
	__u16 h[8];
	__u32 w[4];           /* IPv4: w[0] = w[1] = 0, w[2] = htonl(0xffff), w[3] = the address */
};

enum pl_mode { PL_MODE_DEFAULT = 0, PL_MODE_ONEARM = 1, PL_MODE_FULLNAT = 2, PL_MODE_DSR = 3 };
enum pl_sel { PL_SEL_RR = 0, PL_SEL_HASH = 1, PL_SEL_PRIO = 2, PL_SEL_PERSIST = 3, PL_SEL_LC = 4 };

/* svc_cfg.flags */
#define PL_SVC_F_ALLOWLIST 0x1   /* only sources in allow_map may open flows */

/* ep_val.flags */
#define PL_EP_F_ACTIVE 0x1
#define PL_EP_F_IPIP   0x2   /* dsr: not on-link, reached by IPIP from snat_ip (dsr.h) */

/* ct_val.flags */
#define PL_CT_F_IPIP   0x1   /* dsr flow encapsulated in IPIP: outer nat_saddr -> nat_daddr */
#define PL_CT_F_SYNCED 0x2   /* copied from a peer by conntrack sync (ctsync.h): a later copy
                              * of the same flow may overwrite it, a local flow never */

/* ct_val.seen: what this direction has shown (TCP flags, or just "seen") */
#define PL_CT_SYN    0x01   /* SYN without ACK */
#define PL_CT_SYNACK 0x02
#define PL_CT_ACK    0x04   /* ACK without SYN: handshake done from this side */
#define PL_CT_FIN    0x08
#define PL_CT_RST    0x10
#define PL_CT_SEEN   0x20   /* any packet (UDP, ICMP, SCTP) */
/* SCTP: the first chunk of each packet of this direction (sctp.h), besides PL_CT_SEEN */
#define PL_CT_SC_INIT      0x0040
#define PL_CT_SC_INITACK   0x0080
#define PL_CT_SC_COOKIE    0x0100   /* COOKIE-ECHO */
#define PL_CT_SC_COOKIEACK 0x0200
#define PL_CT_SC_DATA      0x0400   /* any other chunk: DATA, SACK, HEARTBEAT(-ACK) ... */
#define PL_CT_SC_SHUT      0x0800   /* SHUTDOWN */
#define PL_CT_SC_SHUTACK   0x1000
#define PL_CT_SC_SHUTDONE  0x2000   /* SHUTDOWN-COMPLETE */
#define PL_CT_SC_ABORT     0x4000
#define PL_CT_SC_MPATH     0x8000   /* original entry of a path sharing its reply entry (sctp.h) */
#define PL_CT_SC_JOIN      0x10000  /* ... added to a flow (sctp_path_join): not a connection of
                                     * its own, its delete is not counted closed */

/* ct_val.td_flags: TCP window tracking of the entry's direction */
#define PL_TD_SENT    0x01  /* td_end / td_maxwin hold this direction's data */
#define PL_TD_ACKED   0x02  /* td_edge holds this direction's ack + window */
#define PL_TD_LIBERAL 0x04  /* picked up mid-stream: window unknown, RST/FIN not checked */
#define PL_TD_NO_WS   0xff  /* td_wsopt: the SYN carried no window-scale option */

/* ct_val.dir */
#define PL_DIR_ORIG  0
#define PL_DIR_REPLY 1

/* datapath event counters (stats_map index); counted off the per-packet fast path only */
enum pl_stat {
	PL_ST_NEW_FLOW = 0,    /* new flow created */
	PL_ST_DROP_SOURCE,     /* source not in the rule's allowed sources: dropped */
	PL_ST_NO_ENDPOINT,     /* no active endpoint: handed to the kernel, which refuses */
	PL_ST_NAT_EXHAUSTED,   /* no free NAT port / reply tuple taken: dropped */
	PL_ST_CT_INSERT_FAIL,  /* conntrack insert failed: dropped */
	PL_ST_FIB_PASS,        /* route lookup gave no next hop: the kernel forwards */
	PL_ST_REUSE,           /* SYN on a closed flow's tuple started a new flow */
	PL_ST_FRAGMENT,        /* IP fragment whose first fragment we have not seen: to the kernel */
	PL_ST_RECLAIM,         /* a closed flow's reply tuple was taken over by a new flow */
	PL_ST_CT_FULL,         /* established table full: the new flow was refused (to the kernel) */
	PL_ST_REPLY_MISS,      /* packet from an endpoint ip:port without conntrack: dropped */
	PL_ST_PICKUP,          /* mid-stream TCP without conntrack re-selected by hash (Maglev) */
	PL_ST_PICKUP_REFUSED,  /* mid-stream TCP without conntrack, not hash: to the kernel (RST) */
	PL_ST_OUT_OF_WINDOW,   /* RST/FIN outside the receiver's window: dropped, flow untouched */
	PL_ST_PROMOTE,         /* flow established: moved from the half-open to the established table */
	PL_ST_ICMP_XLATE,      /* ICMP error about a NATed flow translated back and forwarded */
	PL_ST_ICMP_SENT,       /* ICMP error generated (time exceeded, fragmentation needed) */
	PL_ST_ICMP_LIMITED,    /* ICMP error not generated (rate limit): the packet was dropped */
	PL_ST_MTU_PASS,        /* too big for the egress, DF clear: rewritten, to the kernel */
	PL_ST_XLATE_REFUSED,   /* NAT64 packet that cannot be translated (options, fragments): dropped */
	PL_ST_EXT_PASS,        /* IPv6 extension headers we do not walk (ESP, AH...): to the kernel */
	PL_ST_DSR_TOO_BIG,     /* dsr: too big for the egress (IPIP: with its outer header), DF
	                        * clear: dropped (we cannot fragment; the kernel would deliver the
	                        * VIP locally) */
	PL_ST_SYNC_DROP,       /* conntrack sync event lost: ring buffer full (the next full
	                        * resync heals it) */
	PL_ST_SYNC_NEW_SKIP,   /* conntrack sync: a new flow's creation event not emitted, the
	                        * ring was past PL_SYNC_NEW_ROOM (best effort: a SYN flood must
	                        * not crowd established/delete events out) */
	PL_ST_FW_DROP,         /* dropped by a firewall rule (firewall.h) */
	PL_ST_EGRESS_REFUSED,  /* egress SNAT (egress.h): a packet that cannot open a flow (TCP
	                        * without SYN, e.g. a flow lost mid-stream): dropped, never
	                        * forwarded with the untranslated source */
	PL_ST_POLICER_DROP,    /* red: dropped by a QoS policer (policer.h) */
	PL_ST_XDP_FWD,         /* forwarded by the XDP fast path (xdp.h) */
	PL_ST_XDP_PARTIAL,     /* XDP: a packet whose L4 checksum looks partial (a local
	                        * sender's offload seed): to TC (xdp.h) */
	PL_ST_XDP_NEW,         /* a new flow created by XDP (counted as new_flow too) */
	PL_ST_MAX = 32,
};

struct ep_conn {          /* conn_map[ep_gid] (stats.h): active = opened - closed */
	__u64 opened;         /* atomically added by the datapath */
	__u64 closed;         /* atomically added by the datapath and by pl_ct_delete */
};

struct svc_key {          /* svc_map key: one per VIP, protocol, port and block */
	union pl_addr vip;
	__u16 port;           /* 0 for icmp */
	__u8  proto;
	__u8  family;         /* PL_AF_* of the VIP */
	__u32 mark;           /* the rule's `block`: packets whose skb->mark (the firewall's
			       * fwMark) is this; 0: every packet */
};

struct svc_val {          /* never rewritten while the service lives (see svc_ver) */
	__u32 svc_id;
	__u32 pad;
};

/* A service is programmed as whole versions: ver_map[svc_id * 2 + gen] holds the config of one
 * complete version, which names its endpoints (ep_pool[ep_base .. ep_base + n_eps - 1], endpoint
 * index i at ep_base + i) and its slot table (n_slots entries from slot_pool[slot_base], in
 * chunks of PL_SLOT_CHUNK); gen_map[svc_id] says which of the two versions is live. The control
 * plane writes the other version (its pool extents first, then its config), then flips the
 * generation word (one aligned 32-bit store, only its low byte ever changes), so a packet sees
 * either the old or the new service, never a mix. It rewrites a version, and reuses the pool
 * extents that version named, only after an RCU grace period has passed since that version was
 * last live, so no packet still reads them. Established flows never read the pools: their
 * conntrack entry holds the endpoint's counter id (ct_val.ep_gid). */
struct svc_cfg {          /* the config of one version */
	union pl_addr vip;
	__u32 idle_timeout;   /* seconds, host order (read by the control plane's aging) */
	__u32 persist_timeout;/* seconds, host order */
	__u32 n_slots;        /* 0: no active endpoint */
	__u8  mode;           /* enum pl_mode */
	__u8  sel;            /* enum pl_sel */
	__u8  flags;          /* PL_SVC_F_* */
	__u8  family;         /* PL_AF_* of the VIP */
	__u16 port_base;      /* host order: first port of the rule (port ranges map by offset) */
	__u16 n_eps;          /* endpoint indexes of this version, at most PL_MAX_EPS */
	__u32 ep_base;        /* ep_pool index of endpoint 0 */
	__u32 slot_base;      /* slot_pool index of the first chunk */
	__u32 pad;
};

struct ep_val {           /* ep_pool: endpoint idx of a version */
	union pl_addr ip;
	union pl_addr snat_ip;/* all zero: keep the client's source address */
	__u16 port;           /* 0: keep the destination port */
	__u8  flags;          /* PL_EP_F_* */
	__u8  weight;
	__u8  family;         /* PL_AF_* of ip and snat_ip (the packets sent to the endpoint) */
	__u8  pad[3];
	__u32 gid;            /* counter id (ep_stats, conn_map, pol_ep): kept while the endpoint
	                       * keeps its index, across versions */
	__u32 pad2;
};

struct svc_ver {          /* ver_map[svc_id * 2 + gen] */
	struct svc_cfg cfg;
};

struct slot_chunk {       /* slot_pool: PL_SLOT_CHUNK slots, each an endpoint index */
	__u16 idx[PL_SLOT_CHUNK];
};

struct counters {         /* ep_stats (per CPU) */
	__u64 packets;
	__u64 bytes;
};

/* An ICMPv6 echo is keyed with proto IPPROTO_ICMP (1) and family PL_AF_INET6, not 58: one echo
 * protocol in every table, so a NAT64 echo's two entries differ only in their family and an
 * echo rule (protocol icmp) serves both families. */
struct ct_key {
	union pl_addr saddr;
	union pl_addr daddr;
	__u16 sport;          /* icmp echo: the identifier */
	__u16 dport;          /* icmp: 0 */
	__u8  proto;
	__u8  family;         /* PL_AF_* */
	__u8  pad[2];
};

struct ct_val {
	/* the packet's tuple after the rewrite; also, swapped, the partner entry's key */
	union pl_addr nat_saddr;
	union pl_addr nat_daddr;
	__u16 nat_sport;
	__u16 nat_dport;
	__u32 svc_id;
	__u32 ep_gid;         /* the endpoint's counter id (ep_val.gid): established packets count
	                       * and police by it without reading the service's version */
	__u16 ep_idx;         /* the endpoint's index in its service */
	__u8  dir;            /* PL_DIR_* */
	__u8  mode;           /* enum pl_mode the flow was created with */
	__u8  nat_family;     /* PL_AF_* of the rewritten packet (NAT64: not the key's family) */
	__u8  flags;          /* PL_CT_F_* */
	__u16 fib_mtu;        /* MTU of fib_ifindex: bigger packets get the exact check */
	__u32 seen;           /* PL_CT_* bits of this direction (atomically OR-ed) */
	/* next hop of this direction, from bpf_fib_lookup, reused for up to a second */
	__u32 fib_ifindex;    /* 0: nothing cached */
	__u8  fib_smac[6];
	__u8  fib_dmac[6];
	__u32 fib_tick;       /* pl_fib_tick() of the lookup (fwd.h) */
	__u32 td_lastack;     /* ack number of this direction's latest ACK, host order */
	__u64 created_ns;
	__u64 last_ns;        /* refreshed at most once a second */
	__u64 packets;
	__u64 bytes;
	/* TCP window tracking of this direction, host order (as Linux conntrack's tcp_in_window,
	 * reduced to what judging a RST or FIN needs). Updated without atomics: a race between
	 * CPUs can only lose an advance of a few segments, which the window slack absorbs. */
	__u32 td_end;         /* highest sequence number sent + 1 (SYN/FIN count one) */
	__u32 td_edge;        /* highest ack + scaled window advertised: the right edge of what
	                       * the other direction may send */
	__u32 td_maxwin;      /* largest scaled window advertised */
	__u8  td_wscale;      /* shift of this direction's window field (set when established) */
	__u8  td_wsopt;       /* window-scale option of this direction's SYN, PL_TD_NO_WS: none */
	__u8  td_flags;       /* PL_TD_* */
	__u8  pad;
};

struct ep_addr_key {      /* ep_addr_map: an endpoint's ip:port/proto (icmp: port 0) */
	union pl_addr ip;
	__u16 port;
	__u8  proto;
	__u8  family;         /* PL_AF_* */
};

struct aff_key {          /* persist: client -> endpoint (the service fixes the family) */
	__u32 svc_id;
	union pl_addr saddr;
};

struct aff_val {
	__u64 last_ns;
	__u32 ep_idx;
	__u32 pad;
};

struct allow_key {        /* LPM: prefixlen = 32 (ver_id) + prefix length of the 128-bit
                           * address: IPv6 /N is 32 + N, IPv4 /N (mapped) is 32 + 96 + N */
	__u32 prefixlen;
	__u32 ver_id;         /* svc_id * 2 + gen: the allowed sources belong to a version */
	union pl_addr addr;
};

/* IP fragments: the first fragment's ports, by what every fragment of a datagram carries, so the
 * later fragments (no L4 header) follow it to the same flow. */
#define PL_FRAG_ENTRIES   16384

struct frag_key {
	union pl_addr saddr;
	union pl_addr daddr;
	__u32 id;             /* IP identification (IPv4: 16 bits; IPv6 fragment header: 32) */
	__u8  proto;
	__u8  family;         /* PL_AF_* */
	__u8  pad[2];
};

struct frag_val {
	__u16 sport;          /* icmp echo: the identifier */
	__u16 dport;
	__u32 pad;
};

/* Generated ICMP errors: a per-CPU token bucket (what the kernel's icmp_msgs_per_sec/burst
 * do for its own), so a flood of TTL-1 packets cannot turn the LB into a reflector. */
#define PL_ICMP_RATE      1000    /* per second and CPU */
#define PL_ICMP_BURST     50

struct icmp_bucket {
	__u64 last_ns;
	__u64 tokens;
};

/* Conditional deletes of the control plane (aging, flushes), run by pl_ct_delete: each item
 * names an entry as a snapshot of the tables saw it. The entry is deleted only if the key still
 * holds that same entry: by the time the control plane acts (up to a second later on a big
 * table) the client may have reused the port, and a new flow may own the key. Flows are
 * inserted with BPF_NOEXIST, never replaced in place, so a new flow on the key is a new entry
 * with its own created_ns. The clock is coarse (one tick), so svc_id, ep_idx and dir are
 * compared as well: a flow reusing the key within the same tick still differs in one of them,
 * unless it is the same service, endpoint and direction (a flush of that endpoint wants it
 * gone anyway; an expired flow is older than any flow created after the snapshot). */
#define PL_CT_DEL_BATCH   256
#define PL_CT_DEL_EST     0       /* ct_del_item.table: ct_map */
#define PL_CT_DEL_HALF    1       /* ct_half */

struct ct_del_item {
	struct ct_key key;
	__u64 created_ns;     /* of the entry the snapshot saw */
	__u32 svc_id;
	__u16 ep_idx;
	__u8  dir;            /* PL_DIR_* */
	__u8  table;          /* PL_CT_DEL_* */
	__u8  deleted;        /* out: 1 if this run deleted the entry */
	__u8  pad[7];
};

struct ct_del_req {       /* ct_del_map[0]: input and output of pl_ct_delete */
	__u32 n;              /* items used, at most PL_CT_DEL_BATCH */
	__u32 closed;         /* out: established flows this run counted closed in conn_map */
	struct ct_del_item item[PL_CT_DEL_BATCH];
};

/* SCTP multihoming (sctp.h). mh_map[svc_id]: the addresses of a service with secondary VIPs
 * (the primary VIP first), written by the control plane at install (secondary IPs never change
 * on an existing rule). assoc_map: (service, the endpoint's initiate tag) -> the endpoint, from
 * the endpoint's INIT-ACK, so a packet of the association on another path (client address 2 ->
 * VIP 2, common header tag = that tag) reaches the same endpoint. */
#define PL_MH_MAX         3       /* secondary VIPs per service (loxilb: LLB_MAX_MHOSTS) */
#define PL_MH_ENTRIES     4096
#define PL_ASSOC_ENTRIES  65536

struct mh_val {
	union pl_addr vip[1 + PL_MH_MAX];   /* [0]: the primary VIP */
	__u32 n;              /* addresses used in vip[] (1 + secondaries) */
	__u32 pad;
};

struct assoc_key {
	__u32 svc_id;
	__u32 vtag;           /* the endpoint's initiate tag, as on the wire */
};

struct assoc_val {
	__u64 created_ns;
	__u32 ep_idx;
	__u16 nat_sport;      /* the client-side port the endpoint sees (fullnat/onearm: the NAT
	                       * port), so another path of the association keeps it */
	__u16 pad;
};

/* rassoc_map (sctp_flow.h), default mode only: (endpoint ip:port, the client's initiate tag) ->
 * the association's service, from the client's INIT, so an endpoint's packet to another client
 * address (a HEARTBEAT to an address the INIT listed) that no flow knows yet opens that path. */
struct rassoc_key {
	union pl_addr ep;
	__u32 vtag;           /* the client's initiate tag: the endpoint's packets carry it */
	__u16 ep_port;
	__u8  family;
	__u8  pad;
};

struct rassoc_val {
	union pl_addr vip;    /* the VIP the association was opened on */
	__u32 svc_id;
	__u16 vport;          /* the VIP port (network order) */
	__u16 ep_idx;
};

/* Conntrack sync (ctsync.h): the datapath reports a flow's creation (best effort), its
 * establishment and its deletion through the ct_events ring buffer; the daemon streams them to its peers, which insert them
 * with pl_ct_sync (batches in ct_sync_map). Both entries' keys and values are enough to
 * rebuild the flow: the service is named by okey's destination (VIP/port/proto), the endpoint
 * by oval's NAT destination (ip:port); svc_id and ep_idx are node-local and rewritten by the
 * receiver. */
#define PL_SYNC_EST       1       /* ct_sync_ev.type: a flow established (promoted to ct_map) */
#define PL_SYNC_DEL       2       /* the datapath deleted an established flow (keys only) */
#define PL_SYNC_NEW       3       /* a flow created (half-open, in ct_half): best effort */
#define PL_SYNC_NEW_ROOM  4       /* NEW only while the ring's unread data is below 1/this */
#define PL_SYNC_BATCH     64
#define PL_SYNC_RING      (4 << 20)  /* bytes of ct_events */

/* ct_sync_ev.layout: the layout of struct ct_val and ct_key the event carries, bumped when
 * either changes (the peers refuse events of another layout; 2: ct_val.ep_gid, issue 14, which
 * also grew the event, so that older peers refuse it by its size). */
#define PL_SYNC_LAYOUT    2

struct ct_sync_ev {
	__u8  type;           /* PL_SYNC_* */
	__u8  result;         /* pl_ct_sync out: PL_SYNC_R_* */
	__u8  layout;         /* PL_SYNC_LAYOUT */
	__u8  pad[13];
	struct ct_key okey;   /* the original direction's entry */
	struct ct_key rkey;   /* the reply direction's entry */
	struct ct_val oval;
	struct ct_val rval;
};

#define PL_SYNC_R_NONE     0  /* nothing done (bad item) */
#define PL_SYNC_R_INSERTED 1  /* a new flow: both entries inserted, counted opened */
#define PL_SYNC_R_REFRESHED 2 /* an earlier synced copy overwritten */
#define PL_SYNC_R_LOCAL    3  /* a live local flow holds the key: left alone */
#define PL_SYNC_R_FULL     4  /* ct_map full */
#define PL_SYNC_R_DELETED  5  /* a synced flow deleted (counted closed) */
#define PL_SYNC_R_EXISTS   6  /* NEW of a flow this node has established already: left alone */

struct ct_sync_req {      /* ct_sync_map[0]: input and output of pl_ct_sync */
	__u32 n;
	__u32 pad;
	struct ct_sync_ev ev[PL_SYNC_BATCH];
};

/* Firewall (firewall.h): rules sorted by preference, judged on a conntrack miss only (replies
 * and later packets of a flow the firewall let open pass on their conntrack entry). A rule set
 * is written whole into the fw_map entry that is not live, then fw_gen is flipped (one aligned
 * store), so a packet sees the old or the new rule set, never a mix. */
#define PL_FW_MAX         256     /* rules */
#define PL_FW_DROP        0       /* fw_rule.action */
#define PL_FW_ALLOW       1
#define PL_FW_SNAT        2       /* egress SNAT (loxilb doSnat, egress.h) */
#define PL_FW_TRAP        3       /* to the host's own stack as it is, no load balancing */
#define PL_FW_REDIRECT    4       /* out of out_ifindex as it is (bpf_redirect) */

/* Egress SNAT flows have no service: their conntrack entries carry this reserved svc_id, one
 * past the last service id, so every per-service table (ep_stats, conn_map, svc_new) misses
 * it and counts nothing, and a peer (conntrack sync) takes them as they are. Their ep_idx is
 * PL_EGRESS_F_FIXED when the source port is the rule's toPort (else allocated). */
#define PL_SVC_EGRESS     PL_MAX_SERVICES
#define PL_EGRESS_F_FIXED 1
/* ct_val.ep_gid of flows without an endpoint's counters (egress SNAT): past every table
 * indexed by counter id, so nothing counts it. Counter id 0 is never handed out either. */
#define PL_GID_NONE       0xffffffffU

struct fw_rule {
	union pl_addr saddr;  /* already masked */
	union pl_addr smask;  /* all zero: any source (either family) */
	union pl_addr daddr;
	union pl_addr dmask;
	__u16 sport_lo;       /* host order, inclusive; 0..65535: any */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u32 ifindex;        /* ingress interface; 0: any */
	__u32 mark;           /* allow: skb->mark set to it when non-zero */
	__u32 id;             /* the rule's slot in fw_stats (stable while the rule lives) */
	__u8  proto;          /* IP protocol; 0: any */
	__u8  action;         /* PL_FW_* */
	__u8  pad[2];
	/* PL_FW_SNAT: the new source (family snat_family; packets of the other family do not
	 * match the rule) and its port (network order; 0: allocated as fullnat allocates) */
	union pl_addr snat_ip;
	__u16 snat_port;
	__u8  snat_family;
	__u8  pad2;
	__u32 out_ifindex;    /* PL_FW_REDIRECT: the interface the packet leaves by */
};

struct fw_table {         /* fw_map[gen] */
	__u32 n;              /* rules used, at most PL_FW_MAX */
	__u32 pad;
	struct fw_rule rule[PL_FW_MAX];
};

/* QoS policers (policer.h, loxilb's /config/policy): token buckets, one pol_val per policer id
 * (1..PL_POL_MAX-1; 0: none), attached to interfaces (pol_port), LB rules (pol_svc), endpoints
 * (pol_ep) or clients (pol_client). */
#define PL_POL_EPS        65536   /* pol_ep entries: (service, endpoint index) pairs policed */
#define PL_POL_CLIENTS    1024    /* pol_client entries */
#define PL_POL_MAX        8192    /* policer ids, loxilb's maximum */
#define PL_POL_TRTCM      0       /* pol_val.type: two rate three colour (RFC 2698) */
#define PL_POL_SRTCM      1       /* single rate three colour (RFC 2697) */

struct pol_val {          /* pol_map[id]; the control plane writes it whole with BPF_F_LOCK */
	struct bpf_spin_lock lock;
	__u32 type;           /* PL_POL_* */
	__u64 rate_c;         /* committed rate, bytes per second */
	__u64 rate_e;         /* trTCM: peak rate (bucket e is the peak bucket); srTCM: unused */
	__u64 size_c;         /* committed burst size (CBS), bytes */
	__u64 size_e;         /* trTCM: peak burst size; srTCM: excess burst size (EBS), bytes */
	__u64 fill_c_ns;      /* time to fill bucket c from empty (trTCM; srTCM: c and e): longer
	                       * gaps are clamped to it, so elapsed * rate cannot overflow */
	__u64 fill_e_ns;      /* the same for bucket e (trTCM) */
	__u64 tok_c;          /* tokens (bytes) in each bucket */
	__u64 tok_e;
	__u64 last_ns;        /* pl_now() of the last refill; 0: buckets full on the next packet */
};

struct pol_counters {     /* pol_stats[id] (per CPU) */
	__u64 ok_packets;     /* green or yellow: passed */
	__u64 ok_bytes;
	__u64 drop_packets;   /* red: dropped */
	__u64 drop_bytes;
};

struct pol_cfg {          /* pol_cfg_map[0] */
	__u32 nports;         /* entries in pol_port: 0 skips the per-packet interface lookup */
	__u32 nclients;       /* client policers (pol_client): 0 skips the per-packet lookup */
	__u32 neps;           /* endpoint policers (pol_ep): 0 skips the per-packet lookup */
	__u32 pad;
};

struct pol_client_key {   /* pol_client: a client's address (pyloxi extension, attachment 4) */
	union pl_addr ip;
	__u8  family;         /* PL_AF_* */
	__u8  pad[3];
};

/* Mirror (mirror.h): loxilb's /config/mirror. A mirror is a slot of mirr_map; what it watches
 * points at the slot: an interface (mirr_port, by ingress ifindex) or a load-balancer rule
 * (mirr_svc, by service id). mirr_gate says whether any of either kind exists, so traffic
 * with no mirror pays one array lookup. */
#define PL_MIRR_MAX       32      /* mirrors (loxilb's limit) */
#define PL_MIRR_SPAN      0       /* mirr_cfg.type: the packet as it is */
#define PL_MIRR_RSPAN     1       /* with an 802.1Q tag (mirr_cfg.vlan) pushed */

struct mirr_cfg {         /* mirr_map[slot] */
	__u32 ifindex;        /* the mirror port: clones leave through it; 0: slot unused */
	__u16 vlan;           /* RSPAN: the VLAN id of the tag pushed on the clone */
	__u8  type;           /* PL_MIRR_* */
	__u8  pad;
};

struct mirr_gate {        /* mirr_gate[0]: how many watched objects of each kind */
	__u32 ports;          /* entries in mirr_port */
	__u32 rules;          /* entries in mirr_svc */
};

/* xdp_ports is an array indexed by ifindex (an inlined lookup, where a hash lookup cost a
 * fifth of the XDP fast path): interfaces with a higher ifindex stay TC's (xdpattach.py). */
#define PL_XDP_PORTS 65536

struct xdp_port {         /* xdp_ports[ifindex]: XDP serves this interface (xdp.h) */
	__u8  mac[6];         /* the interface's own MAC: frames to other hosts are not ours */
	__u8  native;         /* attached in native (driver) mode */
	__u8  on;             /* 1: served (array entries exist for every ifindex, zeroed) */
};

/* Sizes the Python mirrors and the memory estimates in docs/benchmarks.md rely on (the BTF test
 * checks every offset; these keep implicit padding out at compile time). */
_Static_assert(sizeof(union pl_addr) == 16, "pl_addr");
_Static_assert(sizeof(struct ct_key) == 40, "ct_key");
_Static_assert(sizeof(struct ct_val) == 128, "ct_val");
_Static_assert(sizeof(struct svc_key) == 24, "svc_key");
_Static_assert(sizeof(struct svc_cfg) == 48, "svc_cfg");
_Static_assert(sizeof(struct ep_val) == 48, "ep_val");
_Static_assert(sizeof(struct slot_chunk) == 2 * PL_SLOT_CHUNK, "slot_chunk");
_Static_assert(sizeof(struct ep_addr_key) == 20, "ep_addr_key");
_Static_assert(sizeof(struct aff_key) == 20, "aff_key");
_Static_assert(sizeof(struct allow_key) == 24, "allow_key");
_Static_assert(sizeof(struct frag_key) == 40, "frag_key");
_Static_assert(sizeof(struct ct_del_item) == 64, "ct_del_item");
_Static_assert(sizeof(struct mh_val) == 72, "mh_val");
_Static_assert(sizeof(struct assoc_key) == 8, "assoc_key");
_Static_assert(sizeof(struct assoc_val) == 16, "assoc_val");
_Static_assert(sizeof(struct rassoc_key) == 24, "rassoc_key");
_Static_assert(sizeof(struct rassoc_val) == 24, "rassoc_val");
_Static_assert(sizeof(struct ct_sync_ev) == 352, "ct_sync_ev");
_Static_assert(sizeof(struct nat_share) == 4, "nat_share");
_Static_assert(sizeof(struct fw_rule) == 112, "fw_rule");
_Static_assert(sizeof(struct mirr_cfg) == 8, "mirr_cfg");
_Static_assert(sizeof(struct xdp_port) == 8, "xdp_port");
_Static_assert(sizeof(struct pol_val) == 80, "pol_val");
_Static_assert(sizeof(struct pol_counters) == 32, "pol_counters");
_Static_assert(sizeof(struct pol_client_key) == 20, "pol_client_key");

#endif
