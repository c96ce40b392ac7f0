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
