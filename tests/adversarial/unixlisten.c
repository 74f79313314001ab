/* A listener on a unix socket path (a volume shared with the host) that
 * accepts one connection and keeps it: the connection INTO a container
 * that its isolation must cut (the accepted socket lives in the
 * connecting process's network namespace, the host's). Usage:
 * unixlisten PATH. Prints "ready", then "accepted", then sleeps. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
	unlink(argv[1]);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4)) {
		perror("bind/listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	int c = accept(l, 0, 0);
	if (c < 0) {
		perror("accept");
		return 1;
	}
	printf("accepted\n");
	fflush(stdout);
	for (;;)
		pause();
}
