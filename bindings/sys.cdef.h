/* SPDX-License-Identifier: GPL-2.0-only */
/* Small system helpers (sys.c).  Each returns 0 or -errno. */

/* The package version this module was compiled from (see _ffi's check). */
extern const char hvd_version[];

/* prctl(PR_SET_NAME): the name ps/pgrep show for a python daemon. */
int hvd_set_comm(const char *name);
