/*
 * udpblocks BLOCK: send 64-byte UDP datagrams over loopback, forever, and
 * time them in blocks of BLOCK datagrams.
 *
 * Used by bench_hook_cost.py. The receiving socket is bound to 127.0.0.1 on a
 * port the kernel picks, with a small receive buffer, and is never read: every
 * datagram takes the egress path, loopback delivery and the ingress path (so
 * both cgroup_skb hooks run), then is dropped on the full receive queue. The
 * sender does nothing but send(), so the time per datagram is the kernel's
 * per-packet cost plus the syscall.
 *
 * Output, one line per block (line-buffered, so a reader sees each block as
 * it ends):   START_NS END_NS NS_PER_DATAGRAM FAILED_SENDS
 * with START_NS/END_NS on CLOCK_MONOTONIC (Python's time.monotonic_ns()), so
 * the driver can tell which attach/detach interval each block fell in, and
 * FAILED_SENDS the number of send() calls in the block that did not send the
 * whole datagram (the driver reports them; they should be 0).
 * Runs until killed (SIGTERM).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: %s BLOCK (datagrams per timed block)\n", argv[0]);
		return 2;
	}
	long block = atol(argv[1]);
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = 0,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t len = sizeof addr;
	int rcv = socket(AF_INET, SOCK_DGRAM, 0);
	int rcvbuf = 4096; /* the kernel doubles it; the queue fills at once */
	if (rcv < 0 || setsockopt(rcv, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0 ||
	    bind(rcv, (struct sockaddr *)&addr, sizeof addr) < 0 ||
	    getsockname(rcv, (struct sockaddr *)&addr, &len) < 0) {
		perror("udpblocks: receiver");
		return 1;
	}
	int snd = socket(AF_INET, SOCK_DGRAM, 0);
	if (snd < 0 || connect(snd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		perror("udpblocks: sender");
		return 1;
	}
	char buf[64];
	for (int i = 0; i < (int)sizeof buf; i++)
		buf[i] = (char)(i * 37);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		long failed = 0;
		long long t0 = now_ns();
		for (long i = 0; i < block; i++)
			failed += send(snd, buf, sizeof buf, 0) != (ssize_t)sizeof buf;
		long long t1 = now_ns();
		printf("%lld %lld %.2f %ld\n", t0, t1, (double)(t1 - t0) / (double)block, failed);
	}
}
