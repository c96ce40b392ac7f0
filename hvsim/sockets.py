# SPDX-License-Identifier: GPL-2.0-only
"""Listening Unix sockets that a simulator owns, and only those.

Simulator infrastructure, mirrors nothing upstream.  A socket path left by a
simulator that died is replaced; one a live process still listens on is
not.  Each socket remembers the inode it was bound as, and is unlinked at
the end only if the path still leads to it: another simulator started in
the same directory meanwhile keeps its sockets.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

SEQPACKET = socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC


class SocketInUse(OSError):
    """A live process answers on the path (or the path is not a socket)."""


def answers(path: str) -> bool:
    """Whether something listens on the SOCK_SEQPACKET socket at path."""
    with socket.socket(socket.AF_UNIX, SEQPACKET) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError as e:
            if e.errno == errno.EPROTOTYPE:
                return True  # a live socket of another type: not ours to replace
            raise
        return True


class OwnedSocket:
    """A listening SOCK_SEQPACKET socket bound at path by this process."""

    def __init__(self, path: str, backlog: int = 8, mode: int | None = None) -> None:
        self.path = path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise SocketInUse(errno.EEXIST, "exists and is not a socket", path)
            if answers(path):
                raise SocketInUse(errno.EADDRINUSE, "a live process answers on it", path)
            os.unlink(path)  # stale: its server is gone
        self.sock = socket.socket(socket.AF_UNIX, SEQPACKET)
        try:
            self.sock.bind(path)
            if mode is not None:
                os.chmod(path, mode)
            st = os.lstat(path)
            self.identity = (st.st_dev, st.st_ino)
            self.sock.listen(backlog)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        return self.sock.accept()

    def owns_path(self) -> bool:
        """Whether path still leads to the socket this object listens on.

        The inode must be the one bound, and since an inode number is reused
        once its file is gone, a probe connected through the path must land
        in this socket's queue (recognised by its own abstract address).
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) != self.identity:
            return False
        with socket.socket(socket.AF_UNIX, SEQPACKET) as probe:
            probe.bind(b"\0hvsim-probe-%d-%s" % (os.getpid(), os.urandom(8).hex().encode()))
            probe.settimeout(5)
            try:
                probe.connect(self.path)
            except OSError:
                return False  # nobody listens there: not this socket
            mine = probe.getsockname()
            self.sock.setblocking(False)
            try:
                while True:
                    conn, peer = self.sock.accept()  # queued in ours, or BlockingIOError
                    conn.close()
                    if peer == mine:
                        return True
            except BlockingIOError:
                return False
            finally:
                self.sock.setblocking(True)

    def close(self) -> None:
        """Close the socket; remove its path unless someone else's socket is there now."""
        if self.sock.fileno() < 0:
            return
        ours = self.owns_path()
        self.sock.close()
        if ours:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
