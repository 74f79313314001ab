/* Load generator for bench_unix_connect.py: many short unix stream
 * connections. A forked server accepts and closes; the client connects and
 * closes, in a loop for SECONDS: each connect(2) runs the connect_unix
 * cgroup hook and the unix_stream_connect LSM hook once.
 *   unixconns SECONDS PATH      prints connections completed per second */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	double seconds = atof(argv[1]);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[2], sizeof(a.sun_path) - 1);
	unlink(argv[2]);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 512)) {
		perror("listen");
		return 1;
	}
	pid_t server = fork();
	if (server == 0) {
		for (;;) {
			int c = accept(l, 0, 0);
			if (c >= 0)
				close(c);
		}
	}
	close(l);
	long n = 0;
	double t0 = now(), end = t0 + seconds;
	while (now() < end) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a))) {
			perror("connect");
			break;
		}
		close(s);
		n++;
	}
	double el = now() - t0;
	kill(server, SIGKILL);
	waitpid(server, 0, 0);
	unlink(argv[2]);
	printf("%.1f\n", n / el);
	return 0;
}
