/* Load generator for bench_bpf_cost.py: many short TCP connections over
 * loopback. A forked server accepts, reads a 32-byte request, answers 32
 * bytes and closes; the client connects, sends, reads the answer and closes,
 * in a loop for SECONDS. Both sides close with SO_LINGER 0 (RST), so no
 * TIME_WAIT piles up and ephemeral ports do not run out.
 *   conns SECONDS PORT      prints connections completed per second */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void rst_close(int fd) {
	struct linger l = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: conns SECONDS PORT\n");
		return 2;
	}
	double secs = atof(argv[1]);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 1024) < 0) {
		perror("listen");
		return 1;
	}
	char buf[32];
	memset(buf, 'x', sizeof(buf));
	pid_t srv = fork();
	if (srv == 0) {
		for (;;) {
			int c = accept(ls, NULL, NULL);
			if (c < 0)
				continue;
			if (read(c, buf, sizeof(buf)) > 0)
				(void)!write(c, buf, sizeof(buf));
			rst_close(c);
		}
	}
	close(ls);
	long n = 0, failed = 0;
	double t0 = now(), end = t0 + secs;
	while (now() < end) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 && write(s, buf, sizeof(buf)) == sizeof(buf) &&
		    read(s, buf, sizeof(buf)) > 0)
			n++;
		else
			failed++;
		rst_close(s);
	}
	double el = now() - t0;
	kill(srv, SIGKILL);
	waitpid(srv, NULL, 0);
	printf("%.1f %ld\n", n / el, failed);
	return 0;
}
