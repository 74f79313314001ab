/* A unix connection to a runtime's socket opened before the container is
 * isolated, used after it. Usage: unixhide PATH MODE GOFILE, MODE "held"
 * (the process keeps the descriptor) or "parked" (its descriptor sent to
 * the process itself in an SCM_RIGHTS message and closed, so no process
 * holds it in /proc/<pid>/fd until it is taken out again). Prints "ready",
 * waits for GOFILE, then sends an HTTP request for /_ping on the
 * connection and prints the first line of what comes back, or the error. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "scm_rights.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	signal(SIGPIPE, SIG_IGN); /* a cut connection: say EPIPE, not die */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		return 1;
	}
	int pair[2] = {-1, -1};
	int parked = strcmp(argv[2], "parked") == 0;
	if (parked) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) < 0) {
			perror("socketpair");
			return 1;
		}
		send_fd(pair[0], fd);
		close(fd);
	}
	printf("ready\n");
	fflush(stdout);
	struct stat st;
	while (stat(argv[3], &st) != 0)
		usleep(50000);
	if (parked)
		fd = recv_fd(pair[1]);
	const char *req = "GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n";
	if (write(fd, req, strlen(req)) < 0) {
		printf("error: write: %s\n", strerror(errno));
		return 1;
	}
	char buf[256] = {0};
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0) {
		printf("error: read: %s\n", strerror(errno));
		return 1;
	}
	if (n == 0) {
		printf("eof\n");
		return 1;
	}
	char *nl = strchr(buf, '\r');
	if (nl)
		*nl = 0;
	printf("answer: %s\n", buf);
	return 0;
}
