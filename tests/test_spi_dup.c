/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * WSPDuplicateSocket and WSPSocket from its protocol info: a listener
 * shared in this process and with a fork child, whose provider is a new
 * one (its startup there makes it); the error cases.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sw.h"

static struct sw sw;

static void setup(void)
{
	int ret = sw_load(&sw);

	cr_assert_eq(ret, 0, "loading the provider: %d", ret);
}

TestSuite(spi_dup, .init = setup);

struct acc {
	sp_socket l, a;
	int err;
};

static void *accept_main(void *arg)
{
	struct acc *x = arg;

	x->a = sw.p.accept(x->l, NULL, NULL, NULL, 0, &x->err);
	return NULL;
}

/* Connect to sin while a thread accepts on l: the accepted socket, or SP_INVALID_SOCKET. */
static sp_socket connect_accept(sp_socket l, const struct sockaddr_in *sin, sp_socket *c)
{
	struct acc x = { .l = l, .a = SP_INVALID_SOCKET };
	pthread_t t;
	int err = 0;

	cr_assert_eq(pthread_create(&t, NULL, accept_main, &x), 0);
	*c = sw_connect(&sw, sin, &err);
	cr_assert_neq(*c, SP_INVALID_SOCKET, "connect: %d", err);
	pthread_join(t, NULL);
	return x.a;
}

/* A message of len bytes from s to r through the session protocol. */
static void exchange(sp_socket s, sp_socket r, unsigned char seed)
{
	struct swc_sess ss, sr;
	struct swc_spi spi;
	char out[3000], in[3000];

	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(seed + i * 7);
	sw_spi(&sw, &spi);
	cr_assert_eq(swc_sess_init(&ss, &spi, s, NULL), 0);
	cr_assert_eq(swc_sess_init(&sr, &spi, r, NULL), 0);
	cr_assert_eq(swc_send(&ss, out, sizeof(out)), 0);
	cr_assert_eq(swc_recv(&sr, in, sizeof(in)), 0);
	cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
	swc_sess_fini(&ss);
	swc_sess_fini(&sr);
}

Test(spi_dup, a_duplicated_listener_accepts_in_the_same_process, .timeout = 60)
{
	struct sockaddr_in sin, sin2;
	sp_socket l = sw_listen(&sw, &sin), l2, c, a;
	struct sp_protocol_info info;
	int err = 0, len = sizeof(sin2);

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.duplicate_socket(l, (uint32_t)getpid(), &info, &err), 0, "%d", err);
	cr_assert_eq(info.af, AF_INET);
	cr_assert_eq(info.type, SOCK_STREAM);
	cr_assert_eq(info.process_id, (uint32_t)getpid());
	l2 = sw.p.socket_from_info(&info, 0, &err);
	cr_assert_neq(l2, SP_INVALID_SOCKET, "socket_from_info: %d", err);
	cr_assert_neq(l2, l);
	cr_assert_eq(sw.p.get_sock_name(l2, (struct sockaddr *)&sin2, &len, &err), 0);
	cr_assert_eq(sin2.sin_port, sin.sin_port, "the same address");
	/* Already listening: listen again only changes nothing. */
	cr_assert_eq(sw.p.listen(l2, 4, &err), 0);
	a = connect_accept(l2, &sin, &c);
	cr_assert_neq(a, SP_INVALID_SOCKET);
	exchange(c, a, 1); /* the sessions' end closes both */
	/* The first socket closed, the endpoint stays with the second. */
	cr_assert_eq(sw.p.close_socket(l, &err), 0);
	a = connect_accept(l2, &sin, &c);
	cr_assert_neq(a, SP_INVALID_SOCKET);
	exchange(a, c, 2);
	cr_assert_eq(sw.p.close_socket(l2, &err), 0);
	sw_unload(&sw);
}

static _Noreturn void child_fail(int code, const char *what, int err)
{
	fprintf(stderr, "child: %s: %d\n", what, err);
	_exit(code);
}

/*
 * A parent that never accepts on its listener: the fork child, with a
 * provider of its own, takes every connection; the parent connects to it.
 */
Test(spi_dup, a_fork_child_accepts_on_the_parents_listener, .timeout = 60)
{
	struct sockaddr_in sin;
	sp_socket l = sw_listen(&sw, &sin), c;
	struct sp_protocol_info info;
	struct swc_sess s;
	struct swc_spi spi;
	int err = 0, status;
	pid_t pid;
	char buf[16];

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.duplicate_socket(l, (uint32_t)getpid(), &info, &err), 0, "%d", err);
	pid = tfork_settled();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		sp_socket cl, a;
		int bad = 0;

		alarm(30);
		/* The parent's provider is not usable here until a startup of the child's own. */
		if (sw.p.socket_from_info(&info, 0, &err) != SP_INVALID_SOCKET ||
		    err != SP_WSAENETDOWN)
			_exit(1);
		err = sw_load(&sw);
		if (err)
			child_fail(2, "startup", err);
		cl = sw.p.socket_from_info(&info, 0, &err);
		if (cl == SP_INVALID_SOCKET)
			child_fail(3, "socket_from_info", err);
		for (int i = 0; i < 3; i++) {
			a = sw.p.accept(cl, NULL, NULL, NULL, 0, &err);
			if (a == SP_INVALID_SOCKET)
				child_fail(4, "accept", err);
			sw_spi(&sw, &spi);
			err = swc_sess_init(&s, &spi, a, NULL);
			if (err)
				child_fail(5, "session", err);
			memset(buf, 'a' + i, sizeof(buf));
			err = swc_send(&s, buf, sizeof(buf));
			if (err)
				child_fail(6, "send", err);
			/* The parent's answer: it has read everything. */
			err = swc_recv(&s, buf, 1);
			if (err || buf[0] != 'k')
				child_fail(7, "recv", err);
			swc_sess_fini(&s);
		}
		sw.p.close_socket(cl, &err);
		sw_unload(&sw);
		_exit(bad);
	}
	sw_spi(&sw, &spi);
	for (int i = 0; i < 3; i++) {
		char want[16];

		c = sw_connect(&sw, &sin, &err);
		cr_assert_neq(c, SP_INVALID_SOCKET, "connect %d: %d", i, err);
		cr_assert_eq(swc_sess_init(&s, &spi, c, NULL), 0);
		err = swc_recv(&s, buf, sizeof(buf));
		if (err && waitpid(pid, &status, 0) == pid)
			cr_log_error("the child: %#x", status);
		cr_assert_eq(err, 0, "recv %d: %d", i, err);
		memset(want, 'a' + i, sizeof(want));
		cr_assert_eq(memcmp(buf, want, sizeof(buf)), 0);
		cr_assert_eq(swc_send(&s, "k", 1), 0);
		swc_sess_fini(&s);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died: %#x", status);
	cr_assert_eq(WEXITSTATUS(status), 0, "the child failed: %d", WEXITSTATUS(status));
	cr_assert_eq(sw.p.close_socket(l, &err), 0);
	sw_unload(&sw);
}

Test(spi_dup, duplicate_refuses_what_it_cannot_share, .timeout = 60)
{
	struct sockaddr_in sin;
	sp_socket l = sw_listen(&sw, &sin), n, c, a;
	struct sp_protocol_info info;
	int err = 0;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	/* No room for the info. */
	cr_assert_eq(sw.p.duplicate_socket(l, (uint32_t)getpid(), NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	/* A process that is neither this one nor a child (init; none at all). */
	cr_assert_eq(sw.p.duplicate_socket(l, 1, &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.p.duplicate_socket(l, 0, &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.p.duplicate_socket(l, 0x7ffffff0u, &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	/* Not a socket. */
	cr_assert_eq(sw.p.duplicate_socket(0x12345, (uint32_t)getpid(), &info, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAENOTSOCK);
	/* Not listening yet. */
	n = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	cr_assert_neq(n, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.duplicate_socket(n, (uint32_t)getpid(), &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.p.close_socket(n, &err), 0);
	/* A connection is usable in one process at a time: both ends refuse. */
	a = connect_accept(l, &sin, &c);
	cr_assert_neq(a, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.duplicate_socket(c, (uint32_t)getpid(), &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEOPNOTSUPP);
	cr_assert_eq(sw.p.duplicate_socket(a, (uint32_t)getpid(), &info, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEOPNOTSUPP);
	exchange(c, a, 3);
	cr_assert_eq(sw.p.close_socket(l, &err), 0);
	sw_unload(&sw);
}

Test(spi_dup, socket_from_info_refuses_damaged_or_foreign_info, .timeout = 120)
{
	struct sockaddr_in sin;
	sp_socket l = sw_listen(&sw, &sin), s;
	struct sp_protocol_info info, bad;
	int err = 0, made = 0;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.duplicate_socket(l, (uint32_t)getpid(), &info, &err), 0);
	cr_assert_eq(sw.p.socket_from_info(NULL, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEFAULT);
	/* Made for another process. */
	bad = info;
	bad.process_id = 1;
	cr_assert_eq(sw.p.socket_from_info(&bad, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEINVAL);
	bad = info;
	bad.reserved_len = 0;
	cr_assert_eq(sw.p.socket_from_info(&bad, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEINVAL);
	bad = info;
	bad.type = 2; /* SOCK_DGRAM */
	cr_assert_eq(sw.p.socket_from_info(&bad, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEPROTOTYPE);
	/*
	 * Every byte of the provider's part damaged in turn: refused with
	 * WSAEINVAL, or (a byte that names nothing, as the listener's IP
	 * address) a socket on the same listener.  Never anything else.
	 */
	for (uint32_t i = 0; i < info.reserved_len; i++) {
		bad = info;
		bad.provider_reserved[i] ^= 0xa5;
		s = sw.p.socket_from_info(&bad, 0, &err);
		if (s == SP_INVALID_SOCKET) {
			cr_assert_eq(err, SP_WSAEINVAL, "byte %u: %d", i, err);
			continue;
		}
		made++;
		cr_assert_eq(sw.p.close_socket(s, &err), 0);
	}
	cr_assert_leq(made, 26, "only the address past its family (one host: unused) is free: %d",
		      made);
	/* The listener is whole. */
	s = sw.p.socket_from_info(&info, 0, &err);
	cr_assert_neq(s, SP_INVALID_SOCKET, "%d", err);
	cr_assert_eq(sw.p.close_socket(s, &err), 0);
	cr_assert_eq(sw.p.close_socket(l, &err), 0);
	sw_unload(&sw);
}
