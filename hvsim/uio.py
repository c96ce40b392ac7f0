# SPDX-License-Identifier: GPL-2.0-only
"""Simulated uio_hv_generic file-copy channel and the Hyper-V host behind it.

Mirrors what drivers/uio/uio_hv_generic.c and the host do for the
hv_fcopy_uio_daemon (tools/hv/hv_fcopy_uio_daemon.c): a sysfs tree for discovery, a
"device node" serving the ring memory and the interrupt semantics, and a
host that negotiates and pushes files through the rings.  The simulator runs
in its own process (the caller's; the daemon is another process), so both
ends touch the shared rings concurrently.

Layout under ROOT (the daemon gets --sysfs-root ROOT/sys --dev-root ROOT/dev):

  sys/bus/vmbus/devices/<instance>/{class_id,device_id,modalias}
  sys/bus/vmbus/devices/<instance>/uio/uioN/          once bound
  sys/bus/vmbus/devices/<instance>/driver -> uio_hv_generic   once bound
  sys/bus/vmbus/drivers/uio_hv_generic/new_id          a FIFO the simulator reads
  sys/class/uio/uioN/{name,version,maps/map0/{name,size,offset}}
  dev/uioN                                             SOCK_SEQPACKET socket

The node's protocol (see hvdaemons.fcopy.uio_channel): on connect the simulator
sends u32 page size + u32 map0 size with the memfd of map0 (2 x R bytes:
TX then RX) as SCM_RIGHTS; afterwards it sends the s32 event count as a
4-byte message per interrupt (read() on /dev/uioN), and every 4-byte s32 the
daemon sends is irqcontrol: 1 clears the RX interrupt mask and signals the
host, 0 sets the mask.  Closing the connection is a rescind.  Like the
kernel, opening resets both ring headers.

Kernel variants (VARIANTS): ring size 16 KiB (6.10-6.14) or 20 KiB (>= 6.15),
64 KiB pages (header 64 KiB, R = 128 KiB), a kernel that sets the RX
interrupt mask in its interrupt callback (<= 6.17) or leaves it to user space
(>= 6.18), and one that binds the class by default (>= 7.2) instead of
waiting for new_id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from hvdaemons.errors import HvError
from hvdaemons.protocol import fcopy as fcopy_msg
from hvdaemons.protocol import icmsg
from hvdaemons.protocol.status import HvStatus, describe
from hvdaemons.vmbus import FCOPY_CLASS_ID, FCOPY_INSTANCE_ID, KVP_CLASS_ID, UIO_DRIVER

from . import _ffi as sim_ffi
from . import launch
from .demo import Part, PartFailed
from .protocol import fcopy as sim_fcopy
from .protocol import icmsg as sim_icmsg

log = logging.getLogger(__name__)

_HELLO = struct.Struct("<II")
_S32 = struct.Struct("<i")
PAYLOAD_WRITE = icmsg.ICMSG_HDR_SIZE + fcopy_msg.WRITE_SIZE


@dataclass(frozen=True)
class KernelVariant:
    """The uio_hv_generic behaviours a daemon must cope with."""

    name: str
    ring_size: int  # R, per direction, header page included
    page_size: int  # ring header size
    masks_in_callback: bool  # <= 6.17: the interrupt callback sets RX interrupt_mask = 1
    binds_by_default: bool  # >= 7.2: no new_id needed

    @property
    def map_size(self) -> int:
        return 2 * self.ring_size


VARIANTS: dict[str, KernelVariant] = {
    v.name: v
    for v in (
        KernelVariant("6.10", 0x4000, 4096, True, False),
        KernelVariant("6.15", 0x5000, 4096, True, False),
        KernelVariant("6.18", 0x5000, 4096, False, False),
        KernelVariant("7.2", 0x5000, 4096, False, True),
        KernelVariant("64k-pages", 0x20000, 0x10000, False, False),
    )
}
DEFAULT_VARIANT = "6.18"


class HostError(HvError):
    """The guest broke the protocol (no signal, wrong trans_id, ...) or went away."""


class Rescinded(HostError):
    """The daemon closed the device."""


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def _guid_field(guid: str) -> str:
    return "{" + guid + "}\n"


def _modalias(guid: str) -> str:
    raw = bytes.fromhex(guid.replace("-", ""))
    mem = raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]
    return "vmbus:" + mem.hex() + "\n"


class UioSim:
    """The guest kernel side: sysfs tree, new_id, the uioN node and its interrupts."""

    def __init__(
        self,
        root: str,
        variant: KernelVariant | str = DEFAULT_VARIANT,
        *,
        instance: str = FCOPY_INSTANCE_ID,
        uio_index: int = 1,
    ) -> None:
        self.root = root
        self.variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self.instance = instance
        self.uio_name = f"uio{uio_index}"
        self.sysfs = os.path.join(root, "sys")
        self.dev = os.path.join(root, "dev")
        self.node = os.path.join(self.dev, self.uio_name)
        self.vmbus_dir = os.path.join(self.sysfs, "bus", "vmbus", "devices", instance)
        self.driver_dir = os.path.join(self.sysfs, "bus", "vmbus", "drivers", UIO_DRIVER)
        self.new_id_writes: list[str] = []
        self.interrupts = 0  # host -> guest signals delivered
        self.guest_signals = 0  # irqcontrol(1) writes
        self.bad_irqcontrol = 0
        self.opens = 0
        self._memfd = -1
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._mapping: object | None = None
        self.tx: sim_ffi.HostRing | None = None  # guest -> host
        self.rx: sim_ffi.HostRing | None = None  # host -> guest
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._conn_open = False
        self._pending = 0
        self._new_id_thread: threading.Thread | None = None
        self.bound = False
        for d in (self.dev, os.path.join(self.sysfs, "class", "uio"), self.driver_dir):
            os.makedirs(d, exist_ok=True)
        new_id = os.path.join(self.driver_dir, "new_id")
        if not os.path.exists(new_id):
            os.mkfifo(new_id, 0o200)
        self._add_unrelated_devices()

    def _add_unrelated_devices(self) -> None:
        """A KVP device (other class) and another uio user on uio0: the daemon must pick by class."""
        kvp = os.path.join(
            self.sysfs, "bus", "vmbus", "devices", "242ff919-07db-4180-9c2e-b86cb68c8c55"
        )
        os.makedirs(os.path.join(kvp), exist_ok=True)
        _write(os.path.join(kvp, "class_id"), _guid_field(KVP_CLASS_ID))
        _write(os.path.join(kvp, "device_id"), _guid_field("242ff919-07db-4180-9c2e-b86cb68c8c55"))
        other = os.path.join(self.sysfs, "class", "uio", "uio0", "maps", "map0")
        os.makedirs(other, exist_ok=True)
        _write(os.path.join(other, "size"), "0x1000\n")
        _write(os.path.join(self.sysfs, "class", "uio", "uio0", "name"), "other\n")

    # -- device lifecycle -------------------------------------------------------------

    def offer(self) -> None:
        """The host offers the channel: the VMBus device appears (bound at once on >= 7.2)."""
        os.makedirs(self.vmbus_dir, exist_ok=True)
        _write(os.path.join(self.vmbus_dir, "class_id"), _guid_field(FCOPY_CLASS_ID))
        _write(os.path.join(self.vmbus_dir, "device_id"), _guid_field(self.instance))
        _write(os.path.join(self.vmbus_dir, "modalias"), _modalias(FCOPY_CLASS_ID))
        if self.variant.binds_by_default or FCOPY_CLASS_ID in self.new_id_writes:
            self.bind()
        elif self._new_id_thread is None:
            self._new_id_thread = threading.Thread(target=self._read_new_id, daemon=True)
            self._new_id_thread.start()

    def _read_new_id(self) -> None:
        path = os.path.join(self.driver_dir, "new_id")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Hold a writer end too, so a writer closing does not make us spin on EOF.
        keep = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            while True:
                r, _, _ = select.select([fd, self._stop_r], [], [])
                if self._stop_r in r:
                    return
                data = os.read(fd, 4096)
                for line in data.decode("ascii", "replace").split():
                    guid = line.strip().strip("{}").lower()
                    self.new_id_writes.append(guid)
                    if guid == FCOPY_CLASS_ID and os.path.isdir(self.vmbus_dir) and not self.bound:
                        self.bind()
        finally:
            os.close(fd)
            os.close(keep)

    def bind(self) -> None:
        """uio_hv_generic probes the device: uioN, its maps, the node."""
        with self._lock:
            if self.bound:
                return
            uio_sys = os.path.join(self.sysfs, "class", "uio", self.uio_name)
            maps = os.path.join(uio_sys, "maps", "map0")
            os.makedirs(maps, exist_ok=True)
            _write(os.path.join(uio_sys, "name"), "uio_hv_generic\n")
            _write(os.path.join(uio_sys, "version"), "0.02.1\n")
            _write(os.path.join(maps, "name"), "txrx_rings\n")
            _write(os.path.join(maps, "size"), f"0x{self.variant.map_size:x}\n")
            _write(os.path.join(maps, "offset"), "0x0\n")
            self._memfd = os.memfd_create("hv-uio-rings", os.MFD_CLOEXEC)
            os.ftruncate(self._memfd, self.variant.map_size)
            import mmap

            self._mapping = mmap.mmap(self._memfd, self.variant.map_size)
            r = self.variant.ring_size
            self.tx = sim_ffi.HostRing(self._mapping, 0, r, self.variant.page_size)
            self.rx = sim_ffi.HostRing(self._mapping, r, r, self.variant.page_size)
            if os.path.lexists(self.node):
                os.unlink(self.node)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            listener.bind(self.node)
            listener.listen(4)
            self._listener = listener
            # The node exists before the sysfs link, as with devtmpfs and uio.
            os.makedirs(os.path.join(self.vmbus_dir, "uio", self.uio_name), exist_ok=True)
            link = os.path.join(self.vmbus_dir, "driver")
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(self.driver_dir, self.vmbus_dir), link)
            self.bound = True

    def rescind(self) -> None:
        """The host withdraws the channel: the daemon sees EOF, the device disappears."""
        self._drop_conn()
        with self._lock:
            self.bound = False
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.node)
            shutil.rmtree(self.vmbus_dir, ignore_errors=True)
            shutil.rmtree(
                os.path.join(self.sysfs, "class", "uio", self.uio_name), ignore_errors=True
            )
            self._unmap()

    def _unmap(self) -> None:
        for ring in (self.tx, self.rx):
            if ring is not None:
                ring.close()
        self.tx = self.rx = None
        if self._mapping is not None:
            self._mapping.close()  # type: ignore[attr-defined]
            self._mapping = None
        if self._memfd >= 0:
            os.close(self._memfd)
            self._memfd = -1

    def close(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._stop_w, b"x")
        if self._new_id_thread is not None:
            self._new_id_thread.join(5)
        self.rescind()
        for fd in (self._stop_r, self._stop_w, self._wake_r, self._wake_w):
            os.close(fd)

    # -- the open channel ---------------------------------------------------------------

    def accept(self, timeout: float = 30.0) -> None:
        """Wait for the daemon to open the node; reset the rings and hand over the memory."""
        if self._listener is None:
            raise HostError("device not bound")
        r, _, _ = select.select([self._listener], [], [], timeout)
        if not r:
            raise HostError(f"the daemon did not open {self.node} within {timeout:.0f} s")
        conn, _ = self._listener.accept()
        self._drop_conn()
        assert self.tx is not None and self.rx is not None
        # Opening the channel zeroes both headers and sets feat_pending_send_sz.
        self.tx.reset()
        self.rx.reset()
        conn.sendmsg(
            [_HELLO.pack(self.variant.page_size, self.variant.map_size)],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("<i", self._memfd))],
        )
        with self._lock:
            self._conn = conn
            self._conn_open = True
            self._pending = 0
        self.opens += 1
        # irqcontrol is applied as the daemon writes it, like the kernel's
        # write() handler, so the daemon never blocks on a full socket.
        threading.Thread(target=self._irqcontrol, args=(conn,), daemon=True).start()

    def _irqcontrol(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(64)
            except OSError:
                data = b""
            with self._lock:
                if conn is not self._conn:
                    return
                if not data:
                    self._conn_open = False
                elif len(data) != 4:
                    self.bad_irqcontrol += 1  # write() of another size: EINVAL
                    continue
                else:
                    value = _S32.unpack(data)[0]
                    if self.rx is not None:
                        # hv_uio_irqcontrol: interrupt_mask = !value, then signal if value.
                        self.rx.store(sim_ffi.RING_INTERRUPT_MASK, 0 if value else 1)
                    if not value:
                        continue
                    self.guest_signals += 1
                    self._pending += 1
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"s")
            if not data:
                return

    def _drop_conn(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._conn_open = False
        if conn is not None:
            # shutdown() wakes the irqcontrol thread out of recv(); close() alone would not.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    @property
    def irq_fd(self) -> int:
        """The connection interrupts are sent on (for the C host stream)."""
        if self._conn is None:
            raise Rescinded("the device is not open")
        return self._conn.fileno()

    def signal_guest(self) -> None:
        """vmbus_on_event -> hv_uio_channel_cb: maybe mask, then count an interrupt."""
        conn = self._conn
        if conn is None:
            return
        assert self.rx is not None
        if self.variant.masks_in_callback:
            self.rx.store(sim_ffi.RING_INTERRUPT_MASK, 1)
        self.interrupts += 1
        try:
            conn.send(_S32.pack(self.interrupts), socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass  # interrupts coalesce: one is already waiting to be read
        except OSError:
            pass  # the daemon went away; pump() reports it

    def pump(self, timeout: float) -> int:
        """Wait up to timeout for the daemon's signals (irqcontrol 1); return how many came.

        Raises Rescinded when the daemon has closed the node.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                n, self._pending = self._pending, 0
                open_ = self._conn is not None and self._conn_open
            if n:
                return n
            if not open_:
                raise Rescinded("the daemon closed the device")
            left = deadline - time.monotonic()
            if left <= 0:
                return 0
            r, _, _ = select.select([self._wake_r], [], [], left)
            if r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)

    def wait_closed(self, timeout: float) -> bool:
        """Wait for the daemon to close the node (True) or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.pump(left)
            except Rescinded:
                return True


@dataclass
class CopyResult:
    """The statuses the host received for one file."""

    start: int = 0
    writes: list[int] = field(default_factory=list)
    finish: int | None = None  # COMPLETE or CANCEL status
    cancelled: bool = False

    @property
    def write_failures(self) -> list[int]:
        return [s for s in self.writes if s != HvStatus.S_OK]

    @property
    def ok(self) -> bool:
        return (
            self.start == HvStatus.S_OK and not self.write_failures and self.finish == HvStatus.S_OK
        )


class UioHost:
    """The Hyper-V host on the other end of the rings: negotiate, then push files.

    One request at a time, as Hyper-V does: send on RX, signal if the ring
    rules say so, wait for the guest's signal, read the response from TX and
    check that it echoes trans_id.  strict=True (the default) never looks at
    TX without a signal, so a daemon that forgets to signal fails here.
    """

    def __init__(
        self, sim: UioSim, *, timeout: float = 30.0, strict: bool = True, spin_ns: int = 0
    ) -> None:
        self.sim = sim
        self.timeout = timeout
        self.strict = strict
        self.spin_ns = spin_ns
        self._trans_id = 0x1000
        self._ic_tid = 0
        self.requests = 0
        self.negotiated: tuple[icmsg.Version, icmsg.Version] | None = None

    # -- transport ----------------------------------------------------------------------

    def connect(self, timeout: float = 30.0) -> None:
        self.sim.accept(timeout)

    def post(
        self,
        payload: bytes | bytearray,
        trans_id: int | None = None,
        *,
        ptype: int = icmsg.VM_PKT_DATA_INBAND,
        flags: int = sim_icmsg.VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
    ) -> int:
        """Put one packet into RX (waiting for room) and signal if needed; return its trans_id."""
        rx = self.sim.rx
        if rx is None:
            raise Rescinded("no channel")
        if trans_id is None:
            self._trans_id += 1
            trans_id = self._trans_id
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                need_signal = rx.send(payload, trans_id, ptype=ptype, flags=flags)
                break
            except BlockingIOError:
                # pending_send_sz is set: the guest signals when it has read enough.
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HostError("the guest does not drain its receive ring") from None
                self.sim.pump(min(left, 0.5))
        if need_signal:
            self.sim.signal_guest()
        self.requests += 1
        return trans_id

    def post_raw(self, data: bytes) -> None:
        """Write raw bytes at RX write_index as if they were packets (corruption tests)."""
        rx = self.sim.rx
        if rx is None:
            raise Rescinded("no channel")
        self._raw_write(rx, data)
        self.sim.signal_guest()

    @staticmethod
    def _raw_write(ring: sim_ffi.HostRing, data: bytes) -> None:
        if len(data) % 8:
            data += bytes(8 - len(data) % 8)
        w = ring.load(sim_ffi.RING_WRITE_INDEX)
        ring.write_data(w, data)
        ring.store(sim_ffi.RING_WRITE_INDEX, (w + len(data)) % ring.data_size)

    def wait_consumed(self, timeout: float = 10.0) -> None:
        """Wait until the guest has read everything in RX (after packets it must not answer)."""
        rx = self.sim.rx
        if rx is None:
            raise Rescinded("no channel")
        deadline = time.monotonic() + timeout
        while rx.readable():
            if time.monotonic() > deadline:
                raise HostError("the guest does not read its receive ring")
            self.sim.pump(0.01)

    def response(self, trans_id: int) -> bytes:
        """Wait for the guest's response to trans_id; return its payload."""
        tx = self.sim.tx
        if tx is None:
            raise Rescinded("no channel")
        deadline = time.monotonic() + self.timeout
        while True:
            got = tx.recv()
            if got is not None:
                raw, wake_guest = got
                if wake_guest:
                    self.sim.signal_guest()
                pkt = icmsg.decode_packet(raw)
                if pkt.trans_id != trans_id:
                    raise HostError(
                        f"response trans_id {pkt.trans_id:#x}, request was {trans_id:#x}"
                    )
                if pkt.type != icmsg.VM_PKT_DATA_INBAND:
                    raise HostError(f"response packet of type {pkt.type}")
                return pkt.payload
            if self.spin_ns:
                # A polling host: mask TX interrupts while spinning (the guest
                # then skips its signal), unmask and re-check before sleeping.
                tx.set_mask(1)
                if tx.poll(self.spin_ns) or tx.set_mask(0):
                    continue
            # TX was empty when we looked: from now on the guest must signal.
            # A strict host looks again only after a signal, so a guest that
            # forgets one is caught (it may legitimately skip it when we
            # already took the response, as above).
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    if tx.readable():
                        raise HostError(
                            f"lost wake-up: response to {trans_id:#x} sent without a signal"
                        )
                    raise HostError(f"no response to request {trans_id:#x}")
                if self.sim.pump(left) > 0 or not self.strict:
                    break

    def request(self, payload: bytes | bytearray) -> bytes:
        return self.response(self.post(payload))

    # -- IC ------------------------------------------------------------------------------

    def negotiate(
        self, fw: list[icmsg.Version] | None = None, svc: list[icmsg.Version] | None = None
    ) -> tuple[int, bytes]:
        """Offer versions (default what Hyper-V offers for file copy); return (status, body)."""
        req = sim_icmsg.encode_negotiate_request(fw or [(3, 0)], svc or [(1, 0), (1, 1)])
        reply = self.request(req)
        if len(reply) != len(req) + (-len(req) % 8):
            raise HostError(f"negotiate reply of {len(reply)} bytes to {len(req)}")
        hdr = icmsg.decode_header(reply)
        if hdr.icflags != icmsg.ICMSGHDRFLAG_TRANSACTION | icmsg.ICMSGHDRFLAG_RESPONSE:
            raise HostError(f"negotiate reply icflags {hdr.icflags}")
        body = icmsg.body(reply)
        if hdr.status == 0:
            fw_n, svc_n = struct.unpack_from("<HH", body)
            v = struct.unpack_from("<HHHH", body, 8)
            if (fw_n, svc_n) == (1, 1):
                self.negotiated = ((v[0], v[1]), (v[2], v[3]))
        return hdr.status, body

    def fcopy(self, body: bytes | bytearray) -> int:
        """Send one file-copy message; return the status the guest answered."""
        self._ic_tid = (self._ic_tid + 1) & 0xFF
        payload = sim_icmsg.encode_request(
            icmsg.ICMSGTYPE_FCOPY, bytes(body), transaction_id=self._ic_tid
        )
        reply = self.request(payload)
        return self._status(reply, len(payload))

    @staticmethod
    def _status(reply: bytes, sent: int) -> int:
        if len(reply) < sent:
            raise HostError(f"reply of {len(reply)} bytes to a {sent}-byte request")
        hdr = icmsg.decode_header(reply)
        if not hdr.is_response:
            raise HostError(f"reply icflags {hdr.icflags}")
        return hdr.status

    def start(
        self, file_name: str | bytes, path_name: str | bytes, flags: int = 0, file_size: int = 0
    ) -> int:
        return self.fcopy(
            sim_fcopy.encode_start(file_name, path_name, flags, file_size, utf16=True)
        )

    def write(self, offset: int, data: bytes, *, size: int | None = None) -> int:
        return self.fcopy(sim_fcopy.encode_write(offset, data, size=size))

    def complete(self) -> int:
        return self.fcopy(sim_fcopy.encode_complete())

    def cancel(self) -> int:
        return self.fcopy(sim_fcopy.encode_cancel())

    def copy_file(
        self,
        source: str | bytes | BinaryIO,
        path_name: str | bytes,
        file_name: str | bytes,
        *,
        flags: int = fcopy_msg.CREATE_PATH,
        cancel_after: int | None = None,
        progress: Callable[[int], None] | None = None,
        fast: bool = False,
    ) -> CopyResult:
        """Push a file (a path, bytes, or an open binary file) as Copy-VMFile does.

        cancel_after=N sends CANCEL instead of the (N+1)th WRITE.  fast=True
        (a file source) streams the WRITEs from C (HostRing.host_fcopy_stream),
        spinning spin_ns for each response: a host fast enough to measure the
        daemon with.
        """
        if isinstance(source, bytes):
            import io

            stream: BinaryIO = io.BytesIO(source)
            size = len(source)
        elif isinstance(source, str):
            stream = open(source, "rb")  # noqa: SIM115 - closed below
            size = os.fstat(stream.fileno()).st_size
        else:
            stream = source
            size = os.fstat(stream.fileno()).st_size
        try:
            result = CopyResult(start=self.start(file_name, path_name, flags, size))
            if result.start != HvStatus.S_OK:
                return result
            if fast and cancel_after is None and not isinstance(source, bytes):
                if self._stream(stream.fileno(), size, result):
                    result.finish = self.complete()
                return result
            for n, (offset, chunk) in enumerate(_fragments(stream)):
                if cancel_after is not None and n >= cancel_after:
                    result.cancelled = True
                    result.finish = self.cancel()
                    return result
                status = self._write_fast(offset, chunk)
                result.writes.append(status)
                if status != HvStatus.S_OK:
                    # Hyper-V gives up on the first failure.
                    return result
                if progress is not None:
                    progress(offset + len(chunk))
            if cancel_after is not None:
                result.cancelled = True
                result.finish = self.cancel()
            else:
                result.finish = self.complete()
            return result
        finally:
            if not isinstance(source, (bytes,)) and stream is not source:
                stream.close()

    def _stream(self, fd: int, size: int, result: CopyResult) -> bool:
        """All WRITEs of a file through the C host loop; False if one failed."""
        rx, tx = self.sim.rx, self.sim.tx
        if rx is None or tx is None:
            raise Rescinded("no channel")
        template = sim_icmsg.encode_request(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_write(0, b""))
        stream = sim_ffi.HostStream(
            fd,
            size,
            template,
            irq_fd=self.sim.irq_fd,
            mask_on_irq=self.sim.variant.masks_in_callback,
            spin_ns=self.spin_ns,
            trans_id=self._trans_id,
            irq_count=self.sim.interrupts,
        )
        while True:
            state = rx.host_fcopy_stream(tx, stream)
            sent = stream.trans_id - self._trans_id
            self._trans_id = stream.trans_id
            self.sim.interrupts = stream.irq_count
            self.requests += sent
            if state == sim_ffi.HOST_WAIT:
                # The response is late: wait for the guest's signal as usual.
                reply = self.response(stream.trans_id)
                status = self._status(reply, PAYLOAD_WRITE)
                ok = sent - 1
                result.writes.extend([HvStatus.S_OK] * ok + [status])
                if status != HvStatus.S_OK:
                    return False
                continue
            if state == sim_ffi.HOST_FULL:
                result.writes.extend([HvStatus.S_OK] * sent)
                self.sim.pump(0.1)
                continue
            if state == sim_ffi.HOST_STATUS:
                result.writes.extend([HvStatus.S_OK] * (sent - 1) + [stream.status])
                return False
            result.writes.extend([HvStatus.S_OK] * sent)
            return True

    def _write_fast(self, offset: int, chunk: memoryview) -> int:
        """A WRITE built in a reused buffer (the benchmark path)."""
        buf = self._write_buf()
        struct.pack_into("<QI", buf, _W_OFFSET, offset, len(chunk))
        buf[_W_DATA : _W_DATA + len(chunk)] = chunk
        if len(chunk) < fcopy_msg.DATA_FRAGMENT:
            buf[_W_DATA + len(chunk) :] = bytes(PAYLOAD_WRITE - _W_DATA - len(chunk))
        self._ic_tid = (self._ic_tid + 1) & 0xFF
        buf[icmsg.TRANSACTION_ID_OFFSET] = self._ic_tid
        reply = self.response(self.post(buf))
        return self._status(reply, PAYLOAD_WRITE)

    def _write_buf(self) -> bytearray:
        buf = getattr(self, "_wbuf", None)
        if buf is None:
            buf = bytearray(
                sim_icmsg.encode_request(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_write(0, b""))
            )
            self._wbuf = buf
        return buf


_W_OFFSET = icmsg.ICMSG_HDR_SIZE + fcopy_msg.OFF_W_OFFSET
_W_DATA = icmsg.ICMSG_HDR_SIZE + fcopy_msg.OFF_W_DATA


def _fragments(stream: BinaryIO) -> Iterator[tuple[int, memoryview]]:
    buf = bytearray(fcopy_msg.DATA_FRAGMENT)
    view = memoryview(buf)
    offset = 0
    while True:
        n = stream.readinto(view)  # type: ignore[attr-defined]
        if not n:
            return
        yield offset, view[:n]
        offset += n


# -- running the real daemon against it -------------------------------------------------


# Runs "$@" with /sys and /dev replaced by the simulator's trees ($1 and $2), in
# a private mount namespace (needs root): the daemon, with no options, sees
# what a guest shows it, and takes a guest's discovery (the kernel's uevents too).
_AT_GUEST_PATHS = 'mount --bind "$1" /sys && mount --bind "$2" /dev && shift 2 && exec "$@"'


def at_guest_paths(root: str, argv: list[str]) -> list[str]:
    """argv run with the simulator tree at root mounted on /sys and /dev (its pid stays argv's)."""
    sysfs, dev = os.path.join(root, "sys"), os.path.join(root, "dev")
    return [
        *("unshare", "--mount", "--propagation", "private", "--"),
        *("sh", "-c", _AT_GUEST_PATHS, "sh", sysfs, dev, *argv),
    ]


def daemon_command(
    root: str, extra: list[str] | None = None, *, guest_paths: bool = False
) -> list[str]:
    """The unmodified daemon, foreground, pointed at a simulator tree.

    guest_paths: with no options, the tree mounted where a guest has it
    (at_guest_paths()); otherwise --sysfs-root and --dev-root name it.
    """
    daemon = [*launch.daemon_argv("hv_fcopy_daemon"), "-n"]
    if guest_paths:
        return at_guest_paths(root, [*daemon, *(extra or [])])
    return [
        *daemon,
        "--sysfs-root",
        os.path.join(root, "sys"),
        "--dev-root",
        os.path.join(root, "dev"),
        *(extra or []),
    ]


@contextlib.contextmanager
def running_daemon(
    root: str,
    *,
    log_path: str | None = None,
    extra: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    guest_paths: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the daemon on the simulator tree (env: variables to add, e.g. a
    NOTIFY_SOCKET; guest_paths: see daemon_command()); SIGTERM and reap it afterwards."""
    out = open(log_path or os.devnull, "ab")  # noqa: SIM115 - closed below
    proc = launch.popen(
        daemon_command(root, extra, guest_paths=guest_paths),
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        launch.stop(proc)
        out.close()


def demo_uio(part: Part) -> None:
    """`hvsim demo fcopy`, uio part: Copy-VMFile through the ring buffers."""
    variant = VARIANTS[DEFAULT_VARIANT]
    print(f"== file copy over the uio ring (uio_hv_generic as in Linux {variant.name}) ==")
    size = 5 * 1024 * 1024 + 123
    with tempfile.TemporaryDirectory(prefix="hvsim-uio-") as tmp:
        root = os.path.join(tmp, "sim")
        dest = os.path.join(tmp, "guest", "incoming")
        src = os.path.join(tmp, "host-file.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        sim = UioSim(root, variant)
        logfile = os.path.join(tmp, "daemon.log")
        try:
            sim.offer()
            try:
                with running_daemon(root, log_path=logfile) as proc:
                    host = UioHost(sim)
                    _wait_bound(sim, 15.0, proc)
                    host.connect()
                    status, _ = host.negotiate()
                    part.check(
                        status == 0 and host.negotiated is not None,
                        f"negotiate: status {status:#x}, versions {host.negotiated}",
                    )
                    t0 = time.monotonic()
                    result = host.copy_file(src, dest, "copied.bin")
                    dt = time.monotonic() - t0
            except HostError as e:
                raise PartFailed(str(e)) from e
            finally:
                with open(logfile, encoding="utf-8", errors="replace") as f:
                    part.daemon_log = f.read().splitlines()
            target = os.path.join(dest, "copied.bin")
            part.check(
                result.ok,
                f"START {describe(result.start)}, {len(result.writes)} WRITEs "
                f"({len(result.write_failures)} failed), "
                f"COMPLETE {'-' if result.finish is None else describe(result.finish)}",
            )
            with open(src, "rb") as a:
                same = os.path.exists(target) and a.read() == _read(target)
            part.check(same, f"{size} bytes in {target}, identical to the host's file")
            print(f"  {size / dt / 1e6:.0f} MB/s ({dt:.2f} s) with the simulator's Python host")
            print("  daemon log:")
            for line in part.daemon_log:
                print(f"    {line}")
            part.check(
                proc.returncode == 0, f"the daemon exited with status {proc.returncode} on SIGTERM"
            )
        finally:
            sim.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _wait_bound(sim: UioSim, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not sim.bound:
        if proc is not None and proc.poll() is not None:
            raise HostError(f"the daemon exited with status {proc.returncode} before binding")
        if time.monotonic() > deadline:
            raise HostError("the daemon did not bind the device (new_id)")
        time.sleep(0.02)
