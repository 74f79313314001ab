/* A held connection that keeps moving between descriptor numbers, with a
 * decoy socket put at each number it leaves (review of the unix sweep: the
 * sweep shut a decoy down and said the connection was cut). Usage:
 * unixrotate PATH GOFILE. Prints "ready"; after GOFILE appears, stops
 * moving, sends an HTTP request for /_ping and prints what comes back. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
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
	const char *req = "GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n";
	if (write(cur, req, strlen(req)) < 0) {
		printf("error: write: %s\n", strerror(errno));
		return 1;
	}
	char buf[256] = {0};
	ssize_t n = read(cur, buf, sizeof buf - 1);
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
