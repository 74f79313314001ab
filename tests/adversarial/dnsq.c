/* A DNS tunnel client of the kind that evades per-socket sampling: one UDP
 * socket for every query (iodine and dnscat2 keep theirs), each query name
 * a 56-hex-digit label of random bytes under DOMAIN.
 *
 * Usage: dnsq SERVER COUNT DOMAIN. Waits up to 1 s for each answer. Exit
 * status 0 when COUNT queries were sent. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "dns_name.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int count = atoi(argv[2]);
	const char *domain = argv[3];
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
	if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1)
		return 2;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	int rnd = open("/dev/urandom", O_RDONLY);
	if (s < 0 || rnd < 0 || connect(s, (struct sockaddr *)&to, sizeof(to)) < 0) {
		perror("dnsq");
		return 1;
	}
	struct timeval tv = {.tv_sec = 1};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < count; i++) {
		unsigned char q[512], raw[28], r[512];
		size_t n = 0;
		q[n++] = (unsigned char)(i >> 8);
		q[n++] = (unsigned char)i;
		memcpy(q + n, "\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 10);
		n += 10;
		if (read(rnd, raw, sizeof(raw)) != sizeof(raw))
			return 1;
		q[n++] = 56;
		for (int j = 0; j < 28; j++)
			n += (size_t)sprintf((char *)q + n, "%02x", raw[j]);
		n = put_question(q, n, domain);
		if (send(s, q, n, 0) != (ssize_t)n) {
			perror("dnsq send");
			return 1;
		}
		(void)recv(s, r, sizeof(r), 0);
	}
	return 0;
}
