# SPDX-License-Identifier: GPL-2.0-only
"""Small helpers about programs the tests start (not a test module)."""

from __future__ import annotations

import os
import pathlib
import select


def write_script(path: pathlib.Path, body: str) -> None:
    """An executable /bin/sh script."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def gone(pid: int, timeout: float = 30) -> bool:
    """Whether process pid ends (exits or is killed) within timeout, a hang guard.

    Waits on a pidfd, which becomes readable when the process ends.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def uevent_sockets(pid: int) -> int:
    """How many of pid's descriptors are kernel-uevent sockets (NETLINK_KOBJECT_UEVENT, 15).

    /proc/PID/net/netlink lists the netlink sockets of pid's network namespace
    with their protocol and inode; pid's own are those its descriptors name.
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    with open(f"/proc/{pid}/net/netlink") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[1] == "15" and row[-1] in inodes)
