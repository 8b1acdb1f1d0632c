/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * What a stage of the pipeline decides about a packet. A function that decides the packet's
 * fate returns an enum pl_verdict; only the program's edge (tc_action) turns a final verdict
 * into a TC action. A helper that can only succeed or fail returns 0 or -1, as the kernel's
 * helpers do.
 */
#ifndef PYLOXI_VERDICT_H
#define PYLOXI_VERDICT_H

#include <linux/pkt_cls.h>

/* The final verdicts have the values of their TC actions, so tc_action costs a compare or two;
 * the others only pass between stages and never reach the edge. */
enum pl_verdict {
	PL_PASS     = TC_ACT_OK,         /* to the kernel's stack, as it is now */
	PL_DROP     = TC_ACT_SHOT,
	PL_REDIRECT = TC_ACT_REDIRECT,   /* a redirect helper has taken the packet */
	PL_CONTINUE = -1,                /* on to the next stage */
	PL_RESTART  = -2,                /* the tuple's flow is over: the packet opens a new one */
	PL_FORWARD  = -3,                /* new_flow made the packet's entry (DSR): the pipeline
	                                  * forwards it, one call level up (the stack) */
	PL_EGRESS   = -4,                /* a firewall SNAT rule matched (egress.h): the packet
	                                  * opens an egress flow unless a service claims it */
};

/* The verdict of a bpf_redirect*() result (TC_ACT_REDIRECT, or TC_ACT_SHOT on bad arguments). */
static __always_inline enum pl_verdict redirected(long rc)
{
	return rc == TC_ACT_REDIRECT ? PL_REDIRECT : PL_DROP;
}

/* The program's edge: a final verdict as the TC action of the same meaning. */
static __always_inline int tc_action(enum pl_verdict verdict)
{
	switch (verdict) {
	case PL_DROP:
		return TC_ACT_SHOT;
	case PL_REDIRECT:
		return TC_ACT_REDIRECT;
	default:   /* PL_PASS (CONTINUE, RESTART and FORWARD never get here) */
		return TC_ACT_OK;
	}
}

#endif
