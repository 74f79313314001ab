/* Send COUNT crafted IPv4 non-first fragments (fragment offset 1480,
 * protocol UDP) to DEST through a raw IP_HDRINCL socket. Their first
 * payload bytes are 'AAAA': parsed as a UDP header they would read as
 * ports 16705 -> 16705.   frag DEST COUNT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IP_HDRINCL implied */
	if (s < 0) { perror("socket"); return 1; }
	unsigned char pkt[20 + 64];
	struct sockaddr_in dst = {.sin_family = AF_INET};
	inet_pton(AF_INET, argv[1], &dst.sin_addr);
	int n = atoi(argv[2]), sent = 0;
	for (int i = 0; i < n; i++) {
		memset(pkt, 'A', sizeof(pkt));
		pkt[0] = 0x45;                                  /* IPv4, 20-byte header */
		pkt[1] = 0;
		*(unsigned short *)(pkt + 2) = htons(sizeof(pkt));
		*(unsigned short *)(pkt + 4) = htons(0x5100 + i); /* id */
		*(unsigned short *)(pkt + 6) = htons(1480 / 8);   /* offset 1480, no MF */
		pkt[8] = 64;                                      /* ttl */
		pkt[9] = IPPROTO_UDP;
		*(unsigned short *)(pkt + 10) = 0;                /* checksum: kernel fills it */
		memset(pkt + 12, 0, 4);                           /* source: kernel fills it */
		memcpy(pkt + 16, &dst.sin_addr, 4);
		if (sendto(s, pkt, sizeof(pkt), 0, (struct sockaddr *)&dst, sizeof(dst)) == (ssize_t)sizeof(pkt)) sent++;
		usleep(10000);
	}
	printf("%d\n", sent);
	return 0;
}
