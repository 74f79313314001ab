/* Load generator for bench_drain.py: connect() or exec at a target rate
 * for a duration, printing how many it did. connect() is a UDP connect to
 * loopback (one connect event, no packet).
 *   gen connect RATE SECONDS PORT
 *   gen exec RATE SECONDS [EXE]      (exec of EXE, default /bin/true) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
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

extern char **environ;

int main(int argc, char **argv) {
	if (argc < 4) return 2;
	double rate = atof(argv[2]), secs = atof(argv[3]);
	int is_exec = strcmp(argv[1], "exec") == 0;
	const char *exe = (is_exec && argc > 4) ? argv[4] : "/bin/true";
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (!is_exec) a.sin_port = htons(atoi(argv[4]));
	long done = 0;
	double t0 = now(), end = t0 + secs;
	while (now() < end) {
		double due = t0 + done / rate;
		while (now() < due) ;
		if (is_exec) {
			/* posix_spawn (CLONE_VFORK): the cheapest exec there is */
			pid_t p;
			char *av[] = {"true", 0};
			/* a static binary: no dynamic loader, the cheapest real exec */
			posix_spawn(&p, exe, 0, 0, av, environ);
			/* reap without waiting for each child: keeps the rate */
			while (waitpid(-1, 0, WNOHANG) > 0) ;
		} else {
			/* connected UDP: the connect4 hook fires, no packet is sent */
			int s = socket(AF_INET, SOCK_DGRAM, 0);
			connect(s, (struct sockaddr *)&a, sizeof(a));
			close(s);
		}
		done++;
	}
	while (wait(0) > 0) ;
	printf("%ld %.3f\n", done, now() - t0);
	return 0;
}
