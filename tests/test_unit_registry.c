/* SPDX-License-Identifier: BSD-2-Clause */
/* The ops-table registry and the helpers over it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vb_internal.h"

Test(registry, default_backend_is_softnic)
{
	unsetenv("SANPROV_BACKEND");
	const struct vb_ops *ops = vb_backend_find(NULL);

	cr_assert_not_null(ops);
	cr_assert_str_eq(ops->name, "softnic");
	cr_assert_eq(vb_backend_find("softnic"), ops);
}

Test(registry, environment_selects_and_unknown_fails)
{
	setenv("SANPROV_BACKEND", "no-such-nic", 1);
	errno = 0;
	cr_assert_null(vb_backend_find(NULL));
	cr_assert_eq(errno, ENOENT);
	cr_assert_null(vb_open_device(NULL, NULL));
	cr_assert_eq(errno, ENOENT);
	setenv("SANPROV_BACKEND", "softnic", 1);
	cr_assert_not_null(vb_backend_find(NULL));
	/* An explicit name wins over the environment. */
	cr_assert_null(vb_backend_find("other"));
}

Test(registry, names_list_the_built_backends)
{
	const char *const *names = vb_backend_names();
	int n = 0;

	for (; names[n]; n++)
		cr_assert_not_null(vb_backend_find(names[n]));
	cr_assert_geq(n, 1);
	cr_assert_str_eq(names[0], "softnic");
}

Test(registry, unknown_device_name)
{
	errno = 0;
	cr_assert_null(vb_open_device("softnic", "mlx5_0"));
	cr_assert_eq(errno, ENODEV);
}

/* A backend that implements one call: every other member answers EOPNOTSUPP. */
static int only_query_port(struct vb_device *dev, struct vb_port_attr *attr)
{
	(void)dev;
	memset(attr, 0, sizeof(*attr));
	attr->state = VB_PORT_ACTIVE;
	return 0;
}

Test(registry, partial_tables_are_completed_with_eopnotsupp)
{
	static const struct vb_ops partial = { .name = "partial", .query_port = only_query_port };
	struct vb_ops ops;
	struct vb_device dev = { .ops = &ops };
	struct vb_pd pd = { .dev = &dev };
	struct vb_cq cq = { .dev = &dev };
	struct vb_qp qp = { .dev = &dev, .pd = &pd };
	struct vb_listener lst = { .dev = &dev };
	struct vb_mr mr = { .pd = &pd };
	struct vb_port_attr pa;
	struct vb_device_attr da;
	struct vb_wc wc;
	struct vb_send_wr swr, *sbad = NULL;
	struct vb_recv_wr rwr, *rbad = NULL;
	enum vb_qp_state st;
	int n = -1;

	vb_ops_complete(&ops, &partial);
	cr_assert_eq(vb_query_port(&dev, &pa), 0);
	cr_assert_eq(pa.state, VB_PORT_ACTIVE);
	cr_assert_eq(vb_query_device(&dev, &da), EOPNOTSUPP);
	cr_assert_eq(vb_close_device(&dev), EOPNOTSUPP);
	cr_assert_eq(vb_dealloc_pd(&pd), EOPNOTSUPP);
	cr_assert_eq(vb_dereg_mr(&mr), EOPNOTSUPP);
	cr_assert_eq(vb_destroy_cq(&cq), EOPNOTSUPP);
	cr_assert_eq(vb_destroy_qp(&qp), EOPNOTSUPP);
	cr_assert_eq(vb_destroy_listener(&lst), EOPNOTSUPP);
	cr_assert_eq(vb_req_notify_cq(&cq), EOPNOTSUPP);
	cr_assert_eq(vb_get_cq_event(&cq), EOPNOTSUPP);
	cr_assert_eq(vb_poll_cq(&cq, 1, &wc, &n), EOPNOTSUPP);
	cr_assert_eq(n, 0);
	cr_assert_eq(vb_query_qp(&qp, &st), EOPNOTSUPP);
	cr_assert_eq(vb_post_send(&qp, &swr, &sbad), EOPNOTSUPP);
	cr_assert_eq(sbad, &swr);
	cr_assert_eq(vb_post_recv(&qp, &rwr, &rbad), EOPNOTSUPP);
	cr_assert_eq(rbad, &rwr);
	cr_assert_eq(vb_connect(&qp, NULL, 0, NULL), EOPNOTSUPP);
	cr_assert_eq(vb_accept(&lst, &qp, NULL), EOPNOTSUPP);
	cr_assert_eq(vb_accept_request(&(struct vb_conn_req){ .dev = &dev }, &qp, NULL),
		     EOPNOTSUPP);
	cr_assert_eq(vb_reject_request(&(struct vb_conn_req){ .dev = &dev }), EOPNOTSUPP);
	cr_assert_eq(vb_buf_free(&dev, NULL, 0), EOPNOTSUPP);
	cr_assert_eq(vb_cq_wait(&cq, 1, &wc, &n, 0), EOPNOTSUPP);

	errno = 0;
	cr_assert_null(vb_alloc_pd(&dev));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_reg_mr(&pd, &n, sizeof(n), 0));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_create_cq(&dev, 1));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_create_qp(&pd, &(struct vb_qp_init_attr){ 0 }));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_create_listener(&dev, NULL, 0, 1));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_get_request(&lst, 0));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(vb_buf_alloc(&dev, 1));
	cr_assert_eq(errno, EOPNOTSUPP);
	errno = 0;
	cr_assert_null(ops.open_device(&ops, NULL));
	cr_assert_eq(errno, EOPNOTSUPP);
	cr_assert_str_eq(ops.description, "");
}

Test(registry, status_and_opcode_strings)
{
	cr_assert_str_eq(vb_wc_status_str(VB_WC_SUCCESS), "success");
	cr_assert_str_eq(vb_wc_status_str(VB_WC_REM_ACCESS_ERR), "remote access error");
	cr_assert_str_eq(vb_wc_status_str(VB_WC_WR_FLUSH_ERR), "Work Request Flushed Error");
	cr_assert_str_eq(vb_wc_status_str((enum vb_wc_status)999), "unknown");
	cr_assert_str_eq(vb_wr_opcode_str(VB_WR_RDMA_READ), "RDMA_READ");
	cr_assert_str_eq(vb_wr_opcode_str((enum vb_wr_opcode)77), "unknown");
}
