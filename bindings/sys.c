/* SPDX-License-Identifier: GPL-2.0-only */
/* Small system helpers for hvdaemons; see sys.cdef.h. */
#include <errno.h>
#include <sys/prctl.h>

const char hvd_version[] = HVDAEMONS_VERSION;

int hvd_set_comm(const char *name)
{
	if (prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL) < 0)
		return -errno;
	return 0;
}
