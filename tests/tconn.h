/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test helper: a connection set up as an application's two sides would,
 * one accepting in a thread of its own while the other connects.  Without
 * Criterion, so that the TAP programs use it too.
 */
#ifndef SANPROV_TCONN_H
#define SANPROV_TCONN_H

#include "vb.h"

/*
 * Connect cqp to the listener l while a thread accepts on it into aqp.
 * A NULL param is no private data and a 5 s timeout.  Returns what
 * vb_connect() returned (or the thread's creation error, without
 * connecting); *accepted gets what vb_accept() returned (-1 when it did not
 * run).
 */
int tconnect(struct vb_listener *l, struct vb_qp *aqp, const struct vb_conn_param *aparam,
	     struct vb_qp *cqp, const struct vb_conn_param *cparam, int *accepted);

#endif
