/* Load for bench_bpf_cost.py: 64-byte UDP datagrams over loopback from one
 * socket, as fast as it can for a duration; prints datagrams per second.
 *   udpsend SECONDS PORT connected     send() on a connected socket
 *   udpsend SECONDS PORT unconnected   sendto() one destination (a resolver,
 *                                      a syslog or statsd client)
 *   udpsend SECONDS PORT many N        sendto() N destinations in turn (ports
 *                                      PORT..PORT+N-1: a DNS server answering
 *                                      N clients)
 * The receivers are bound sockets never read: a full queue drops, after the
 * whole path (egress, loopback delivery, the ingress hook) has run. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc < 4) return 2;
	double secs = atof(argv[1]);
	int port = atoi(argv[2]);
	int connected = strcmp(argv[3], "connected") == 0;
	int n = strcmp(argv[3], "many") == 0 && argc > 4 ? atoi(argv[4]) : 1;
	if (n < 1 || n > 4096) return 2;
	struct sockaddr_in *dst = calloc(n, sizeof *dst);
	for (int i = 0; i < n; i++) {
		dst[i].sin_family = AF_INET;
		dst[i].sin_port = htons(port + i);
		dst[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int r = socket(AF_INET, SOCK_DGRAM, 0), sz = 4096;
		setsockopt(r, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
		if (bind(r, (void *)&dst[i], sizeof dst[i]) < 0) { perror("bind"); return 1; }
	}
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (connected && connect(s, (void *)&dst[0], sizeof dst[0]) < 0) { perror("connect"); return 1; }
	char buf[64];
	for (int i = 0; i < 64; i++) buf[i] = (char)(i * 37);
	long sent = 0;
	double t0 = now(), t = t0;
	while (t - t0 < secs) {
		for (int k = 0; k < 1000; k++, sent++) {
			if (connected)
				send(s, buf, sizeof buf, 0);
			else
				sendto(s, buf, sizeof buf, 0, (void *)&dst[sent % n], sizeof dst[0]);
		}
		t = now();
	}
	printf("%.1f\n", sent / (t - t0));
	return 0;
}
