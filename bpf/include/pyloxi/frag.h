/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * IP fragments. Only the first fragment carries the L4 header, so it is the one that finds (or
 * creates) the flow; its ports are remembered by what every fragment of the datagram carries
 * (source, destination, IP id, protocol), and the later fragments take them from there to the
 * same conntrack entry and the same rewrite (addresses only: they have no ports, and the L4
 * checksum, which covers the whole datagram, lives in the first fragment).
 *
 * A later fragment that arrives before its first (or whose first was never ours) goes to the
 * kernel, counted as PL_ST_FRAGMENT: without ports we cannot tell a VIP's datagram from the
 * host's own or routed traffic, which must keep working. For a VIP's datagram the kernel's
 * reassembly queue then never completes (the first fragment went to the endpoint) and expires
 * silently: the datagram is lost, as on any path that reorders fragments across a NAT.
 */
#ifndef PYLOXI_FRAG_H
#define PYLOXI_FRAG_H

#include "pyloxi/parse.h"
#include "pyloxi/tables.h"

static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *k)
{
	k->saddr = p->key.saddr;
	k->daddr = p->key.daddr;
	k->id = p->frag_id;
	k->proto = p->key.proto;
	k->family = p->key.family;
	k->pad[0] = k->pad[1] = 0;
}

/* First fragment: remember its ports for the fragments that follow. */
static __always_inline void frag_remember(const struct pkt *p)
{
	struct frag_key k;
	struct frag_val v = { .sport = p->key.sport, .dport = p->key.dport };

	frag_key_of(p, &k);
	bpf_map_update_elem(&frag_map, &k, &v, BPF_ANY);
}

/* Later fragment: complete its key with the first fragment's ports. 0 when found. */
static __always_inline int frag_follow(struct pkt *p)
{
	struct frag_key k;
	struct frag_val *v;

	frag_key_of(p, &k);
	v = bpf_map_lookup_elem(&frag_map, &k);
	if (!v)
		return -1;
	p->key.sport = v->sport;
	p->key.dport = v->dport;
	return 0;
}

#endif
