/* A held connection that keeps moving (review of the unix sweep: it shut a
 * decoy down and said the connection was cut; CI: it outran the sweep's
 * tries). Usage: unixrotate PATH GOFILE [MODE]. MODE "spin" (default): a
 * thread moves it between descriptor numbers, a decoy socket put at each
 * number it leaves. MODE "pass": two processes hand it back and forth in
 * SCM_RIGHTS messages, each closing its copy once sent, so at any moment
 * one of them or neither (in flight) holds it. Prints "ready"; after
 * GOFILE appears, stops moving, sends an HTTP request for /_ping and
 * prints what comes back. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "scm_rights.h"

#define BASE 100
#define K 64
static volatile int cur = -1, stop = 0;

static void *spin(void *x)
{
	(void)x;
	for (int i = 0; !stop; i++) {
		int next = BASE + (i % K);
		if (next == cur)
			continue;
		int old = cur, d[2];
		dup2(old, next); /* the connection at both numbers */
		cur = next;
		socketpair(AF_UNIX, SOCK_STREAM, 0, d); /* a decoy over the old one */
		dup2(d[0], old);
		close(d[0]);
		close(d[1]);
	}
	return 0;
}

static int ask(int fd);

/* MODE pass: returns in the process holding the connection once GOFILE
 * is there, the other one killed */
static int pass(int fd, const char *go)
{
	int ch[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, ch)) {
		perror("socketpair");
		return -1;
	}
	pid_t child = fork();
	int side = child == 0 ? ch[1] : ch[0];
	pid_t other = child == 0 ? getppid() : child;
	struct stat st;
	if (child == 0) /* the parent holds it first */
		fd = recv_fd(side);
	for (;;) {
		if (!stat(go, &st)) {
			kill(other, SIGKILL);
			return fd;
		}
		send_fd(side, fd);
		close(fd);
		fd = recv_fd(side);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return 2;
	int passing = argc == 4 && !strcmp(argv[3], "pass");
	signal(SIGPIPE, SIG_IGN);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		perror("connect");
		return 1;
	}
	for (int i = 0; i < K; i++) {
		int d[2];
		socketpair(AF_UNIX, SOCK_STREAM, 0, d);
		dup2(d[0], BASE + i);
		close(d[0]);
		close(d[1]);
	}
	if (passing) {
		printf("ready\n");
		fflush(stdout);
		return ask(pass(fd, argv[2]));
	}
	dup2(fd, BASE + K);
	close(fd);
	cur = BASE + K;
	pthread_t t;
	pthread_create(&t, 0, spin, 0);
	printf("ready\n");
	fflush(stdout);
	struct stat st;
	while (stat(argv[2], &st))
		usleep(10000);
	stop = 1;
	pthread_join(t, 0);
	return ask(cur);
}

static int ask(int fd)
{
	const char *req = "GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n";
	if (write(fd, req, strlen(req)) < 0) {
		printf("error: write: %s\n", strerror(errno));
		return 1;
	}
	char buf[256] = {0};
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n <= 0) {
		printf(n == 0 ? "eof\n" : "error: read: %s\n", strerror(errno));
		return 1;
	}
	char *nl = strchr(buf, '\r');
	if (nl)
		*nl = 0;
	printf("answer: %s\n", buf);
	return 0;
}
