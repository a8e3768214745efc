/* SPDX-License-Identifier: BSD-2-Clause */
/* tconnect(): see tconn.h. */
#include <pthread.h>

#include "tconn.h"

struct taccept {
	struct vb_listener *l;
	struct vb_qp *qp;
	struct vb_conn_param param;
	int ret;
};

static void *accept_main(void *arg)
{
	struct taccept *a = arg;

	a->ret = vb_accept(a->l, a->qp, &a->param);
	return NULL;
}

int tconnect(struct vb_listener *l, struct vb_qp *aqp, const struct vb_conn_param *aparam,
	     struct vb_qp *cqp, const struct vb_conn_param *cparam, int *accepted)
{
	const struct vb_conn_param dflt = { .timeout_ms = 5000 };
	struct taccept a = { .l = l, .qp = aqp, .param = aparam ? *aparam : dflt, .ret = -1 };
	pthread_t t;
	int ret;

	*accepted = -1;
	ret = pthread_create(&t, NULL, accept_main, &a);
	if (ret)
		return ret;
	ret =
	    vb_connect(cqp, (struct sockaddr *)&l->addr, sizeof(l->addr), cparam ? cparam : &dflt);
	pthread_join(t, NULL);
	*accepted = a.ret;
	return ret;
}
