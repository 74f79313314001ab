/* Shared by the adversarial tests' small DNS clients (zleader.c, dnsq.c). */
#ifndef DNS_NAME_H
#define DNS_NAME_H
#include <string.h>

/* Append NAME's labels, the root label and QTYPE A / QCLASS IN at q + n;
 * returns the new length. */
static size_t put_question(unsigned char *q, size_t n, const char *name)
{
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		q[n++] = (unsigned char)len;
		memcpy(q + n, p, len);
		n += len;
		p += len + (dot ? 1 : 0);
	}
	q[n++] = 0;
	memcpy(q + n, "\x00\x01\x00\x01", 4);
	return n + 4;
}
#endif
