# SPDX-License-Identifier: GPL-2.0-only
"""The one boundary to the compiled cffi module hvdaemons._hv.

Nothing else imports _hv: callers get ints, bytes and OSError, never cdata.
C helpers return 0/positive or -errno; check_neg_errno() is the single place
that turns a C error into OSError.
"""

from __future__ import annotations

import errno
import os

from . import __version__
from ._hv import ffi, lib  # type: ignore[import-not-found,unused-ignore]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

_built = ffi.string(lib.hvd_version).decode()
if _built != __version__:
    # A stale extension left beside newer Python code would mis-speak the
    # protocol in ways no test of the Python side can see.
    raise ImportError(
        f"hvdaemons._hv was built for version {_built}, but the package is {__version__}: rebuild it"
    )


def check_neg_errno(rc: int, what: str = "") -> int:
    """Return rc, or raise OSError for a C helper's -errno result."""
    if rc < 0:
        if what:
            raise OSError(-rc, os.strerror(-rc), what)
        raise OSError(-rc, os.strerror(-rc))
    return rc


def const(name: str) -> int:
    """A constant from the kernel headers, as the compiler saw it."""
    value: int = getattr(lib, name)
    return value


def sizeof(ctype: str) -> int:
    size: int = ffi.sizeof(ctype)
    return size


def offsetof(ctype: str, *fields: str) -> int:
    """Offset of a (possibly nested) field: offsetof("struct hv_kvp_msg", "body", "kvp_set")."""
    off: int = ffi.offsetof(ctype, *fields)
    return off


def field_size(ctype: str, *fields: str) -> int:
    """Size of a (possibly nested) field of a struct."""
    t: Any = ffi.typeof(ctype)
    for name in fields:
        t = dict(t.fields)[name].type
    size: int = ffi.sizeof(t)
    return size


def set_process_name(name: str) -> None:
    """Set the kernel's comm for this process (what ps -o comm and pgrep match)."""
    check_neg_errno(lib.hvd_set_comm(name.encode()[:15]), "prctl(PR_SET_NAME)")


# -- VMBus ring buffers (bindings/ring.c) --------------------------------------

FAST_IDLE: int = lib.HVR_FAST_IDLE
FAST_OTHER: int = lib.HVR_FAST_OTHER
FAST_LIMIT: int = lib.HVR_FAST_LIMIT
_VM_PKT_DATA_INBAND: int = lib.VM_PKT_DATA_INBAND


class Ring:
    """One direction of a VMBus channel: ring_size bytes at offset of a shared mapping.

    The primitives serve both ends: the daemon is the guest, the simulator's
    host (hvsim._ffi.HostRing) subclasses this.  The mapping (an mmap object
    or any writable buffer) stays exported until close().  recv() returns
    whole packets (descriptor + payload + padding, no trailer) as bytes;
    every method also reports whether the other end must be signalled, which
    the caller does through its interrupt channel.
    """

    def __init__(self, mapping: Any, offset: int, ring_size: int, header_size: int) -> None:
        if offset < 0 or offset + ring_size > len(mapping):
            raise ValueError(f"ring at {offset}+{ring_size} outside a {len(mapping)}-byte mapping")
        self._view = ffi.from_buffer("uint8_t[]", mapping, require_writable=True)
        self._base = self._view + offset
        self.ring_size = ring_size
        self.header_size = header_size
        self.data_size = ring_size - header_size
        # Any packet that fits the ring fits this buffer, so -EMSGSIZE from
        # recv() means a corrupt descriptor, not a short buffer.
        self._buf = ffi.new("uint8_t[]", max(self.data_size, 8))
        self._lens = ffi.new("uint32_t[]", 64)
        self._signal = ffi.new("int *")

    def close(self) -> None:
        """Stop exporting the mapping (so the mmap can be closed)."""
        if self._view is not None:
            ffi.release(self._view)
            self._view = None
            self._base = ffi.NULL

    def reset(self, start: int = 0) -> None:
        """Zero the header and put both indices at start, as the kernel does at open."""
        check_neg_errno(
            lib.hvr_reset(self._base, self.ring_size, self.header_size, start), "ring reset"
        )

    def readable(self) -> int:
        rc: int = lib.hvr_readable(self._base, self.ring_size, self.header_size)
        return check_neg_errno(rc, "ring")

    def recv(self) -> tuple[bytes, bool] | None:
        """The next packet and whether the producer must be signalled; None if empty."""
        rc: int = lib.hvr_recv(
            self._base, self.ring_size, self.header_size, self._buf, len(self._buf), self._signal
        )
        if rc == -errno.EAGAIN:
            return None
        check_neg_errno(rc, "ring receive")
        return ffi.buffer(self._buf, rc)[:], bool(self._signal[0])

    def recv_batch(self) -> tuple[list[bytes], bool]:
        """Every packet readable now (up to 64 and a ring's worth) in one call, and
        whether the producer must be signalled.  An empty list: the ring is empty.
        Raises OSError (EBADMSG, EMSGSIZE) if the next packet is corrupt.
        """
        n: int = lib.hvr_recv_batch(
            self._base,
            self.ring_size,
            self.header_size,
            self._buf,
            len(self._buf),
            self._lens,
            len(self._lens),
            self._signal,
        )
        check_neg_errno(n, "ring receive")
        raw = ffi.buffer(self._buf)
        packets = []
        pos = 0
        for i in range(n):
            size = self._lens[i]
            packets.append(raw[pos : pos + size])
            pos += size
        return packets, bool(self._signal[0])

    def discard(self) -> tuple[int, bool]:
        """Drop everything readable; the byte count and whether to signal the producer."""
        rc: int = lib.hvr_discard(self._base, self.ring_size, self.header_size, self._signal)
        return check_neg_errno(rc, "ring discard"), bool(self._signal[0])

    def set_mask(self, mask: int) -> int:
        """Store interrupt_mask, full barrier; return the bytes readable after it."""
        rc: int = lib.hvr_set_mask(self._base, self.ring_size, self.header_size, mask)
        return check_neg_errno(rc, "ring")

    def poll(self, spin_ns: int) -> int:
        """Spin up to spin_ns for data; the bytes readable (0 if none came)."""
        rc: int = lib.hvr_poll(self._base, self.ring_size, self.header_size, spin_ns)
        return check_neg_errno(rc, "ring")

    def send(
        self,
        payload: bytes | bytearray,
        trans_id: int,
        *,
        ptype: int = _VM_PKT_DATA_INBAND,
        flags: int = 0,
    ) -> bool:
        """Append one packet; True if the consumer must be signalled.

        Raises BlockingIOError (EAGAIN) when the ring is full: pending_send_sz
        then asks the consumer to signal once there is room.
        """
        rc: int = lib.hvr_send(
            self._base,
            self.ring_size,
            self.header_size,
            ptype,
            flags,
            trans_id,
            ffi.from_buffer("uint8_t[]", payload),
            len(payload),
            self._signal,
        )
        check_neg_errno(rc, "ring send")
        return bool(self._signal[0])

    def fcopy_writes(
        self, tx: Ring, uio_fd: int, file_fd: int, spin_ns: int, max_pkts: int = 1024
    ) -> tuple[int, int]:
        """Serve file-copy WRITEs at the head of this (RX) ring in C (ring.cdef.h).

        Returns (WRITEs served, why it stopped: FAST_IDLE, FAST_OTHER or FAST_LIMIT).
        """
        n: int = lib.hvr_fcopy_writes(
            self._base,
            tx._base,
            self.ring_size,
            self.header_size,
            uio_fd,
            file_fd,
            self._buf,
            len(self._buf),
            spin_ns,
            max_pkts,
            self._signal,
        )
        check_neg_errno(n, "ring fast path")
        state: int = self._signal[0]
        return n, state


# -- legacy file copy: the WRITE fast path (bindings/fcopy.c) --------------------


class FcopyPump:
    """Serves WRITE_TO_FILE messages in C while the host streams them (see fcopy.cdef.h)."""

    def __init__(self, size: int) -> None:
        self._buf = ffi.new("uint8_t[]", size)
        self._size = size

    def run(
        self, dev_fd: int, file_fd: int, wake_fd: int, timeout_ms: int = -1, max_writes: int = 0
    ) -> bytes:
        """The next message the pump did not answer; b"" if it returned with none
        pending (woken, timed out, or max_writes served; see fcopy.cdef.h)."""
        n: int = lib.hvd_fcopy_pump(
            dev_fd, file_fd, wake_fd, self._buf, self._size, timeout_ms, max_writes
        )
        check_neg_errno(n, "fcopy device")
        return ffi.buffer(self._buf, n)[:] if n else b""
