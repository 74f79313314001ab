/* Container stand-ins for bench_memory.py: cgroups named like docker's
 * (BASE/docker/<64 hex>) with a process in each that sends one UDP packet
 * to 127.0.0.1:9, as a container's first egress would.
 *   holder hold BASE N START   create N, keep them until stdin closes
 *   holder churn BASE N START  create, send, exit, remove: N times */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void path_of(char *out, size_t n, const char *base, long i) {
	snprintf(out, n, "%s/docker/%064lx", base, 0x5100000000L + i);
}

static void child(const char *dir, int stay) {
	char procs[512];
	snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
	int fd = open(procs, O_WRONLY);
	if (fd < 0 || write(fd, "0", 1) != 1) _exit(3);
	close(fd);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	sendto(s, "hello", 5, 0, (struct sockaddr *)&a, sizeof a);
	close(s);
	if (stay) pause();
	_exit(0);
}

int main(int argc, char **argv) {
	if (argc < 5) return 2;
	const char *base = argv[2];
	long n = atol(argv[3]), start = atol(argv[4]);
	int hold = strcmp(argv[1], "hold") == 0;
	char dir[512], parent[512];
	snprintf(parent, sizeof parent, "%s/docker", base);
	mkdir(parent, 0755);
	pid_t *pids = calloc(n, sizeof(pid_t));
	for (long i = 0; i < n; i++) {
		path_of(dir, sizeof dir, base, start + i);
		if (mkdir(dir, 0755) != 0) { perror(dir); return 1; }
		pid_t p = fork();
		if (p == 0) child(dir, hold);
		if (hold) { pids[i] = p; continue; }
		waitpid(p, 0, 0);
		while (rmdir(dir) != 0) usleep(1000);
	}
	if (hold) {
		printf("ready\n");
		fflush(stdout);
		char buf[16];
		while (read(0, buf, sizeof buf) > 0) ;
		for (long i = 0; i < n; i++) kill(pids[i], SIGKILL);
		while (wait(0) > 0) ;
		for (long i = 0; i < n; i++) {
			path_of(dir, sizeof dir, base, start + i);
			while (rmdir(dir) != 0) usleep(1000);
		}
	}
	printf("done %ld\n", n);
	return 0;
}
