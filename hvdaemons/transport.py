# SPDX-License-Identifier: GPL-2.0-only
"""Channels to the kernel side of an integration service.

Mirrors the device handling of tools/hv/hv_{kvp,vss,fcopy}_daemon.c: one
message per read() and per write() on /dev/vmbus/hv_*.  A daemon only sees
the Channel protocol, so tests and the simulator hand it a socket instead
(constructor injection, no test branches).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from .errors import ChannelReset

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Protocol

# Larger than any message the hv_utils transport delivers (KVP 7432 bytes;
# a file-copy COMPLETE or CANCEL comes with stale bytes of a 2 x 4 KiB
# receive buffer: docs/protocol.md, "File copy over the char device").
READ_SIZE = 16384


if TYPE_CHECKING:
    # For the type checker only: a Protocol defined at run time needs typing.

    class Channel(Protocol):
        """One message per read()/write(), pollable, reopenable."""

        def fileno(self) -> int: ...

        def read(self) -> bytes: ...

        def write(self, data: bytes) -> None: ...

        def reopen(self) -> None: ...

        def close(self) -> None: ...

        @property
        def closed(self) -> bool: ...


def open_device(path: str) -> int:
    """Open a /dev/vmbus/hv_* device, or connect if the path is a SOCK_SEQPACKET socket.

    The simulator and containers hand a device over as a Unix socket at the
    device path; an LD_PRELOAD shim may also return a socket from open().
    Either way the daemon only uses read/write/poll on the descriptor.
    """
    # open() first, and only its ENXIO (what open() of a socket fails with)
    # looks for a socket: a stat() first would race with a node that appears
    # in between, and report that socket's ENXIO as the device's error.
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENXIO or not stat.S_ISSOCK(os.stat(path).st_mode):
            raise
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock.detach()


class FdChannel:
    """A message channel over a file descriptor (char device or seqpacket socket)."""

    def __init__(self, fd: int = -1, path: str | None = None) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def open(cls, path: str) -> FdChannel:
        return cls(open_device(path), path)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ChannelReset("channel is closed")
        return self._fd

    def read(self) -> bytes:
        # PEP 475: os.read retries EINTR by itself.  The kernel never returns
        # 0 bytes; a socket peer that went away does.
        fd = self._fd
        if fd < 0:
            raise ChannelReset("channel is closed")
        data = os.read(fd, READ_SIZE)
        if not data:
            raise ChannelReset("end of file on the device")
        return data

    def write(self, data: bytes) -> None:
        fd = self._fd
        if fd < 0:
            raise ChannelReset("channel is closed")
        n = os.write(fd, data)
        if n != len(data):
            # hv_utils_transport has no partial writes; a socket could.
            raise OSError(errno.EIO, f"short write: {n} of {len(data)} bytes")

    def reopen(self) -> None:
        if self.path is None:
            raise ChannelReset("channel cannot be reopened")
        self.close()
        self._fd = open_device(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0
