/* SPDX-License-Identifier: BSD-2-Clause */
/* errno to WSA error codes: the one place where the provider translates. */
#include <errno.h>

#include "sp_internal.h"

int sp_wsa_error(int errnum)
{
	switch (errnum) {
	case 0:
		return 0;
	case EINVAL:
	case ERANGE:
		return SP_WSAEINVAL;
	case EFAULT:
		return SP_WSAEFAULT;
	case ENOMEM:
	case ENOBUFS:
	case ENOSPC:
	case EAGAIN:
		return SP_WSAENOBUFS;
	case EMFILE:
	case ENFILE:
		return SP_WSAEMFILE;
	case EBADF:
	case ENOTSOCK:
		return SP_WSAENOTSOCK;
	case EMSGSIZE:
	case E2BIG:
		return SP_WSAEMSGSIZE;
	case EOPNOTSUPP:
	case ENOSYS:
		return SP_WSAEOPNOTSUPP;
	case EAFNOSUPPORT:
		return SP_WSAEAFNOSUPPORT;
	case EPROTONOSUPPORT:
		return SP_WSAEPROTONOSUPPORT;
	case EADDRINUSE:
		return SP_WSAEADDRINUSE;
	case EADDRNOTAVAIL:
		return SP_WSAEADDRNOTAVAIL;
	case ENETDOWN:
	case ENODEV:
		return SP_WSAENETDOWN;
	case ENETUNREACH:
		return SP_WSAENETUNREACH;
	case ECONNABORTED:
		return SP_WSAECONNABORTED;
	case ECONNRESET:
	case EPIPE:
	case EIO:
		return SP_WSAECONNRESET;
	case EISCONN:
		return SP_WSAEISCONN;
	case ENOTCONN:
		return SP_WSAENOTCONN;
	/*
	 * Refusals the switch must not mistake for TCP's: it falls back to
	 * TCP/IP only on a timeout, so a SAN-level failure to reach a peer
	 * that TCP might still reach is reported as one.
	 */
	case ETIMEDOUT:
		return SP_WSAETIMEDOUT;
	/* A peer that broke the protocol: the connection is of no use. */
	case EPROTO:
		return SP_WSAECONNABORTED;
	/* Not reachable through this device (the verbs backend's address resolution). */
	case EXDEV:
		return SP_WSAENETUNREACH;
	case ECONNREFUSED:
		return SP_WSAECONNREFUSED;
	case EHOSTUNREACH:
		return SP_WSAEHOSTUNREACH;
	case EALREADY:
		return SP_WSAEALREADY;
	case EINPROGRESS:
		return SP_WSAEINPROGRESS;
	case ECANCELED:
		return SP_WSA_OPERATION_ABORTED;
	case EINTR:
		return SP_WSAEINTR;
	case EACCES:
	case EPERM:
		return SP_WSAEACCES;
	case ENOENT:
		return SP_WSAEINVAL;
	default:
		return SP_WSAEINVAL;
	}
}

int sp_wsa_connect_error(int errnum)
{
	switch (errnum) {
	/*
	 * The SAN could not reach the peer, but TCP might: the switch falls
	 * back to TCP/IP only on WSAETIMEDOUT, so that is what the SAN says.
	 * A refusal by the peer's listener (ECONNREFUSED) is the application's
	 * answer, which TCP would get too.
	 */
	case ECONNREFUSED:
		return SP_WSAECONNREFUSED;
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EADDRNOTAVAIL:
	case ENODEV:
	case EXDEV:
	case EPROTO:
		return SP_WSAETIMEDOUT;
	default:
		return sp_wsa_error(errnum);
	}
}

int sp_wsa_wc_error(enum vb_wc_status status, bool closing)
{
	switch (status) {
	case VB_WC_SUCCESS:
		return 0;
	case VB_WC_WR_FLUSH_ERR:
		return closing ? SP_WSA_OPERATION_ABORTED : SP_WSAECONNRESET;
	case VB_WC_LOC_PROT_ERR:
	case VB_WC_LOC_ACCESS_ERR:
		return SP_WSAEFAULT;
	case VB_WC_REM_ACCESS_ERR:
		return SP_WSAEACCES;
	case VB_WC_LOC_LEN_ERR:
	case VB_WC_REM_INV_REQ_ERR:
		return SP_WSAEMSGSIZE;
	case VB_WC_RETRY_EXC_ERR:
	case VB_WC_RNR_RETRY_EXC_ERR:
	case VB_WC_RESP_TIMEOUT_ERR:
		return SP_WSAETIMEDOUT;
	default:
		return SP_WSAECONNRESET;
	}
}
