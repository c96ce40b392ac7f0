# SPDX-License-Identifier: GPL-2.0-only
"""The kernel side of one hv_utils transport device, over a SOCK_SEQPACKET socket.

Mirrors drivers/hv/hv_utils_transport.c plus the per-service registration
and timeout rules of hv_kvp.c, hv_snapshot.c and hv_fcopy.c
(hvutil_transport_send(), the services' *_on_msg() handlers): one daemon at a time, one registration
handshake, then strict request/reply with a per-request timeout after which
the host is answered HV_E_FAIL.  Where the kernel would fail a daemon's
write() with EINVAL (wrong size, spurious reply), the simulator records the
event and drops the connection, which the daemon sees as a failed read and
answers by reopening, as it would after the kernel's error.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from hvdaemons import _ffi
from hvdaemons.errors import ProtocolError
from hvdaemons.protocol.fcopy import FCOPY_CURRENT_VERSION
from hvdaemons.protocol.kvp import KVP_MSG_SIZE, KvpOp
from hvdaemons.protocol.vss import MSG_SIZE as VSS_MSG_SIZE
from hvdaemons.protocol.vss import VssOp

from .protocol import fcopy as sim_fcopy
from .protocol import vss as sim_vss
from .protocol.kvp import encode_registration_reply
from .sockets import OwnedSocket

log = logging.getLogger(__name__)

# The kernel's time for a daemon's reply (HV_UTIL_TIMEOUT), and a FREEZE's.
HV_UTIL_TIMEOUT = 30.0
VSS_FREEZE_TIMEOUT = 900.0


@dataclass(frozen=True)
class ServiceRules:
    """What the kernel accepts from the daemon of one service."""

    name: str  # device basename, e.g. "hv_kvp"

    def registration_reply(self, msg: bytes) -> bytes | None:
        """The kernel's reply to a registration write, None if it sends none.

        Raises ProtocolError for a write the kernel would refuse (EINVAL).
        """
        raise NotImplementedError

    def reply_ok(self, reply: bytes) -> bool:
        """Whether the kernel accepts a reply of this size."""
        raise NotImplementedError


class KvpRules(ServiceRules):
    def registration_reply(self, msg: bytes) -> bytes | None:
        if len(msg) < KVP_MSG_SIZE:
            raise ProtocolError(f"registration of {len(msg)} bytes, need {KVP_MSG_SIZE}")
        op = msg[0]
        if op not in (KvpOp.REGISTER1, _ffi.const("KVP_OP_REGISTER")):
            raise ProtocolError(f"registration with op {op}")
        return encode_registration_reply(op)

    def reply_ok(self, reply: bytes) -> bool:
        return len(reply) >= KVP_MSG_SIZE


class VssRules(ServiceRules):
    def registration_reply(self, msg: bytes) -> bytes | None:
        if len(msg) != VSS_MSG_SIZE:
            raise ProtocolError(f"registration of {len(msg)} bytes, need {VSS_MSG_SIZE}")
        if msg[0] == VssOp.REGISTER1:
            return sim_vss.encode_registration_reply()
        if msg[0] == VssOp.REGISTER:
            return None  # accepted, never READY on current kernels
        raise ProtocolError(f"registration with op {msg[0]}")

    def reply_ok(self, reply: bytes) -> bool:
        return len(reply) == VSS_MSG_SIZE


class FcopyRules(ServiceRules):
    def registration_reply(self, msg: bytes) -> bytes | None:
        version = sim_fcopy.decode_registration(msg)
        if version == FCOPY_CURRENT_VERSION:
            return sim_fcopy.encode_registration_reply(version)
        if version == _ffi.const("FCOPY_VERSION_0"):
            return None
        raise ProtocolError(f"registration with version {version}")

    def reply_ok(self, reply: bytes) -> bool:
        return len(reply) == 4


RULES: dict[str, ServiceRules] = {
    "hv_kvp": KvpRules("hv_kvp"),
    "hv_vss": VssRules("hv_vss"),
    "hv_fcopy": FcopyRules("hv_fcopy"),
}


@dataclass
class Event:
    """Something the kernel side saw, kept for tests and the demo."""

    when: float
    what: str
    detail: str = ""


@dataclass
class _Conn:
    sock: socket.socket
    registered: bool = False
    events: list[Event] = field(default_factory=list)


class ChardevKernel:
    """Serves /dev/vmbus/<name>'s protocol on a listening socket at path.

    Thread-safe for one host caller at a time, as the real channel is.
    """

    def __init__(self, path: str, name: str, *, timeout: float = HV_UTIL_TIMEOUT) -> None:
        self.path = path
        self.rules = RULES[name]
        self.timeout = timeout
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._registered = threading.Condition(self._lock)
        self._conn: _Conn | None = None
        # Replaces a stale socket; raises SocketInUse if a live one is there.
        self._listener = OwnedSocket(path, backlog=4, mode=0o600)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._host_busy = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"sim-{name}", daemon=True)
        self._thread.start()

    # -- daemon side -------------------------------------------------------

    def _event(self, what: str, detail: str = "") -> None:
        self.events.append(Event(time.monotonic(), what, detail))
        log.debug("%s: %s %s", self.rules.name, what, detail)

    def _accept_loop(self) -> None:
        while True:
            r, _, _ = select.select([self._listener.fileno(), self._stop_r], [], [])
            if self._stop_r in r:
                return
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            self._reap()
            with self._lock:
                busy = self._conn is not None
            if busy:
                # The real open() fails with EBUSY; a socket can only hang up.
                self._event("open-busy")
                sock.close()
                continue
            self._event("open")
            threading.Thread(target=self._register, args=(sock,), daemon=True).start()

    def _register(self, sock: socket.socket) -> None:
        conn = _Conn(sock)
        with self._lock:
            if self._conn is not None:
                sock.close()
                return
            self._conn = conn
        try:
            msg = sock.recv(65536)
            if not msg:
                raise OSError("closed before registering")
            self._event("register", msg[:1].hex())
            reply = self.rules.registration_reply(msg)
            if reply is not None:
                sock.send(reply)
                with self._lock:
                    conn.registered = True
                    self._registered.notify_all()
        except (OSError, ProtocolError) as e:
            self._event("register-refused", str(e))
            self._drop(conn)

    def _reap(self) -> None:
        """Drop the daemon's connection if its process is gone.

        The kernel's release() resets the transport the moment the daemon's
        file is closed (even by SIGKILL); a socket only shows that as EOF
        when looked at, so look before deciding the device is busy or held.
        """
        with self._lock:
            conn = self._conn
        if conn is None:
            return
        try:
            gone = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.sock.close()
        self._event("close")

    # -- host side ---------------------------------------------------------

    @property
    def registered(self) -> bool:
        with self._lock:
            return self._conn is not None and self._conn.registered

    def wait_registered(self, timeout: float) -> bool:
        """Wait until a daemon has registered."""
        self._reap()
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (self._conn is not None and self._conn.registered):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._registered.wait(left)
            return True

    def request(
        self, msg: bytes, *, timeout: float | None = None, wait_for_daemon: float = 0.0
    ) -> bytes | None:
        """Hand msg to the daemon and return its reply.

        None means the host was answered HV_E_FAIL by the kernel: no daemon
        registered, the daemon timed out, hung up, or wrote a reply of the
        wrong size.
        """
        with self._host_busy:
            if wait_for_daemon:
                self.wait_registered(wait_for_daemon)
            with self._lock:
                conn = self._conn if self._conn is not None and self._conn.registered else None
            if conn is None:
                self._event("no-daemon")
                return None
            try:
                conn.sock.send(msg)
            except OSError as e:
                self._event("send-failed", str(e))
                self._drop(conn)
                return None
            limit = self.timeout if timeout is None else timeout
            r, _, _ = select.select([conn.sock], [], [], limit)
            if not r:
                self._event("timeout", f"{limit}s")
                # A late reply would be spurious (EINVAL); the daemon must reopen.
                self._drop(conn)
                return None
            try:
                reply = conn.sock.recv(65536)
            except OSError as e:
                reply = b""
                self._event("recv-failed", str(e))
            if not reply:
                self._event("daemon-closed")
                self._drop(conn)
                return None
            if not self.rules.reply_ok(reply):
                self._event("bad-reply-size", str(len(reply)))
                self._drop(conn)
                return None
            return reply

    def inject(self, msg: bytes) -> None:
        """Queue a message the daemon must not answer usefully (hibernation's fake THAW/CANCEL).

        The kernel forces the service to READY, so the daemon's reply fails
        with EINVAL; here that means the connection is dropped once the daemon
        has answered, and the daemon re-registers.
        """
        with self._host_busy:
            with self._lock:
                conn = self._conn
            if conn is None:
                return
            try:
                conn.sock.send(msg)
                select.select([conn.sock], [], [], self.timeout)
            except OSError:
                pass
            self._event("injected", msg[:1].hex())
            self._drop(conn)

    def hangup(self) -> None:
        """The device goes away under the daemon (rescind, module unload)."""
        with self._lock:
            conn = self._conn
        if conn is not None:
            self._drop(conn)

    @property
    def _unplugged_path(self) -> str:
        return self.path + ".unplugged"

    def unplug(self) -> None:
        """The device goes away and stays away until plug(): open() fails with ENOENT.

        Like a channel rescinded (or hv_utils unloaded) and offered again
        later: the node vanishes, then devtmpfs creates it anew.
        """
        os.rename(self.path, self._unplugged_path)  # first: no reconnect in between
        self.hangup()

    def plug(self) -> None:
        """The device is back (see unplug)."""
        os.rename(self._unplugged_path, self.path)

    def close(self) -> None:
        if self._listener.sock.fileno() < 0:
            return  # already closed
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        # The device node goes first (its path only if it is still ours), as
        # when the kernel removes it: the daemon, woken by the hang-up below,
        # finds nothing to reopen instead of a listener about to close.
        self._listener.close()
        self.hangup()
        try:
            os.unlink(self._unplugged_path)  # closed while unplugged: still ours
        except FileNotFoundError:
            pass
        os.close(self._stop_r)
        os.close(self._stop_w)

    def __enter__(self) -> ChardevKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
