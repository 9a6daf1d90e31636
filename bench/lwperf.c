// SPDX-License-Identifier: Apache-2.0
// lwperf: a tiny netperf-like tool for bench/datapath.py (compiled by the bench with cc).
//
//   lwperf server PORT                     echo/sink server on [::]:PORT (v4-mapped too);
//                                          runs until killed (the bench kills it by pid)
//   lwperf rr     ADDR PORT SECONDS MAX    one TCP connection, 1-byte ping-pong (TCP_RR)
//   lwperf crr    ADDR PORT SECONDS MAX    connect, 1 byte each way, close (TCP_CRR)
//   lwperf stream ADDR PORT SECONDS        bulk send, 64 KiB writes (TCP_STREAM)
//
// Clients stop after SECONDS or MAX transactions, whichever comes first, and print one
// JSON line: transactions, median/p90/p99 latency in ns, rate per second (or bytes/s).
// The first byte of every connection tells the server the mode: 'R', 'C' or 'S'.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536];
	ssize_t n;
	char mode;

	if (read(fd, &mode, 1) != 1)
		goto out;
	if (mode == 'R') {
		while ((n = read(fd, buf, 1)) == 1)
			if (write(fd, buf, 1) != 1)
				break;
	} else if (mode == 'S') {
		while (read(fd, buf, sizeof(buf)) > 0)
			;
	}
out:
	close(fd);
	return NULL;
}

static __attribute__((noreturn)) void server(int port)
{
	int one = 1, zero = 0;
	int s = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	if (s < 0)
		die("socket");
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1024))
		die("bind/listen");
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		char mode;

		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		// CRR: answer inline (no thread start per connection); server closes first so
		// TIME_WAIT stays on the server's fixed port, not on the client's ephemeral ports.
		if (recv(c, &mode, 1, MSG_PEEK) == 1 && mode == 'C') {
			char req[2];
			if (read(c, req, 2) == 2)
				(void)!write(c, "c", 1);
			close(c);
			continue;
		}
		pthread_t t;
		if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c) == 0)
			pthread_detach(t);
		else
			close(c);
	}
}

static int dial(const char *addr, int port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int one = 1, fd;

	if (strchr(addr, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1)
			die("address");
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		if (inet_pton(AF_INET, addr, &a->sin_addr) != 1)
			die("address");
		len = sizeof(*a);
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct timeval tv = { .tv_sec = 2 }; // a dropped packet must not hang the bench
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&ss, len))
		die("connect");
	return fd;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *mode, uint64_t *lat, size_t n, uint64_t elapsed)
{
	if (n == 0) {
		printf("{\"mode\": \"%s\", \"transactions\": 0}\n", mode);
		return;
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("{\"mode\": \"%s\", \"transactions\": %zu, \"median_ns\": %llu, \"p90_ns\": %llu, "
	       "\"p99_ns\": %llu, \"per_s\": %.1f}\n",
	       mode, n, (unsigned long long)lat[n / 2], (unsigned long long)lat[n * 9 / 10],
	       (unsigned long long)lat[n * 99 / 100], n * 1e9 / (double)elapsed);
}

static int rr(const char *addr, int port, double secs, size_t max)
{
	uint64_t *lat = calloc(max, sizeof(*lat));
	int fd = dial(addr, port);
	uint64_t start, deadline, t0;
	char b = 'R';
	size_t n = 0;

	if (!lat || write(fd, &b, 1) != 1)
		die("rr start");
	start = now_ns();
	deadline = start + (uint64_t)(secs * 1e9);
	while (n < max) {
		t0 = now_ns();
		if (t0 >= deadline)
			break;
		if (write(fd, "x", 1) != 1 || read(fd, &b, 1) != 1)
			die("rr");
		lat[n++] = now_ns() - t0;
	}
	report("rr", lat, n, now_ns() - start);
	close(fd);
	return 0;
}

static int crr(const char *addr, int port, double secs, size_t max)
{
	uint64_t *lat = calloc(max, sizeof(*lat));
	uint64_t start = now_ns(), deadline = start + (uint64_t)(secs * 1e9), t0;
	size_t n = 0;
	char b;

	if (!lat)
		die("calloc");
	while (n < max) {
		t0 = now_ns();
		if (t0 >= deadline)
			break;
		int fd = dial(addr, port);
		if (write(fd, "Cx", 2) != 2 || read(fd, &b, 1) != 1)
			die("crr");
		(void)!read(fd, &b, 1); // EOF: the server closed first
		close(fd);
		lat[n++] = now_ns() - t0;
	}
	report("crr", lat, n, now_ns() - start);
	return 0;
}

static int stream(const char *addr, int port, double secs)
{
	static char buf[65536];
	int fd = dial(addr, port);
	uint64_t start, deadline, bytes = 0;
	ssize_t w;

	if (write(fd, "S", 1) != 1)
		die("stream start");
	start = now_ns();
	deadline = start + (uint64_t)(secs * 1e9);
	while (now_ns() < deadline) {
		w = write(fd, buf, sizeof(buf));
		if (w <= 0)
			die("stream");
		bytes += (uint64_t)w;
	}
	uint64_t elapsed = now_ns() - start;
	printf("{\"mode\": \"stream\", \"bytes\": %llu, \"bytes_per_s\": %.1f}\n",
	       (unsigned long long)bytes, bytes * 1e9 / (double)elapsed);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server"))
		server(atoi(argv[2]));
	if (argc == 6 && !strcmp(argv[1], "rr"))
		return rr(argv[2], atoi(argv[3]), atof(argv[4]), (size_t)atol(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "crr"))
		return crr(argv[2], atoi(argv[3]), atof(argv[4]), (size_t)atol(argv[5]));
	if (argc == 5 && !strcmp(argv[1], "stream"))
		return stream(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: lwperf server PORT | rr|crr ADDR PORT SECONDS MAX | "
			"stream ADDR PORT SECONDS\n");
	return 2;
}
