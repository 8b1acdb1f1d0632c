/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Conntrack state on one entry: the partner entry's key, TCP flag bits, and TCP window tracking
 * (Linux conntrack's tcp_in_window reduced to what judging a RST or FIN needs). The tables and
 * what moves flows between them: conntrack.h.
 */
#ifndef PYLOXI_CT_H
#define PYLOXI_CT_H

#include "pyloxi/parse.h"
#include "pyloxi/tables.h"

/* The key of the other direction's entry, derived from this entry's rewrite. */
static __always_inline void partner_key(const struct ct_val *v, __u8 proto, struct ct_key *out)
{
	out->saddr = v->nat_daddr;
	out->daddr = v->nat_saddr;
	if (proto == IPPROTO_ICMP) {   /* the echo identifier is the same both ways */
		out->sport = v->nat_sport;
		out->dport = 0;
	} else {
		out->sport = v->nat_dport;
		out->dport = v->nat_sport;
	}
	out->proto = proto;
	out->family = v->nat_family;
	out->pad[0] = out->pad[1] = 0;
}

/* A TCP flow is over once either side reset it, or both sides sent FIN. */
static __always_inline int tcp_closed(__u32 a, __u32 b)
{
	return ((a | b) & PL_CT_RST) || ((a & PL_CT_FIN) && (b & PL_CT_FIN));
}

static __always_inline __u32 tcp_bits(__u8 f)
{
	__u32 bits;

	if ((f & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		bits = PL_CT_SYN;
	else if (f & TCPF_SYN)
		bits = PL_CT_SYNACK;
	else
		bits = (f & TCPF_ACK) ? PL_CT_ACK : 0;
	if (f & TCPF_FIN)
		bits |= PL_CT_FIN;
	if (f & TCPF_RST)
		bits |= PL_CT_RST;
	return bits;
}

/* Sequence arithmetic modulo 2^32, as the kernel's before()/after(). */
static __always_inline int seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

struct tcp_seg {
	__u32 seq;            /* host order */
	__u32 ack;
	__u32 end;            /* seq + payload length + SYN + FIN */
	__u32 win;            /* raw window field (unscaled) */
	__u32 doff;           /* header length in bytes */
};

/* Read the sequence fields of the TCP packet `p` in the frame starting at `data`. The payload
 * length comes from the IP length, not the frame's: Ethernet pads short frames. Returns -1 if
 * the headers are not there. (TC and XDP: tcp_segment, xdp.h.) */
static __always_inline int tcp_segment_in(void *data, void *data_end, const struct pkt *p,
					  struct tcp_seg *s)
{
	struct tcphdr *th = data + (p->l4off & 0xff);   /* bounded for the verifier */

	if ((void *)(th + 1) > data_end)
		return -1;
	s->seq = bpf_ntohl(th->seq);
	s->ack = bpf_ntohl(th->ack_seq);
	s->win = bpf_ntohs(th->window);
	s->doff = th->doff * 4;
	__u32 hdrs = p->l4off - p->l3off + s->doff;
	__u32 tot = p->l3len;
	__u32 len = tot > hdrs ? tot - hdrs : 0;
	s->end = s->seq + len + !!th->syn + !!th->fin;
	return 0;
}

/*
 * TC and XDP share conntrack (and XDP creates flows with it, xdp.h): where it reads the packet,
 * `ctx` is the program's context, a struct __sk_buff or a struct xdp_md, and `xdp` a constant
 * that says which. Every caller passes a literal, so each program's copy keeps only its own
 * context fields and helpers (the other kind's would not load).
 */
static __always_inline int tcp_segment(void *ctx, int xdp, const struct pkt *p, struct tcp_seg *s)
{
	if (xdp) {
		struct xdp_md *x = ctx;
		return tcp_segment_in((void *)(long)x->data, (void *)(long)x->data_end, p, s);
	}
	struct __sk_buff *skb = ctx;
	return tcp_segment_in((void *)(long)skb->data, (void *)(long)skb->data_end, p, s);
}

struct wsopt_ctx {
	__u8 opt[64];   /* 40 bytes of options at most; 64 so that "& 63" bounds every index */
	__u32 i;
	__u32 olen;
	int ws;
};

/* One option per step. A bpf_loop callback: the verifier checks it once, where an open-coded
 * loop over a variable-length option list makes it walk every possible offset. */
static long wsopt_step(__u32 n, void *data)
{
	struct wsopt_ctx *c = data;
	__u32 i = c->i;

	if (i >= c->olen)
		return 1;
	__u8 kind = c->opt[i & 63];
	if (kind == 0)          /* end of options */
		return 1;
	if (kind == 1) {        /* no-op */
		c->i = i + 1;
		return 0;
	}
	__u8 len = c->opt[(i + 1) & 63];
	if (kind == 3 && len == 3 && i + 2 < c->olen) {
		c->ws = c->opt[(i + 2) & 63];
		return 1;
	}
	if (len < 2)
		return 1;
	c->i = i + len;
	return 0;
}

/* The window-scale option in the `olen` option bytes read into c->opt (PL_TD_NO_WS if absent). */
static __always_inline int wsopt_scan(struct wsopt_ctx *c, __u32 olen)
{
	c->olen = olen;
	c->ws = PL_TD_NO_WS;
	bpf_loop(40, wsopt_step, c, 0);
	return c->ws;
}

/* The options' length of a TCP header `doff` bytes long worth reading, else 0. */
static __always_inline __u32 wsopt_len(__u32 doff)
{
	if (doff <= 20 || doff > 60)
		return 0;
	__u32 olen = (doff - 20) & 63;
	return olen < 4 ? 0 : olen;
}

/* The window-scale option of a SYN (PL_TD_NO_WS if absent), TC's and XDP's. */
static __noinline int tcp_wsopt_skb(struct __sk_buff *skb, __u32 l4off, __u32 doff)
{
	struct wsopt_ctx c;
	__u32 olen = wsopt_len(doff);

	if (!olen)
		return PL_TD_NO_WS;
	__builtin_memset(&c, 0, sizeof(c));
	if (bpf_skb_load_bytes(skb, (l4off & 0xff) + 20, c.opt, olen))
		return PL_TD_NO_WS;
	return wsopt_scan(&c, olen);
}

static __noinline int tcp_wsopt_xdp(struct xdp_md *ctx, __u32 l4off, __u32 doff)
{
	struct wsopt_ctx c;
	__u32 olen = wsopt_len(doff);

	if (!olen)
		return PL_TD_NO_WS;
	__builtin_memset(&c, 0, sizeof(c));
	if (bpf_xdp_load_bytes(ctx, (l4off & 0xff) + 20, c.opt, olen))
		return PL_TD_NO_WS;
	return wsopt_scan(&c, olen);
}

/* (ctx, xdp: see tcp_segment) */
static __always_inline int tcp_wsopt(void *ctx, int xdp, __u32 l4off, __u32 doff)
{
	return xdp ? tcp_wsopt_xdp(ctx, l4off, doff) : tcp_wsopt_skb(ctx, l4off, doff);
}

/* Learn from a packet of this entry's direction: how far it has sent, and (with ACK) how far
 * the other direction may send. Writes only what moved, to leave the cache line clean. */
static __always_inline void td_update(struct ct_val *v, const struct tcp_seg *s, __u8 flags)
{
	/* window fields of SYN segments are never scaled (RFC 7323) */
	__u32 win = (flags & TCPF_SYN) ? s->win : s->win << (v->td_wscale & 15);
	__u8 tf = v->td_flags;

	if (!(tf & PL_TD_SENT) || seq_before(v->td_end, s->end))
		v->td_end = s->end;
	if (win > v->td_maxwin)
		v->td_maxwin = win;
	if (flags & TCPF_ACK) {
		__u32 edge = s->ack + win;
		if (v->td_lastack != s->ack)
			v->td_lastack = s->ack;
		if (!(tf & PL_TD_ACKED) || seq_before(v->td_edge, edge))
			v->td_edge = edge;
		tf |= PL_TD_ACKED;
	}
	tf |= PL_TD_SENT;
	if (tf != v->td_flags)
		v->td_flags = tf;
}

/* May a RST or FIN of `snd`'s direction act on the flow? As Linux: the segment must lie in the
 * receiver's window, [snd end - rcv's largest window, rcv's right edge]. A blind attacker must
 * then guess within one window of 2^32 sequence numbers. */
static __always_inline int td_in_window(const struct ct_val *snd, const struct ct_val *rcv,
					const struct tcp_seg *s, __u8 flags)
{
	if ((snd->td_flags | rcv->td_flags) & PL_TD_LIBERAL)
		return 1;
	/* The answer to an unexpected ACK (RFC 793: a RST whose seq is that ACK's ack number),
	 * e.g. a client reusing a port the server still holds in TIME_WAIT answers the server's
	 * challenge ACK so; Linux conntrack lets it through as well. Exact, so no easier to
	 * guess blind than the window. */
	if ((flags & TCPF_RST) && (rcv->td_flags & PL_TD_ACKED) && s->seq == rcv->td_lastack)
		return 1;
	if (!(snd->td_flags & PL_TD_SENT)) {
		/* the first packet from this side (e.g. the server refuses the SYN): it must
		 * acknowledge what the other side sent, as a RST in SYN-SENT must */
		return (flags & TCPF_ACK) && (rcv->td_flags & PL_TD_SENT) && s->ack == rcv->td_end;
	}
	if (!(rcv->td_flags & PL_TD_SENT))
		return 1;   /* the receiver never sent anything: nothing to judge against */
	__u32 maxwin = rcv->td_maxwin ? rcv->td_maxwin : 1;
	__u32 upper = (rcv->td_flags & PL_TD_ACKED) ? rcv->td_edge : snd->td_end + maxwin;
	__u32 lower = snd->td_end - maxwin;
	return !seq_before(upper, s->seq) && !seq_before(s->end, lower);
}

/* Once both SYNs are known: scaling applies only if both sides offered it (RFC 7323). */
static __always_inline void td_resolve_wscale(struct ct_val *a, struct ct_val *b)
{
	if (a->td_wsopt != PL_TD_NO_WS && b->td_wsopt != PL_TD_NO_WS) {
		a->td_wscale = a->td_wsopt > 14 ? 14 : a->td_wsopt;
		b->td_wscale = b->td_wsopt > 14 ? 14 : b->td_wsopt;
	} else {
		a->td_wscale = b->td_wscale = 0;
	}
}

#endif
