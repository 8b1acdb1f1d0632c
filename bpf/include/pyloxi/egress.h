/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Egress SNAT (loxilb's firewall doSnat, §7.8): a packet no conntrack entry knows, to no
 * service, whose first matching firewall rule is an SNAT rule (firewall.h fw_snat, which put
 * the rewrites in the scratch entries), opens a flow as a fullnat flow does, without a
 * service: its source becomes the rule's toIP and a port allocated from the fullnat range (or
 * exactly toPort), its destination stays, it is forwarded by the FIB, and its replies to
 * toIP:port find the reply entry and are translated back. Conntrack creation, port allocation,
 * rewrite and forwarding are the load balancer's own (ct_create.h, nat.h, lb.bpf.c forward).
 * The entries carry svc_id PL_SVC_EGRESS (maps.h).
 */
#ifndef PYLOXI_EGRESS_H
#define PYLOXI_EGRESS_H

#include "pyloxi/ct_create.h"
#include "pyloxi/fwd.h"
#include "pyloxi/stats.h"
#include "pyloxi/verdict.h"

/* Is the destination of `p` this host? Then the packet is not routed through the LB and is
 * left to the kernel untranslated (a pod talking to its node). Not inlined: the lookup's
 * parameters stay out of the new-flow frame. */
static __noinline int egress_local_dst(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_fib_lookup fib = {};

	if (!skb || !p)
		return 0;
	fib_addrs(&fib, p->key.family, &p->key.saddr, &p->key.daddr);
	fib.l4_protocol = p->key.proto;
	fib.ifindex = skb->ingress_ifindex;
	return bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) ==
	       BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* Open the egress flow of `p` from the scratch entries fw_snat filled. PL_CONTINUE with *vp its
 * entry, PL_PASS (not ours: to the host itself) or PL_DROP: a TCP packet other than a SYN
 * (a flow lost mid-stream: a new source port would only earn a RST), or no free port
 * (counted nat_exhausted). Never PL_PASS for a packet the kernel would forward: it would leave
 * with the untranslated source. */
static __always_inline enum pl_verdict egress_open(struct __sk_buff *skb, const struct pkt *p,
						   __u64 now, struct ct_val **vp)
{
	__u32 zero = 0;
	struct flow_scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	enum pl_verdict rc;

	if (!sc)
		return PL_DROP;
	if (egress_local_dst(skb, p))
		return PL_PASS;
	if (p->key.proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST)) != TCPF_SYN) {
		count(PL_ST_EGRESS_REFUSED);
		return PL_DROP;
	}
	rc = ct_create(skb, 0, p, sc, PL_SVC_EGRESS, sc->fwd.ep_idx, PL_GID_NONE, PL_MODE_FULLNAT,
		       sc->fwd.ep_idx == PL_EGRESS_F_FIXED ? PL_SNAT_FIXED : PL_SNAT_ALLOC, 0, now,
		       vp);
	return rc == PL_PASS ? PL_DROP : rc;   /* PASS: no free tuple, counted */
}

#endif
