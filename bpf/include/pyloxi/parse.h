/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Packet parsing into a flat context: Ethernet -> IPv4 -> TCP/UDP/SCTP/ICMP echo. */
#ifndef PYLOXI_PARSE_H
#define PYLOXI_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
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

struct pkt {
	struct ct_key key;    /* tuple as received */
	__u32 l3off;
	__u32 l4off;
	__u32 len;            /* skb->len */
	__u8  tcp_flags;      /* raw TCP flags byte (tcp only) */
	__u8  icmp_type;
	__u8  ttl;
	__u8  frag;           /* PL_FRAG_*: later fragments carry no L4 header */
	__u16 ip_id;          /* IP identification (network order), for fragments */
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

/* PARSE_FRAGMENT: a later fragment, key without ports. PARSE_ICMP_ERROR: an ICMP error, which
 * may be about one of our flows (icmp.h). */
enum parse_rc { PARSE_OK = 0, PARSE_NOT_OURS, PARSE_FRAGMENT, PARSE_ICMP_ERROR };

static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_OURS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return PARSE_NOT_OURS;

	p->l3off = sizeof(*eth);
	p->l4off = sizeof(*eth) + ip->ihl * 4;
	p->len = skb->len;
	addr_set_v4(&p->key.saddr, ip->saddr);
	addr_set_v4(&p->key.daddr, ip->daddr);
	p->key.proto = ip->protocol;
	p->key.family = PL_AF_INET;
	p->key.pad[0] = p->key.pad[1] = 0;
	p->tcp_flags = 0;
	p->icmp_type = 0;
	p->ttl = ip->ttl;
	p->ip_id = ip->id;
	p->frag = PL_FRAG_NONE;
	p->sctp_chunk = PL_SCTP_NONE;
	p->sctp_vtag = 0;
	if (ip->frag_off & bpf_htons(0x3fff)) {
		if (ip->frag_off & bpf_htons(0x1fff)) {
			p->key.sport = p->key.dport = 0;
			p->frag = PL_FRAG_LATER;
			return PARSE_FRAGMENT;
		}
		p->frag = PL_FRAG_FIRST;
	}

	void *l4 = data + p->l4off;
	switch (ip->protocol) {
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
		if (ip->protocol == IPPROTO_SCTP) {
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
	}
	return PARSE_NOT_OURS;
}

#endif
