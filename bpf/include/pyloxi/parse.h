/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Packet parsing into a flat context: Ethernet -> IPv4 or IPv6 (extension headers) ->
 * TCP/UDP/SCTP/ICMP or ICMPv6 echo. */
#ifndef PYLOXI_PARSE_H
#define PYLOXI_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pyloxi/maps.h"
#include "pyloxi/addr.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* not in the uapi headers */
struct frag_hdr {
	__u8   nexthdr;
	__u8   reserved;
	__be16 frag_off;      /* offset in 8-byte units << 3 | more fragments */
	__be32 identification;
};

struct pkt {
	struct ct_key key;    /* tuple as received (ICMPv6 echo: proto IPPROTO_ICMP, see maps.h) */
	__u32 l3off;
	__u32 l4off;
	__u32 len;            /* skb->len */
	__u32 frag_id;        /* IP identification (network order; IPv6: the fragment header's) */
	__u16 l3len;          /* IPv4 total length / IPv6 payload length + 40, host order */
	__u8  tcp_flags;      /* raw TCP flags byte (tcp only) */
	__u8  icmp_type;      /* echo: ICMP_ECHO or ICMP_ECHOREPLY, for both families */
	__u8  ttl;            /* TTL or hop limit */
	__u8  frag;           /* PL_FRAG_*: later fragments carry no L4 header */
	__u8  sctp_chunk;     /* SCTP: type of the first chunk (PL_SCTP_NONE: none) */
	__u8  pad[3];
	__u32 sctp_vtag;      /* SCTP: the common header's verification tag, as on the wire */
};

#define PL_SCTP_NONE 0xff

#define PL_FRAG_NONE  0
#define PL_FRAG_FIRST 1   /* offset 0, more fragments: has the L4 header */
#define PL_FRAG_LATER 2   /* offset > 0: ports come from the first fragment (frag.h) */

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

#define PL_IPV6_EXT_MAX 4   /* extension headers walked before the L4 header */

/* PARSE_FRAGMENT: a later fragment, key without ports. PARSE_ICMP_ERROR: an ICMP or ICMPv6
 * error, which may be about one of our flows (icmp.h, icmp6.h). PARSE_EXT_PASS: an IPv6 packet
 * whose extension headers we do not walk (ESP, AH, a routing header still to be followed, more
 * than PL_IPV6_EXT_MAX): the kernel's, counted. */
enum parse_rc { PARSE_OK = 0, PARSE_NOT_OURS, PARSE_FRAGMENT, PARSE_ICMP_ERROR, PARSE_EXT_PASS };

/* The L4 header at p->l4off: ports (or the echo identifier) and flags. */
static __always_inline int parse_l4(struct pkt *p, void *l4, void *data_end)
{
	switch (p->key.proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return PARSE_NOT_OURS;
		p->key.sport = th->source;
		p->key.dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* SCTP's common header starts with the two ports, as UDP does */
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end)
			return PARSE_NOT_OURS;
		p->key.sport = uh->source;
		p->key.dport = uh->dest;
		if (p->key.proto == IPPROTO_SCTP) {
			/* verification tag (bytes 4-7) and the first chunk's type (byte 12) */
			__u8 *b = l4;
			if ((void *)(b + 13) <= data_end) {
				p->sctp_vtag = *(__u32 *)(b + 4);
				p->sctp_chunk = b[12];
			}
		}
		return PARSE_OK;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ih = l4;
		if ((void *)(ih + 1) > data_end)
			return PARSE_NOT_OURS;
		if (ih->type == ICMP_DEST_UNREACH || ih->type == ICMP_TIME_EXCEEDED ||
		    ih->type == ICMP_PARAMETERPROB)
			return p->frag == PL_FRAG_NONE ? PARSE_ICMP_ERROR : PARSE_NOT_OURS;
		if (ih->type != ICMP_ECHO && ih->type != ICMP_ECHOREPLY)
			return PARSE_NOT_OURS;
		p->icmp_type = ih->type;
		p->key.sport = ih->un.echo.id;
		p->key.dport = 0;
		return PARSE_OK;
	}
	case IPPROTO_ICMPV6: {
		struct icmphdr *ih = l4;   /* the same 8-byte layout */
		if ((void *)(ih + 1) > data_end)
			return PARSE_NOT_OURS;
		/* errors: destination unreachable, packet too big, time exceeded, parameter
		 * problem; neighbour discovery and everything else is the kernel's */
		if (ih->type >= ICMPV6_DEST_UNREACH && ih->type <= ICMPV6_PARAMPROB)
			return p->frag == PL_FRAG_NONE ? PARSE_ICMP_ERROR : PARSE_NOT_OURS;
		if (ih->type != ICMPV6_ECHO_REQUEST && ih->type != ICMPV6_ECHO_REPLY)
			return PARSE_NOT_OURS;
		/* one echo protocol in the tables: a NAT64 flow's two entries then differ only in
		 * their family, and every echo rule (protocol icmp) serves both */
		p->key.proto = IPPROTO_ICMP;
		p->icmp_type = ih->type == ICMPV6_ECHO_REQUEST ? ICMP_ECHO : ICMP_ECHOREPLY;
		p->key.sport = ih->un.echo.id;
		p->key.dport = 0;
		return PARSE_OK;
	}
	}
	return PARSE_NOT_OURS;
}

static __always_inline void pkt_init(struct pkt *p, __u32 len, __u8 family)
{
	p->l3off = sizeof(struct ethhdr);
	p->len = len;
	p->key.family = family;
	p->key.pad[0] = p->key.pad[1] = 0;
	p->tcp_flags = 0;
	p->icmp_type = 0;
	p->frag = PL_FRAG_NONE;
	p->frag_id = 0;
	p->sctp_chunk = PL_SCTP_NONE;
	p->sctp_vtag = 0;
}

static __always_inline int parse_ipv4(__u32 len, struct pkt *p, void *data, void *data_end)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return PARSE_NOT_OURS;
	pkt_init(p, len, PL_AF_INET);
	p->l4off = sizeof(struct ethhdr) + ip->ihl * 4;
	p->l3len = bpf_ntohs(ip->tot_len);
	addr_set_v4(&p->key.saddr, ip->saddr);
	addr_set_v4(&p->key.daddr, ip->daddr);
	p->key.proto = ip->protocol;
	p->ttl = ip->ttl;
	p->frag_id = ip->id;
	if (ip->frag_off & bpf_htons(0x3fff)) {
		if (ip->frag_off & bpf_htons(0x1fff)) {
			p->key.sport = p->key.dport = 0;
			p->frag = PL_FRAG_LATER;
			return PARSE_FRAGMENT;
		}
		p->frag = PL_FRAG_FIRST;
	}
	return parse_l4(p, data + p->l4off, data_end);
}

/*
 * IPv6: the fixed header, then up to PL_IPV6_EXT_MAX extension headers. Hop-by-hop and
 * destination options are skipped; a routing header with no segments left too (the packet is
 * for us); a fragment header gives the fragment's offset and id. Anything else before the L4
 * header is the kernel's (PARSE_EXT_PASS).
 */
static __always_inline int parse_ipv6(__u32 len, struct pkt *p, void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__u32 off = sizeof(struct ethhdr) + sizeof(*ip6);
	__u8 nh;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return PARSE_NOT_OURS;
	pkt_init(p, len, PL_AF_INET6);
	__builtin_memcpy(&p->key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(&p->key.daddr, &ip6->daddr, 16);
	p->ttl = ip6->hop_limit;
	p->l3len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	nh = ip6->nexthdr;
#pragma unroll
	for (int i = 0; i < PL_IPV6_EXT_MAX; i++) {
		__u8 *h = data + (off & 0xff);   /* bounded: 14 + 40 + 4 headers of at most 48 */

		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_DSTOPTS && nh != IPPROTO_ROUTING &&
		    nh != IPPROTO_FRAGMENT)
			break;
		if ((void *)(h + 8) > data_end)
			return PARSE_NOT_OURS;
		if (nh == IPPROTO_FRAGMENT) {
			struct frag_hdr *fh = (void *)h;
			__u16 fo = bpf_ntohs(fh->frag_off);

			p->frag_id = fh->identification;
			nh = fh->nexthdr;
			off += sizeof(*fh);
			if (fo & ~7) {   /* offset > 0 */
				/* an echo's later fragments follow its first, as its echo does */
				p->key.proto = nh == IPPROTO_ICMPV6 ? IPPROTO_ICMP : nh;
				p->key.sport = p->key.dport = 0;
				p->frag = PL_FRAG_LATER;
				p->l4off = off;
				return PARSE_FRAGMENT;
			}
			if (fo & 1)      /* more fragments */
				p->frag = PL_FRAG_FIRST;
			continue;
		}
		if (nh == IPPROTO_ROUTING && h[3] != 0)   /* segments left: not its destination */
			return PARSE_EXT_PASS;
		nh = h[0];
		off += (h[1] + 1) * 8;
		if (off > 14 + 40 + PL_IPV6_EXT_MAX * 48)
			return PARSE_EXT_PASS;
	}
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_DSTOPTS || nh == IPPROTO_ROUTING ||
	    nh == IPPROTO_FRAGMENT || nh == IPPROTO_AH || nh == IPPROTO_ESP)
		return PARSE_EXT_PASS;
	p->key.proto = nh;
	p->l4off = off;
	return parse_l4(p, data + (off & 0xff), data_end);
}

/* The frame [data, data_end), `len` bytes long (skb->len: with a GSO packet's payload beyond
 * data_end), into p. TC and XDP parse with this one function. */
static __always_inline int parse_frame(void *data, void *data_end, __u32 len, struct pkt *p)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PARSE_NOT_OURS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(len, p, data, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(len, p, data, data_end);
	return PARSE_NOT_OURS;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	return parse_frame((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, p);
}

#endif
