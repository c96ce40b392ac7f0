# SPDX-License-Identifier: GPL-2.0-only
"""daemon(1, 0) as the C daemons call it without -n: fork, setsid, stdio to /dev/null."""

from __future__ import annotations

import os


def daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
