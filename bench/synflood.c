// SYN flood for `make bench`: TCP SYNs from spoofed random sources, as fast as one core sends.
//
//   synflood DST_IP DST_PORT SRC_NET SRC_PREFIXLEN SECONDS
//
// Sources are random addresses inside SRC_NET/SRC_PREFIXLEN (the bench routes that prefix to a
// blackhole inside its own namespaces, so nothing answered ever leaves them) with random ports.
// Raw IPv4 socket with IP_HDRINCL, sendmmsg in batches. Prints one line of JSON at the end:
// {"sent": N, "seconds": S, "pps": R}.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PKT_LEN (sizeof(struct iphdr) + sizeof(struct tcphdr))

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t sum16(const void *p, size_t len, uint32_t sum)
{
	const uint16_t *w = p;
	for (; len > 1; len -= 2)
		sum += *w++;
	return sum;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s DST_IP DST_PORT SRC_NET SRC_PREFIXLEN SECONDS\n", argv[0]);
		return 2;
	}
	struct in_addr dst, net;
	if (!inet_aton(argv[1], &dst) || !inet_aton(argv[3], &net)) {
		fprintf(stderr, "bad address\n");
		return 2;
	}
	uint16_t dport = htons((uint16_t)atoi(argv[2]));
	int plen = atoi(argv[4]);
	double seconds = atof(argv[5]);
	if (plen < 8 || plen > 30) {
		fprintf(stderr, "prefix length must be 8..30\n");
		return 2;
	}
	uint32_t host_mask = (1u << (32 - plen)) - 1;
	uint32_t base = ntohl(net.s_addr) & ~host_mask;
	rng ^= (uint64_t)getpid() << 32 | (uint64_t)time(NULL);

	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	int one = 1, sndbuf = 4 << 20;
	setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

	static uint8_t pkts[BATCH][PKT_LEN];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr = dst };
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = pkts[i];
		iov[i].iov_len = PKT_LEN;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof(to);
	}

	uint64_t sent = 0;
	double t0 = now_s(), end = t0 + seconds;
	while (now_s() < end) {
		for (int i = 0; i < BATCH; i++) {
			struct iphdr *ip = (struct iphdr *)pkts[i];
			struct tcphdr *th = (struct tcphdr *)(ip + 1);
			memset(ip, 0, PKT_LEN);
			ip->version = 4;
			ip->ihl = 5;
			ip->tot_len = htons(PKT_LEN);
			ip->id = (uint16_t)next_rand();
			ip->ttl = 64;
			ip->protocol = IPPROTO_TCP;
			ip->saddr = htonl(base | (next_rand() & host_mask));
			ip->daddr = dst.s_addr;
			ip->check = fold(sum16(ip, sizeof(*ip), 0));
			th->source = htons(1024 + next_rand() % 64000);
			th->dest = dport;
			th->seq = next_rand();
			th->doff = 5;
			th->syn = 1;
			th->window = htons(64240);
			uint32_t ph = 0;
			ph += (ip->saddr & 0xffff) + (ip->saddr >> 16);
			ph += (ip->daddr & 0xffff) + (ip->daddr >> 16);
			ph += htons(IPPROTO_TCP) + htons(sizeof(*th));
			th->check = fold(sum16(th, sizeof(*th), ph));
		}
		int n = sendmmsg(fd, msgs, BATCH, 0);
		if (n > 0)
			sent += n;
		else
			usleep(100);  /* queue full: let it drain */
	}
	double took = now_s() - t0;
	printf("{\"sent\": %llu, \"seconds\": %.3f, \"pps\": %.0f}\n", (unsigned long long)sent,
	       took, sent / took);
	return 0;
}
