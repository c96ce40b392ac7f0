# SPDX-License-Identifier: GPL-2.0-only
"""The simulated Hyper-V host and guest kernel.

Serves the same protocols as the kernel's /dev/vmbus/hv_* devices (over
SOCK_SEQPACKET sockets) and the uio_hv_generic ring buffers, so the
unmodified daemons, ours and the reference C ones, run against it.
"""
