/* A raw socket held by a process whose main thread has exited: its other
 * thread keeps the socket, while /proc/<pid>/ns/net and /proc/<pid>/net
 * of the process vanish (only /proc/<tid>/... of the live thread remain).
 * A rescan reading processes (cgroup.procs) instead of threads would find
 * nothing in a container where this is the only process, and call it clean.
 *
 * Usage: zleader WAIT RESOLVER NAME PORT. The thread opens the raw socket,
 * waits WAIT seconds (the sensor's rescans run meanwhile), asks RESOLVER
 * (UDP 53) for NAME's A record, connects to the answer on PORT and sends
 * 64 KiB. Exit status 0 when all of it happened. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns_name.h"

static char **args;

static int query(const char *resolver, const char *name, struct in_addr *out)
{
	unsigned char q[512], r[512];
	size_t n = 0;
	memcpy(q, "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
	n = 12;
	n = put_question(q, n, name);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
	inet_pton(AF_INET, resolver, &sa.sin_addr);
	struct timeval tv = {.tv_sec = 3};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (sendto(s, q, n, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	ssize_t got = recv(s, r, sizeof r, 0);
	close(s);
	/* the answer's first A record: its rdata ends the single-answer response */
	if (got < (ssize_t)n + 16 || r[7] == 0)
		return -1;
	memcpy(out, r + got - 4, 4);
	return 0;
}

static void *worker(void *arg)
{
	(void)arg;
	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (raw < 0) {
		perror("raw socket");
		exit(2);
	}
	sleep(atoi(args[1]));
	struct in_addr a;
	if (query(args[2], args[3], &a) < 0) {
		fprintf(stderr, "no answer\n");
		exit(3);
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(args[4])), .sin_addr = a};
	if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("connect");
		exit(4);
	}
	static char buf[65536];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)(i * 2654435761u >> 24);
	if (send(c, buf, sizeof buf, 0) < 0)
		exit(5);
	sleep(2);
	exit(0);
}

int main(int argc, char **argv)
{
	pthread_t t;
	if (argc != 5)
		return 1;
	args = argv;
	if (pthread_create(&t, 0, worker, 0) != 0)
		return 1;
	pthread_exit(0);
}
