# SPDX-License-Identifier: GPL-2.0-only
"""A $NOTIFY_SOCKET for the tests: what systemd would receive from a daemon (not a test module)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path


class NotifySocket:
    """What systemd's notify socket receives, one datagram per message."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 20) -> str:
        """The next message matching pattern (a regex); earlier ones are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} among {self.seen[-20:]}"
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.seen.append(msg)
            if re.search(pattern, msg):
                return msg

    def drain(self) -> list[str]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.sock.setblocking(True)
        self.seen += out
        return out

    def close(self) -> None:
        self.sock.close()
