# SPDX-License-Identifier: GPL-2.0-only
"""The one boundary to the simulator's compiled cffi module hvsim._hvsim.

Built from bindings/hvsim/ on top of the daemons' own ring primitives
(bindings/ring.c).  Nothing else imports _hvsim: callers get ints, bytes and
OSError, never cdata.  The host drives a ring with the daemons' Ring (send,
recv, poll, masks); HostRing adds what only a host or a test of the ring
does: raw header fields, raw data bytes, and the C file push.
"""

from __future__ import annotations

from typing import Any

from hvdaemons import __version__
from hvdaemons._ffi import Ring, check_neg_errno, offsetof

from ._hvsim import ffi, lib  # type: ignore[import-not-found,unused-ignore]

_built = ffi.string(lib.hvs_version).decode()
if _built != __version__:
    # A stale module beside newer Python code would drive the rings with
    # different rules than the daemon under test.
    raise ImportError(
        f"hvsim._hvsim was built for version {_built}, but hvdaemons is {__version__}: rebuild it"
    )

# Byte offsets of the ring header fields (struct hv_ring_header, bindings/vmbus.cdef.h).
RING_WRITE_INDEX = offsetof("struct hv_ring_header", "write_index")
RING_READ_INDEX = offsetof("struct hv_ring_header", "read_index")
RING_INTERRUPT_MASK = offsetof("struct hv_ring_header", "interrupt_mask")
RING_PENDING_SEND_SZ = offsetof("struct hv_ring_header", "pending_send_sz")
RING_FEATURE_BITS = offsetof("struct hv_ring_header", "feature_bits")

# What HostRing.host_fcopy_stream() returns (bindings/hvsim/host.cdef.h).
HOST_DONE: int = lib.HVS_HOST_DONE
HOST_WAIT: int = lib.HVS_HOST_WAIT
HOST_STATUS: int = lib.HVS_HOST_STATUS
HOST_FULL: int = lib.HVS_HOST_FULL


class HostStream:
    """State of HostRing.host_fcopy_stream(): the simulator's file push in C."""

    def __init__(
        self,
        file_fd: int,
        end: int,
        request: bytes,
        *,
        irq_fd: int,
        mask_on_irq: bool,
        spin_ns: int,
        trans_id: int = 0,
        irq_count: int = 0,
    ) -> None:
        self.file_fd = file_fd
        self.end = end
        self.irq_fd = irq_fd
        self.mask_on_irq = mask_on_irq
        self.spin_ns = spin_ns
        self._req = ffi.new("uint8_t[]", request)
        self._offset = ffi.new("uint64_t *", 0)
        self._trans_id = ffi.new("uint64_t *", trans_id)
        self._irq_count = ffi.new("int32_t *", irq_count)
        self._status = ffi.new("uint32_t *", 0)

    @property
    def offset(self) -> int:
        value: int = self._offset[0]
        return value

    @property
    def trans_id(self) -> int:
        value: int = self._trans_id[0]
        return value

    @property
    def irq_count(self) -> int:
        value: int = self._irq_count[0]
        return value

    @property
    def status(self) -> int:
        value: int = self._status[0]
        return value

    @property
    def request(self) -> bytes:
        """The last request sent (IC headers + hv_do_fcopy)."""
        data: bytes = ffi.buffer(self._req)[:]
        return data


class HostRing(Ring):
    """A ring as the simulated host holds it: the daemons' Ring plus raw access."""

    def __init__(self, mapping: Any, offset: int, ring_size: int, header_size: int) -> None:
        super().__init__(mapping, offset, ring_size, header_size)
        self._host_view = ffi.from_buffer("uint8_t[]", mapping, require_writable=True)
        self._host_base = self._host_view + offset
        self._scratch = ffi.new("uint8_t[]", max(self.data_size, 8))

    def close(self) -> None:
        if self._host_view is not None:
            ffi.release(self._host_view)
            self._host_view = None
            self._host_base = ffi.NULL
        super().close()

    def load(self, field: int) -> int:
        """Acquire load of a header field (RING_* offsets)."""
        value: int = lib.hvs_load(self._host_base, field)
        return value

    def store(self, field: int, value: int) -> None:
        """Store a header field, then a full barrier."""
        lib.hvs_store(self._host_base, field, value)

    def write_data(self, pos: int, data: bytes) -> None:
        """Copy raw bytes into the data area at pos, wrapping (corrupt packets)."""
        data_start = self._host_base + self.header_size
        pos %= self.data_size
        first = min(len(data), self.data_size - pos)
        ffi.memmove(data_start + pos, data[:first], first)
        if first < len(data):
            ffi.memmove(data_start, data[first:], len(data) - first)

    def read_data(self, pos: int, n: int) -> bytes:
        """Copy n raw bytes out of the data area at pos, wrapping (a host reading on its own)."""
        data_start = self._host_base + self.header_size
        pos %= self.data_size
        first = min(n, self.data_size - pos)
        out: bytes = ffi.buffer(data_start + pos, first)[:]
        if first < n:
            out += ffi.buffer(data_start, n - first)[:]
        return out

    def host_fcopy_stream(self, tx: HostRing, stream: HostStream) -> int:
        """Push WRITEs of stream's file on this (RX) ring, collecting responses from tx.

        Returns HOST_DONE, HOST_WAIT, HOST_STATUS or HOST_FULL; stream's
        fields follow the progress.
        """
        rc: int = lib.hvs_host_fcopy_stream(
            self._host_base,
            tx._host_base,
            self.ring_size,
            self.header_size,
            stream.file_fd,
            stream._offset,
            stream.end,
            stream._req,
            len(stream._req),
            stream._trans_id,
            self._scratch,
            len(self._scratch),
            stream.irq_fd,
            stream._irq_count,
            int(stream.mask_on_irq),
            stream.spin_ns,
            stream._status,
        )
        return check_neg_errno(rc, "host stream")
