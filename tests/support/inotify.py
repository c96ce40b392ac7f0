# SPDX-License-Identifier: GPL-2.0-only
"""Opens of a directory, seen through inotify: another process scanning it is an event
a test can wait for instead of sleeping (not a test module)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time

_IN_OPEN = 0x00000020
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then name[len])

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class DirOpens:
    """Counts the times a directory is opened (opendir(), listdir()), from now on."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = _libc.inotify_init1(_IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_OPEN) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify_add_watch {path}")
        self.count = 0

    def wait(self, count: int, timeout: float = 30.0) -> None:
        """Until the directory has been opened count times in all (timeout: a hang guard)."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            left = deadline - time.monotonic()
            assert left > 0, f"opened {self.count} times, not {count}"
            if select.select([self._fd], [], [], left)[0]:
                buf = os.read(self._fd, 4096)
                pos = 0
                while pos < len(buf):
                    _wd, mask, _cookie, size = _EVENT.unpack_from(buf, pos)
                    pos += _EVENT.size + size
                    if mask & _IN_OPEN:
                        self.count += 1

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> DirOpens:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
