/* A descriptor sent in, and taken out of, an SCM_RIGHTS message: how the
 * adversarial programs park a socket in flight, where no process holds it
 * in /proc/<pid>/fd (pkthide.c, unixhide.c). */
#ifndef SL_TEST_SCM_RIGHTS_H
#define SL_TEST_SCM_RIGHTS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void send_fd(int via, int fd)
{
	char byte = 'x', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&byte, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(via, &m, 0) < 0) {
		perror("sendmsg");
		exit(1);
	}
}

static int recv_fd(int via)
{
	char byte, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&byte, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	if (recvmsg(via, &m, 0) < 0) {
		perror("recvmsg");
		exit(1);
	}
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

#endif
