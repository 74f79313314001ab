/* A hostile container's flood of the sensor's flow table and event buffer:
 * connect() one UDP socket to ever new destinations in 198.18.192.0/18 (the
 * test network; connect() on UDP sends no packet) for SECONDS, then print
 * how many connects it made.   flood SECONDS */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	double secs = argc > 1 ? atof(argv[1]) : 10;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) { perror("socket"); return 1; }
	struct sockaddr_in a = {.sin_family = AF_INET};
	unsigned long n = 0;
	double end = now() + secs;
	while (now() < end) {
		for (int k = 0; k < 1024; k++, n++) {
			unsigned host = n & 0x3fff;                   /* 198.18.192.0/18 */
			a.sin_addr.s_addr = htonl(0xC612C000u | host);
			a.sin_port = htons(1024 + (n >> 14) % 60000);
			connect(s, (struct sockaddr *)&a, sizeof(a));
		}
	}
	printf("%lu\n", n);
	return 0;
}
