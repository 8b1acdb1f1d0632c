/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Firewall (loxilb's /config/firewall): an ordered rule list (fw_map, sorted by preference by
 * the control plane), judged only for packets no conntrack entry knows, before the service
 * lookup. Established flows never get here, so the replies and later packets of a flow that a
 * rule let open pass on its conntrack entry (stateful), and the fast path costs nothing. The
 * first matching rule decides: drop, allow (optionally setting skb->mark), SNAT (egress.h),
 * trap (to the host's own stack untouched, no load balancing: loxilb's "to the control plane")
 * or redirect (out of the named interface untouched). Neither trap nor redirect makes a
 * conntrack entry: each of their packets is judged again.
 * No match: the packet goes on (loxilb's default). Each match is counted per rule (fw_stats, per CPU).
 * Traffic the load balancer does not track (not to a service) is judged packet by packet.
 */
#ifndef PYLOXI_FIREWALL_H
#define PYLOXI_FIREWALL_H

#include <bpf/bpf_endian.h>
#include "pyloxi/tables.h"
#include "pyloxi/nat.h"
#include "pyloxi/parse.h"
#include "pyloxi/stats.h"
#include "pyloxi/verdict.h"

struct fw_ctx {           /* bpf_loop's context: the packet's tuple, copied (stack) */
	struct ct_key key;
	__u32 gen;
	__u32 ifindex;
	__s32 hit;            /* index of the first matching rule, -1: none */
};

static __always_inline int fw_addr_match(const union pl_addr *a, const union pl_addr *net,
					 const union pl_addr *mask)
{
	return (a->w[0] & mask->w[0]) == net->w[0] && (a->w[1] & mask->w[1]) == net->w[1] &&
	       (a->w[2] & mask->w[2]) == net->w[2] && (a->w[3] & mask->w[3]) == net->w[3];
}

static long fw_step(__u32 i, void *data)
{
	struct fw_ctx *c = data;
	struct fw_table *t = bpf_map_lookup_elem(&fw_map, &c->gen);
	struct fw_rule *r;
	__u16 sp, dp;

	if (!t || i >= PL_FW_MAX)
		return 1;
	r = &t->rule[i];
	if (r->proto && r->proto != c->key.proto)
		return 0;
	if (r->ifindex && r->ifindex != c->ifindex)
		return 0;
	if (r->action == PL_FW_SNAT && r->snat_family != c->key.family)
		return 0;   /* a source of the other family cannot be given */
	sp = bpf_ntohs(c->key.sport);
	dp = bpf_ntohs(c->key.dport);
	if (sp < r->sport_lo || sp > r->sport_hi || dp < r->dport_lo || dp > r->dport_hi)
		return 0;
	if (!fw_addr_match(&c->key.saddr, &r->saddr, &r->smask) ||
	    !fw_addr_match(&c->key.daddr, &r->daddr, &r->dmask))
		return 0;
	c->hit = i;
	return 1;
}

/* An SNAT rule matched: the egress flow's rewrites into the scratch entries, where new_flow
 * finds them (egress.h). An echo keeps no fixed port: its identifier is allocated. */
static __always_inline int fw_snat(const struct pkt *p, const struct fw_rule *r)
{
	__u32 zero = 0;
	struct flow_scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	__u16 port = p->key.proto == IPPROTO_ICMP ? 0 : r->snat_port;

	if (!sc)
		return PL_DROP;
	__builtin_memset(&sc->fwd, 0, sizeof(sc->fwd));
	__builtin_memset(&sc->rev, 0, sizeof(sc->rev));
	nat_egress(&sc->fwd, &sc->rev, p, &r->snat_ip, port);
	sc->fwd.ep_idx = port ? PL_EGRESS_F_FIXED : 0;
	return PL_EGRESS;
}

/* PL_CONTINUE (no rule, or an allow rule), PL_EGRESS (an SNAT rule), PL_PASS (trap),
 * PL_REDIRECT (redirect) or PL_DROP. Not inlined: its frame is not added to
 * the new-flow call chain's. */
/* The live rule set if it has rules (its generation in *gen), else NULL. */
static __always_inline struct fw_table *fw_live(__u32 *gen)
{
	__u32 zero = 0;
	__u32 *g = bpf_map_lookup_elem(&fw_gen, &zero);
	struct fw_table *t;

	if (!g)
		return NULL;
	*gen = *g & 1;
	t = bpf_map_lookup_elem(&fw_map, gen);
	return t && t->n ? t : NULL;
}

static __noinline int fw_check(struct __sk_buff *skb, const struct pkt *p)
{
	struct fw_table *t;
	struct fw_rule *r;
	struct counters *st;
	struct fw_ctx c;
	__u32 id;

	t = fw_live(&c.gen);
	if (!t)
		return PL_CONTINUE;
	c.key = p->key;
	c.ifindex = skb->ifindex;
	c.hit = -1;
	bpf_loop(t->n > PL_FW_MAX ? PL_FW_MAX : t->n, fw_step, &c, 0);
	if (c.hit < 0 || c.hit >= PL_FW_MAX)
		return PL_CONTINUE;
	r = &t->rule[c.hit];
	id = r->id;
	st = bpf_map_lookup_elem(&fw_stats, &id);
	if (st) {
		st->packets += 1;
		st->bytes += p->len;
	}
	if (r->action == PL_FW_SNAT)
		return fw_snat(p, r);
	if (r->action == PL_FW_TRAP)
		return PL_PASS;
	if (r->action == PL_FW_REDIRECT)
		return redirected(bpf_redirect(r->out_ifindex, 0));
	if (r->action != PL_FW_ALLOW) {
		count(PL_ST_FW_DROP);
		return PL_DROP;
	}
	if (r->mark)
		skb->mark = r->mark;
	return PL_CONTINUE;
}

#endif
