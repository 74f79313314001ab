/* A hostile container's flood of the sensor's event buffer through hooks
 * that report every call (issue 10):
 *   evflood MODE SECONDS [PER_SECOND [DELAY]]
 *   bind     bind(2) UDP sockets to 127.0.0.1 on ever other ports (a
 *            listener event each: a non-zero port)
 *   unix     connect(2) a unix socket to a path that does not exist (the
 *            cgroup connect_unix hook runs before the path lookup)
 *   accept   TCP connections to its own loopback listener, each from a new
 *            source address in 127.0.0.0/8 (an accepted-connection event
 *            each: the kernel dedups per peer address)
 *   connect  connect(2) a UDP socket to 127.0.0.1:9 (a connect event each,
 *            one flow)
 * PER_SECOND (0: as fast as possible) paces the calls; DELAY seconds are
 * slept first. Prints how many calls it made. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int lsock = -1;

static void one(const char *mode, unsigned long n) {
	if (!strcmp(mode, "bind")) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
		a.sin_port = htons(20000 + n % 40000);
		bind(s, (struct sockaddr *)&a, sizeof(a));
		close(s);
	} else if (!strcmp(mode, "unix")) {
		static int s = -1;
		if (s < 0)
			s = socket(AF_UNIX, SOCK_DGRAM, 0);
		struct sockaddr_un u = {.sun_family = AF_UNIX};
		snprintf(u.sun_path, sizeof(u.sun_path), "/tmp/nothing-here-%lu", n % 1000);
		connect(s, (struct sockaddr *)&u, sizeof(u));
	} else if (!strcmp(mode, "accept")) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
		if (lsock < 0) {
			lsock = socket(AF_INET, SOCK_STREAM, 0);
			int one = 1;
			setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			a.sin_port = htons(7999);
			if (bind(lsock, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lsock, 1024) < 0) {
				perror("listen");
				exit(1);
			}
		}
		int c = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000000u | (2 + n % 0xfffff0));  /* 127.0.0.2 and up */
		bind(c, (struct sockaddr *)&src, sizeof(src));
		a.sin_port = htons(7999);
		if (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0) {
			int s = accept(lsock, 0, 0);
			if (s >= 0)
				close(s);
		}
		struct linger l = {1, 0};  /* RST: no TIME_WAIT pile-up */
		setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		close(c);
	} else {
		static int s = -1;
		if (s < 0)
			s = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
		a.sin_port = htons(9);
		connect(s, (struct sockaddr *)&a, sizeof(a));
	}
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: evflood bind|unix|accept|connect SECONDS [PER_SECOND [DELAY]]\n");
		return 2;
	}
	const char *mode = argv[1];
	double secs = atof(argv[2]);
	double rate = argc > 3 ? atof(argv[3]) : 0;
	if (argc > 4)
		usleep((useconds_t)(atof(argv[4]) * 1e6));
	unsigned long n = 0;
	double start = now(), end = start + secs;
	while (now() < end) {
		for (int k = 0; k < 16; k++, n++)
			one(mode, n);
		if (rate > 0) {
			double ahead = n / rate - (now() - start);
			if (ahead > 0)
				usleep((useconds_t)(ahead * 1e6));
		}
	}
	printf("%lu\n", n);
	return 0;
}
