# SPDX-License-Identifier: GPL-2.0-only
"""The simulator process: device sockets plus a control socket.

`hvsim serve --dir DIR` creates DIR/hv_kvp, DIR/hv_vss, ... (what a daemon
connects to instead of /dev/vmbus/hv_*) and DIR/control, on which the
`hvsim <service> ...` commands send one JSON request per message and get
one JSON reply: {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import threading
from typing import Any, Callable

from .chardev import ChardevKernel
from .sockets import OwnedSocket

log = logging.getLogger(__name__)

Json = dict[str, Any]
Command = Callable[[Json], Json]


class SimServer:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.kernels: dict[str, ChardevKernel] = {}
        self.commands: dict[str, Command] = {}
        self.closers: list[Callable[[], None]] = []
        self._control: OwnedSocket | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def add_chardev(self, name: str, *, timeout: float | None = None) -> ChardevKernel:
        """Serve /dev/vmbus/<name> at DIR/<name>."""
        kernel = (
            ChardevKernel(self.path(name), name)
            if timeout is None
            else ChardevKernel(self.path(name), name, timeout=timeout)
        )
        self.kernels[name] = kernel
        self.closers.append(kernel.close)
        return kernel

    def add_command(self, name: str, fn: Command) -> None:
        self.commands[name] = fn

    def dispatch(self, request: Json) -> Json:
        name = request.get("command")
        fn = self.commands.get(str(name))
        if fn is None:
            return {"ok": False, "error": f"unknown command {name!r}"}
        try:
            reply = fn(request)
        except Exception as e:  # report to the client, keep serving
            log.exception("command %s failed", name)
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        reply.setdefault("ok", True)
        return reply

    def listen(self) -> None:
        """Claim DIR/control.  Raises SocketInUse if a live simulator answers there.

        Call it before adding devices, so that a refused server touches nothing.
        """
        if self._control is None:
            os.makedirs(self.directory, exist_ok=True)
            self._control = OwnedSocket(self.path("control"))
            self.closers.append(self._control.close)

    def serve(self, stop_fd: int) -> None:
        """Answer control requests until stop_fd becomes readable."""
        self.listen()
        assert self._control is not None
        while True:
            r, _, _ = select.select([self._control.fileno(), stop_fd], [], [])
            if stop_fd in r:
                return
            conn, _ = self._control.accept()
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                try:
                    request = json.loads(data)
                    reply = (
                        self.dispatch(request)
                        if isinstance(request, dict)
                        else {"ok": False, "error": "request must be a JSON object"}
                    )
                except ValueError as e:
                    reply = {"ok": False, "error": f"bad JSON: {e}"}
                conn.send(json.dumps(reply).encode())

    def close(self) -> None:
        """Stop serving; remove the sockets this server created (and only those)."""
        for closer in reversed(self.closers):
            closer()
        self.closers.clear()


def call(directory: str, request: Json, timeout: float = 120.0) -> Json:
    """Send one control request to a running `hvsim serve`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(os.path.join(directory, "control"))
        sock.send(json.dumps(request).encode())
        reply: Json = json.loads(sock.recv(1 << 20))
        return reply


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    """SIGTERM a daemon the demo started (SIGKILL if it lingers); return its stderr."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err or b""
