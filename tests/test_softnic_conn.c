/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The passive side in three steps: a connect request is taken with its
 * private data, then accepted or refused, and the connecting side sees
 * exactly that.  Requests are answered in any order, outlive their
 * listener, and none is leaked on any path.  Runs on softnic and, in the
 * soft-RoCE tier, on the verbs backend.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tpair.h"

/* A vb_connect() in a thread of its own. */
struct tconnector {
	pthread_t t;
	struct vb_qp *qp;
	struct sockaddr_storage addr;
	struct vb_conn_param param;
	char priv[VB_MAX_PRIVATE_DATA];
	atomic_bool done;
	int ret;
};

static void *connect_main(void *p)
{
	struct tconnector *c = p;

	c->ret = vb_connect(c->qp, (struct sockaddr *)&c->addr, sizeof(c->addr), &c->param);
	atomic_store(&c->done, true);
	return NULL;
}

static void start_connect(struct tconnector *c, struct vb_listener *l, struct vb_qp *qp,
			  const char *priv, int timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->qp = qp;
	c->addr = l->addr;
	snprintf(c->priv, sizeof(c->priv), "%s", priv);
	c->param = (struct vb_conn_param){ .private_data = c->priv,
					   .private_data_len = (uint8_t)(strlen(c->priv) + 1),
					   .timeout_ms = timeout_ms };
	cr_assert_eq(pthread_create(&c->t, NULL, connect_main, c), 0);
}

static int join_connect(struct tconnector *c)
{
	cr_assert_eq(pthread_join(c->t, NULL), 0);
	return c->ret;
}

struct cside {
	struct vb_pd *pd;
	struct vb_cq *cq;
};

static void side_open(struct cside *s, struct vb_device *dev)
{
	s->pd = vb_alloc_pd(dev);
	s->cq = vb_create_cq(dev, 512);
	cr_assert(s->pd && s->cq, "%s", strerror(errno));
}

static void side_close(struct cside *s)
{
	cr_assert_eq(vb_destroy_cq(s->cq), 0);
	cr_assert_eq(vb_dealloc_pd(s->pd), 0);
}

static struct vb_qp *mkqp(struct cside *s)
{
	struct vb_qp_init_attr attr = {
		.send_cq = s->cq,
		.recv_cq = s->cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 }
	};
	struct vb_qp *qp = vb_create_qp(s->pd, &attr);

	cr_assert_not_null(qp, "create_qp: %s", strerror(errno));
	return qp;
}

static enum vb_qp_state qp_state(struct vb_qp *qp)
{
	enum vb_qp_state st;

	cr_assert_eq(vb_query_qp(qp, &st), 0);
	return st;
}

/* A request of the listener within 5 s, whose private data is priv. */
static struct vb_conn_req *take(struct vb_listener *l, const char *priv)
{
	struct vb_conn_req *req = vb_get_request(l, 5000);

	cr_assert_not_null(req, "get_request: %s", strerror(errno));
	cr_assert_eq(req->dev, l->dev);
	cr_assert_eq(req->private_data_len, strlen(priv) + 1);
	cr_assert_str_eq((const char *)req->private_data, priv);
	return req;
}

static const struct vb_conn_param reply = { .private_data = "server",
					    .private_data_len = sizeof("server"),
					    .timeout_ms = 5000 };

static void expect_connected(struct vb_qp *cqp, struct vb_qp *sqp, const char *cpriv)
{
	cr_assert_eq(qp_state(cqp), VB_QPS_RTS);
	cr_assert_eq(qp_state(sqp), VB_QPS_RTS);
	cr_assert_eq(cqp->peer_private_data_len, sizeof("server"));
	cr_assert_str_eq((const char *)cqp->peer_private_data, "server");
	cr_assert_eq(sqp->peer_private_data_len, strlen(cpriv) + 1);
	cr_assert_str_eq((const char *)sqp->peer_private_data, cpriv);
}

/* One send each way over a connected pair: the connection is real. */
static void expect_traffic(struct cside *s, struct vb_qp *a, struct vb_qp *b)
{
	static char src[64], dst[64];
	struct vb_mr *ms = vb_reg_mr(s->pd, src, sizeof(src), VB_ACCESS_LOCAL_WRITE);
	struct vb_mr *md = vb_reg_mr(s->pd, dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE);
	struct vb_qp *from[2] = { a, b }, *to[2] = { b, a };

	cr_assert(ms && md, "reg_mr: %s", strerror(errno));
	for (int i = 0; i < 2; i++) {
		struct vb_sge rs = { (uintptr_t)dst, sizeof(dst), md->lkey };
		struct vb_sge ss = { (uintptr_t)src, sizeof(src), ms->lkey };
		struct vb_recv_wr rwr = { .wr_id = 1, .sg_list = &rs, .num_sge = 1 }, *rbad;
		struct vb_send_wr swr = { .wr_id = 2,
					  .sg_list = &ss,
					  .num_sge = 1,
					  .opcode = VB_WR_SEND,
					  .send_flags = VB_SEND_SIGNALED },
				  *sbad;
		struct vb_wc wc;
		int n, got = 0;

		snprintf(src, sizeof(src), "message %d", i);
		memset(dst, 0, sizeof(dst));
		cr_assert_eq(vb_post_recv(to[i], &rwr, &rbad), 0);
		cr_assert_eq(vb_post_send(from[i], &swr, &sbad), 0);
		while (got < 2) {
			cr_assert_eq(vb_cq_wait(s->cq, 1, &wc, &n, 5000), 0);
			cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
			got += n;
		}
		cr_assert_str_eq(dst, src);
	}
	cr_assert_eq(vb_dereg_mr(ms), 0);
	cr_assert_eq(vb_dereg_mr(md), 0);
}

/* Shared segments mapped in this process (softnic's memfds). */
static int count_segments(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:"))
			n++;
	fclose(f);
	return n;
}

static int count_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

Test(conn, private_data_is_read_before_the_accept, .timeout = 60)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *cqp, *sqp;
	struct vb_conn_req *req;
	struct tconnector c;
	int segs;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	cqp = mkqp(&s);
	sqp = mkqp(&s);
	l = tlisten(dev);
	segs = count_segments();
	start_connect(&c, l, cqp, "client-hello", 10000);
	req = take(l, "client-hello");
	/* Taken, not answered: the connecting side still waits, its QP unconnected. */
	usleep(100 * 1000);
	cr_assert_not(atomic_load(&c.done), "connect returned %d before the answer", c.ret);
	cr_assert_eq(qp_state(sqp), VB_QPS_INIT);
	/* softnic: nothing of either side is mapped by the other before the accept. */
	if (tdev_is_softnic())
		cr_assert_eq(count_segments(), segs, "segments mapped before the accept");
	cr_assert_eq(vb_accept_request(req, sqp, &reply), 0);
	cr_assert_eq(join_connect(&c), 0);
	if (tdev_is_softnic())
		cr_assert_gt(count_segments(), segs, "the accept maps the peers' segments");
	expect_connected(cqp, sqp, "client-hello");
	expect_traffic(&s, cqp, sqp);
	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}

Test(conn, refused_connector_gets_econnrefused_and_keeps_its_qp, .timeout = 60)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *cqp, *sqp, *gone;
	struct tconnector c;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	cqp = mkqp(&s);
	sqp = mkqp(&s);
	l = tlisten(dev);

	start_connect(&c, l, cqp, "refuse me", 10000);
	cr_assert_eq(vb_reject_request(take(l, "refuse me")), 0);
	cr_assert_eq(join_connect(&c), ECONNREFUSED);
	cr_assert_eq(qp_state(cqp), VB_QPS_INIT, "a refused QP is free to connect again");
	cr_assert_eq(qp_state(sqp), VB_QPS_INIT);

	/* The same QP connects again, and this time is accepted. */
	start_connect(&c, l, cqp, "accept me", 10000);
	cr_assert_eq(vb_accept_request(take(l, "accept me"), sqp, &reply), 0);
	cr_assert_eq(join_connect(&c), 0);
	expect_connected(cqp, sqp, "accept me");
	expect_traffic(&s, cqp, sqp);

	/* A refused QP is destroyed at once, cleanly. */
	gone = mkqp(&s);
	start_connect(&c, l, gone, "refuse me too", 10000);
	cr_assert_eq(vb_reject_request(take(l, "refuse me too")), 0);
	cr_assert_eq(join_connect(&c), ECONNREFUSED);
	cr_assert_eq(vb_destroy_qp(gone), 0);

	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}

Test(conn, a_request_accepted_on_a_qp_that_cannot_take_it_is_refused, .timeout = 60)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *cqp, *sqp, *other;
	struct tconnector c;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	cqp = mkqp(&s);
	sqp = mkqp(&s);
	other = mkqp(&s);
	l = tlisten(dev);
	start_connect(&c, l, cqp, "first", 10000);
	cr_assert_eq(vb_accept_request(take(l, "first"), sqp, &reply), 0);
	cr_assert_eq(join_connect(&c), 0);

	/* sqp is connected: the request is consumed and its connector refused. */
	start_connect(&c, l, other, "second", 10000);
	cr_assert_eq(vb_accept_request(take(l, "second"), sqp, &reply), EISCONN);
	cr_assert_eq(join_connect(&c), ECONNREFUSED);
	cr_assert_eq(qp_state(other), VB_QPS_INIT);
	cr_assert_eq(qp_state(sqp), VB_QPS_RTS, "the connected QP is left alone");
	expect_traffic(&s, cqp, sqp);

	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	cr_assert_eq(vb_destroy_qp(other), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}

Test(conn, the_second_request_is_answered_before_the_first, .timeout = 60)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *ca, *cb, *sa, *sb;
	struct vb_conn_req *ra, *rb;
	struct tconnector a, b;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	ca = mkqp(&s);
	cb = mkqp(&s);
	sa = mkqp(&s);
	sb = mkqp(&s);
	l = tlisten(dev);
	start_connect(&a, l, ca, "first", 20000);
	ra = take(l, "first");
	/* The first waits unanswered: the listener still delivers the next one. */
	start_connect(&b, l, cb, "second", 20000);
	rb = take(l, "second");
	cr_assert_eq(vb_accept_request(rb, sb, &reply), 0);
	cr_assert_eq(join_connect(&b), 0);
	expect_connected(cb, sb, "second");
	cr_assert_not(atomic_load(&a.done), "the first connect returned %d unanswered", a.ret);
	cr_assert_eq(vb_accept_request(ra, sa, &reply), 0);
	cr_assert_eq(join_connect(&a), 0);
	expect_connected(ca, sa, "first");
	expect_traffic(&s, ca, sa);
	expect_traffic(&s, cb, sb);

	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_qp(ca), 0);
	cr_assert_eq(vb_destroy_qp(cb), 0);
	cr_assert_eq(vb_destroy_qp(sa), 0);
	cr_assert_eq(vb_destroy_qp(sb), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}

/*
 * The rule: destroying a listener refuses the requests it still holds (not
 * taken); a request taken belongs to its taker and stays valid, to be
 * accepted or refused later.
 */
Test(conn, listener_destroyed_with_one_request_taken_and_one_not, .timeout = 60)
{
	int fds = count_fds();
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *ca, *cb, *sa;
	struct vb_conn_req *ra;
	struct tconnector a, b;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	ca = mkqp(&s);
	cb = mkqp(&s);
	sa = mkqp(&s);
	l = tlisten(dev);
	start_connect(&a, l, ca, "taken", 20000);
	ra = take(l, "taken");
	start_connect(&b, l, cb, "not taken", 20000);
	cr_assert_eq(vb_listener_wait(l, 5000), 0, "the second request waits");
	cr_assert_eq(vb_destroy_listener(l), 0);
	int rb = join_connect(&b);
	cr_assert_eq(rb, ECONNREFUSED, "got %d", rb);
	cr_assert_eq(qp_state(cb), VB_QPS_INIT);
	cr_assert_not(atomic_load(&a.done), "the taken request's connect returned %d", a.ret);
	cr_assert_eq(vb_accept_request(ra, sa, &reply), 0);
	cr_assert_eq(join_connect(&a), 0);
	expect_connected(ca, sa, "taken");
	expect_traffic(&s, ca, sa);

	cr_assert_eq(vb_destroy_qp(ca), 0);
	cr_assert_eq(vb_destroy_qp(cb), 0);
	cr_assert_eq(vb_destroy_qp(sa), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
	if (tdev_is_softnic())
		cr_assert_eq(count_fds(), fds, "descriptors leaked: %d before, %d after", fds,
			     count_fds());
}

Test(conn, a_request_taken_holds_its_device_until_answered, .timeout = 60)
{
	int fds = count_fds();
	struct vb_device *sdev = tdev_open(), *cdev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *cqp;
	struct vb_conn_req *req;
	struct tconnector c;

	cr_assert(sdev && cdev);
	side_open(&s, cdev);
	cqp = mkqp(&s);
	l = tlisten(sdev);
	start_connect(&c, l, cqp, "held", 20000);
	req = take(l, "held");
	cr_assert_eq(vb_destroy_listener(l), 0);
	/* Nothing else lives on sdev: the request alone keeps it open. */
	cr_assert_eq(vb_close_device(sdev), EBUSY);
	cr_assert_eq(vb_reject_request(req), 0);
	cr_assert_eq(join_connect(&c), ECONNREFUSED);
	cr_assert_eq(vb_close_device(sdev), 0);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(cdev), 0);
	if (tdev_is_softnic())
		cr_assert_eq(count_fds(), fds, "descriptors leaked: %d before, %d after", fds,
			     count_fds());
}

Test(conn, an_unanswered_request_times_its_connector_out, .timeout = 60)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct vb_listener *l;
	struct vb_qp *cqp, *sqp;
	struct vb_conn_req *req;
	struct tconnector c;

	cr_assert_not_null(dev);
	side_open(&s, dev);
	cqp = mkqp(&s);
	sqp = mkqp(&s);
	l = tlisten(dev);
	start_connect(&c, l, cqp, "impatient", 500);
	req = take(l, "impatient");
	cr_assert_eq(join_connect(&c), ETIMEDOUT);
	cr_assert_eq(qp_state(cqp), VB_QPS_INIT);
	/* Too late: the accept fails, consumes the request and leaves sqp free. */
	cr_assert_neq(vb_accept_request(req, sqp, &reply), 0);
	cr_assert_eq(qp_state(sqp), VB_QPS_INIT);

	/* Both QPs still connect to each other. */
	start_connect(&c, l, cqp, "patient", 10000);
	cr_assert_eq(vb_accept_request(take(l, "patient"), sqp, &reply), 0);
	cr_assert_eq(join_connect(&c), 0);
	expect_connected(cqp, sqp, "patient");
	expect_traffic(&s, cqp, sqp);

	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}

#define N_INFLIGHT 64

/*
 * 64 connects in flight at once, one thread each; every request is taken
 * before any is answered, then they are answered in a shuffled order,
 * every other one refused.  Every outcome is checked on both sides.
 */
Test(conn, many_requests_in_flight_half_refused, .timeout = 240)
{
	struct vb_device *dev = tdev_open();
	struct cside s;
	struct sockaddr_in sin;
	struct vb_listener *l;
	struct tconnector *c = calloc(N_INFLIGHT, sizeof(*c));
	struct vb_qp *cqp[N_INFLIGHT], *sqp[N_INFLIGHT];
	struct vb_conn_req *req[N_INFLIGHT] = { 0 };
	int order[N_INFLIGHT], answered[N_INFLIGHT];
	char name[32];

	cr_assert(dev && c);
	side_open(&s, dev);
	tdev_sockaddr(&sin, 0);
	l = vb_create_listener(dev, (struct sockaddr *)&sin, sizeof(sin), 128);
	cr_assert_not_null(l, "%s", strerror(errno));
	for (int i = 0; i < N_INFLIGHT; i++) {
		cqp[i] = mkqp(&s);
		sqp[i] = mkqp(&s);
	}
	for (int i = 0; i < N_INFLIGHT; i++) {
		snprintf(name, sizeof(name), "client %d", i);
		start_connect(&c[i], l, cqp[i], name, 120000);
	}
	for (int k = 0; k < N_INFLIGHT; k++) {
		struct vb_conn_req *r = vb_get_request(l, 60000);
		int i;

		cr_assert_not_null(r, "request %d: %s", k, strerror(errno));
		cr_assert_eq(sscanf((const char *)r->private_data, "client %d", &i), 1);
		cr_assert(i >= 0 && i < N_INFLIGHT && !req[i], "request of client %d twice", i);
		cr_assert_eq(r->private_data_len, strlen((const char *)r->private_data) + 1);
		req[i] = r;
	}
	for (int i = 0; i < N_INFLIGHT; i++)
		cr_assert_not(atomic_load(&c[i].done), "client %d returned %d unanswered", i,
			      c[i].ret);
	srand((unsigned int)time(NULL));
	for (int i = 0; i < N_INFLIGHT; i++)
		order[i] = i;
	for (int i = N_INFLIGHT - 1; i > 0; i--) {
		int j = rand() % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int k = 0; k < N_INFLIGHT; k++) {
		int i = order[k];

		answered[i] =
		    i % 2 ? vb_reject_request(req[i]) : vb_accept_request(req[i], sqp[i], &reply);
	}
	for (int i = 0; i < N_INFLIGHT; i++) {
		int ret = join_connect(&c[i]);

		snprintf(name, sizeof(name), "client %d", i);
		cr_assert_eq(answered[i], 0, "answer to %s: %s", name, strerror(answered[i]));
		if (i % 2) {
			cr_assert_eq(ret, ECONNREFUSED, "%s: %s", name, strerror(ret));
			cr_assert_eq(qp_state(cqp[i]), VB_QPS_INIT);
			cr_assert_eq(qp_state(sqp[i]), VB_QPS_INIT);
		} else {
			cr_assert_eq(ret, 0, "%s: %s", name, strerror(ret));
			expect_connected(cqp[i], sqp[i], name);
		}
	}
	expect_traffic(&s, cqp[0], sqp[0]);
	expect_traffic(&s, cqp[N_INFLIGHT - 2], sqp[N_INFLIGHT - 2]);
	cr_assert_eq(vb_destroy_listener(l), 0);
	for (int i = 0; i < N_INFLIGHT; i++) {
		cr_assert_eq(vb_destroy_qp(cqp[i]), 0);
		cr_assert_eq(vb_destroy_qp(sqp[i]), 0);
	}
	free(c);
	side_close(&s);
	cr_assert_eq(vb_close_device(dev), 0);
}
