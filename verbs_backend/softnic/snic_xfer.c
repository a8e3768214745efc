/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The one-copy engine.  Bytes move between this process and a peer by
 *   - memcpy, when the peer is this process;
 *   - memcpy, when the peer's MR lies in a vb_buf_alloc() buffer: its
 *     segment is taken once from the peer and mapped here;
 *   - the OS's copy between processes for any other memory (cross-memory
 *     attach on Linux).
 */
#include <errno.h>
#include <string.h>

#include "snic.h"

static struct snic_import *import_buf(struct snic_peer *peer, int32_t fd, uint64_t ino)
{
	struct snic_import *imp = &peer->imports[0];
	void *base;
	size_t len;

	for (int i = 1; i < SNIC_MAX_IMPORTS; i++)
		if (peer->imports[i].last_use < imp->last_use)
			imp = &peer->imports[i];
	if (snic_os_peer_map_segment(peer, fd, ino, &base, &len))
		return NULL;
	if (imp->base)
		snic_os_unmap(imp->base, imp->len);
	imp->ino = ino;
	imp->base = base;
	imp->len = len;
	return imp;
}

void snic_xfer_resolve(struct snic_peer *peer, const struct snic_mr_entry *e, struct snic_rseg *rs)
{
	struct snic_import *imp = NULL;
	uint64_t ino, base, off;
	int32_t fd;

	rs->mapped = NULL;
	if (peer->self) {
		rs->mapped = (void *)(uintptr_t)rs->raddr;
		return;
	}
	fd = e->buf_fd;
	ino = e->buf_ino;
	base = e->buf_base;
	if (fd < 0 || peer->pidfd == SNIC_NO_HANDLE || rs->raddr < base)
		return;
	for (int i = 0; i < SNIC_MAX_IMPORTS; i++)
		if (peer->imports[i].base && peer->imports[i].ino == ino) {
			imp = &peer->imports[i];
			break;
		}
	if (!imp)
		imp = import_buf(peer, fd, ino);
	if (!imp)
		return;
	imp->last_use = ++peer->import_clock;
	off = rs->raddr - base;
	if (off > imp->len || rs->len > imp->len - off)
		return;
	rs->mapped = (char *)imp->base + off;
}

void snic_peer_release_imports(struct snic_peer *peer)
{
	for (int i = 0; i < SNIC_MAX_IMPORTS; i++) {
		if (peer->imports[i].base)
			snic_os_unmap(peer->imports[i].base, peer->imports[i].len);
		peer->imports[i].base = NULL;
	}
}

static enum vb_wc_status cma_status(int err, uint32_t *vendor_err)
{
	*vendor_err = (uint32_t)err;
	switch (err) {
	case EFAULT:
		return VB_WC_REM_ACCESS_ERR;
	case ESRCH:
		return VB_WC_RETRY_EXC_ERR;
	default:
		return VB_WC_GENERAL_ERR;
	}
}

static enum vb_wc_status cma(struct snic_peer *peer, enum snic_xfer_dir dir,
			     const struct snic_iov *l, unsigned int nl, const struct snic_iov *r,
			     unsigned int nr, size_t total, uint32_t *vendor_err)
{
	int ret = snic_os_peer_copy(peer, dir == SNIC_XFER_TO_PEER, l, nl, r, nr, total);

	return ret ? cma_status(ret, vendor_err) : VB_WC_SUCCESS;
}

/*
 * A NIC writes a message in ascending address order, and peers that poll
 * the last byte of a buffer (perftest's latency tests, many HPC codes)
 * count on it; memcpy promises no order, so the last byte goes last.
 */
static int copy_last_byte_last(char *dst, const char *src, uint64_t len, uintptr_t *fault)
{
	int ret = vb_mem_copy(dst, src, len - 1, fault);

	if (ret)
		return ret;
	atomic_thread_fence(memory_order_release);
	return vb_mem_copy(dst + len - 1, src + len - 1, 1, fault);
}

/* A faulting copy: the local buffer's fault is ours, any other the peer's. */
static enum vb_wc_status copy_status(const char *lp, uint64_t len, uintptr_t fault,
				     uint32_t *vendor_err)
{
	*vendor_err = EFAULT;
	if (fault >= (uintptr_t)lp && fault - (uintptr_t)lp < len)
		return VB_WC_LOC_PROT_ERR;
	return VB_WC_REM_ACCESS_ERR;
}

enum vb_wc_status snic_xfer(struct snic_peer *peer, enum snic_xfer_dir dir,
			    const struct vb_sge *local, uint32_t nlocal,
			    const struct snic_rseg *remote, uint32_t nremote, uint32_t *vendor_err)
{
	uint32_t li = 0, ri = 0;
	uint64_t loff = 0, roff = 0;
	bool any_mapped = false;

	for (uint32_t i = 0; i < nremote; i++)
		any_mapped |= remote[i].mapped != NULL;

	if (!any_mapped) {
		struct snic_iov l[SNIC_MAX_SGE], r[SNIC_MAX_SGE];
		size_t total = 0;

		for (uint32_t i = 0; i < nlocal; i++) {
			l[i] =
			    (struct snic_iov){ (void *)(uintptr_t)local[i].addr, local[i].length };
			total += local[i].length;
		}
		for (uint32_t i = 0; i < nremote; i++)
			r[i] =
			    (struct snic_iov){ (void *)(uintptr_t)remote[i].raddr, remote[i].len };
		if (!total)
			return VB_WC_SUCCESS;
		return cma(peer, dir, l, nlocal, r, nremote, total, vendor_err);
	}

	while (li < nlocal && ri < nremote) {
		uint64_t lrem = local[li].length - loff, rrem = remote[ri].len - roff;
		uint64_t chunk = lrem < rrem ? lrem : rrem;
		char *lp = (char *)(uintptr_t)local[li].addr + loff;

		if (chunk) {
			if (remote[ri].mapped) {
				char *rp = (char *)remote[ri].mapped + roff;
				uintptr_t fault = 0;
				int ret;

				if (dir == SNIC_XFER_FROM_PEER)
					ret = vb_mem_copy(lp, rp, chunk, &fault);
				else if (ri + 1 < nremote || roff + chunk < remote[ri].len)
					ret = vb_mem_copy(rp, lp, chunk, &fault);
				else
					ret = copy_last_byte_last(rp, lp, chunk, &fault);
				if (ret)
					return copy_status(lp, chunk, fault, vendor_err);
			} else {
				struct snic_iov l = { lp, chunk };
				struct snic_iov r = { (void *)(uintptr_t)(remote[ri].raddr + roff),
						      chunk };
				enum vb_wc_status st =
				    cma(peer, dir, &l, 1, &r, 1, chunk, vendor_err);
				if (st != VB_WC_SUCCESS)
					return st;
			}
		}
		loff += chunk;
		roff += chunk;
		if (loff == local[li].length) {
			li++;
			loff = 0;
		}
		if (roff == remote[ri].len) {
			ri++;
			roff = 0;
		}
	}
	return VB_WC_SUCCESS;
}
