# SPDX-License-Identifier: GPL-2.0-only
"""File copy over uio_hv_generic (kernels >= 6.10): discovery, ring channel, IC loop.

Mirrors tools/hv/hv_fcopy_uio_daemon.c and tools/hv/vmbus_bufring.c (spec
fcopy.md 3-4), without their defects: the device is found by its class GUID
(pyudev, or a sysfs scan), bound to uio_hv_generic through new_id when the
kernel does not bind it by itself, the ring size comes from map0's size and
the header size from the page size, every packet is drained per interrupt
with the ring re-checked after unmasking, responses echo the request's
trans_id, the host is signalled only when the ring rules require it, a
malformed packet is skipped (answered when it carries an IC header), and a
rescinded channel is closed and waited for again.

How the device is reached
-------------------------
In production the node is the character device /dev/uioN: open(O_RDWR)
opens the VMBus channel, mmap(2R) at offset 0 maps TX then RX, read() of 4
bytes waits for an interrupt (EIO after a rescind) and write() of an s32 is
irqcontrol (1 = clear the RX interrupt mask and signal the host, 0 = set it).
The ring header is one page (mmap.PAGESIZE).

The simulator (hvsim.uio) serves the same protocol at a Unix
SOCK_SEQPACKET socket in place of the node (--dev-root DIR): on connect it
sends one message whose data is two u32s (the emulated kernel's page size,
which is the ring header size, and the map0 size) with the rings' memfd as
SCM_RIGHTS; afterwards each 4-byte message from it is an interrupt (the
event count, as read() returns), each 4-byte s32 the daemon sends is
irqcontrol, and end-of-file means the channel was rescinded.  Its sysfs tree
(--sysfs-root DIR) has the same layout as /sys.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import mmap
import os
import select
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .. import _ffi
from ..errors import ChannelReset, ProtocolError
from ..protocol import fcopy as fcopy_msg
from ..protocol import icmsg
from ..service import Stopper

log = logging.getLogger(__name__)

FCOPY_CLASS_ID = "34d14be3-dee4-41c8-9ae7-6b174977c192"
# The instance Hyper-V offers; only a fallback, the class decides.
FCOPY_INSTANCE_ID = "eb765408-105f-49b6-b4aa-c123b64d17d4"
UIO_DRIVER = "uio_hv_generic"

# How often a missing device is looked for again (pyudev events wake us earlier).
RESCAN_INTERVAL = 1.0
# Time for uio_hv_generic to bind after new_id (or by itself on >= 7.2 kernels).
BIND_GRACE = 1.0
BIND_RETRY = 5.0
# How long a response may wait for room in a full TX ring.
TX_FULL_TIMEOUT = 30.0
# Busy-wait this long for the host's next request before sleeping in poll():
# during a copy the next WRITE follows within microseconds, and spinning with
# the interrupt masked saves the host's signal and our wake-up.  Idle cost:
# one spin after each burst.
DEFAULT_SPIN_NS = 200_000

_IRQ_ON = struct.pack("<i", 1)
_SIM_HELLO = struct.Struct("<II")


# -- discovery -------------------------------------------------------------------


@dataclass(frozen=True)
class UioDevice:
    """A file-copy VMBus device bound to uio_hv_generic."""

    vmbus_dir: str  # sysfs directory of the VMBus device
    name: str  # "uioN"
    node: str  # device node (or the simulator's socket)
    map_size: int  # size of map0 (txrx_rings): 2 x ring size

    @property
    def ring_size(self) -> int:
        return self.map_size // 2


class Discovery(Protocol):
    """Where the file-copy device is; production uses pyudev, the simulator a sysfs tree."""

    sysfs_root: str

    def fcopy_devices(self) -> list[str]:
        """sysfs directories of the VMBus devices of the file-copy class."""

    def uio_device(self, vmbus_dir: str) -> UioDevice | None:
        """The uio device bound to a VMBus device, if any."""

    def wake_fd(self) -> int | None:
        """A descriptor readable when devices change, or None to rescan by timer."""

    def drain_events(self) -> None:
        """Consume what made wake_fd() readable."""


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _normalize_guid(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return text.strip().strip("{}").lower()


def map_size(uio_sysfs_dir: str) -> int | None:
    """Size of map0 from <uio>/maps/map0/size (hex text such as 0x8000)."""
    text = _read_text(os.path.join(uio_sysfs_dir, "maps", "map0", "size"))
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


class SysfsDiscovery:
    """Scan a sysfs tree (/sys or the simulator's) for the file-copy device."""

    def __init__(self, sysfs_root: str = "/sys", dev_root: str = "/dev") -> None:
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root

    def fcopy_devices(self) -> list[str]:
        base = os.path.join(self.sysfs_root, "bus", "vmbus", "devices")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return []
        found = []
        for name in names:
            path = os.path.join(base, name)
            class_id = _normalize_guid(_read_text(os.path.join(path, "class_id")))
            if class_id == FCOPY_CLASS_ID or (not class_id and name == FCOPY_INSTANCE_ID):
                found.append(path)
        return found

    def uio_device(self, vmbus_dir: str) -> UioDevice | None:
        try:
            names = sorted(
                n for n in os.listdir(os.path.join(vmbus_dir, "uio")) if n.startswith("uio")
            )
        except OSError:
            return None
        for name in names:
            size = map_size(os.path.join(self.sysfs_root, "class", "uio", name))
            if size is None:
                size = map_size(os.path.join(vmbus_dir, "uio", name))
            if size:
                return UioDevice(vmbus_dir, name, os.path.join(self.dev_root, name), size)
        return None

    def wake_fd(self) -> int | None:
        return None

    def drain_events(self) -> None:
        pass


class PyudevDiscovery:
    """The udev database: VMBus devices whose class_id is file copy, and their uio child."""

    def __init__(self) -> None:
        import pyudev

        self._pyudev: Any = pyudev
        self._ctx: Any = pyudev.Context()
        self.sysfs_root = str(self._ctx.sys_path)
        self._monitor: Any = None
        try:
            monitor = pyudev.Monitor.from_netlink(self._ctx)
            monitor.filter_by("vmbus")
            monitor.filter_by("uio")
            monitor.start()
            self._monitor = monitor
        except (OSError, ValueError) as e:
            # Without netlink (some containers) the timer rescan still works.
            log.debug("no udev monitor (%s); rescanning by timer", e)

    def fcopy_devices(self) -> list[str]:
        found = []
        for dev in self._ctx.list_devices(subsystem="vmbus"):
            if _normalize_guid(dev.attributes.get("class_id")) == FCOPY_CLASS_ID:
                found.append(str(dev.sys_path))
        return sorted(found)

    def uio_device(self, vmbus_dir: str) -> UioDevice | None:
        try:
            parent = self._pyudev.Devices.from_sys_path(self._ctx, vmbus_dir)
        except self._pyudev.DeviceNotFoundError:
            return None
        for child in self._ctx.list_devices(subsystem="uio", parent=parent):
            size = map_size(str(child.sys_path))
            if size:
                node = child.device_node or os.path.join("/dev", child.sys_name)
                return UioDevice(vmbus_dir, str(child.sys_name), str(node), size)
        return None

    def wake_fd(self) -> int | None:
        return None if self._monitor is None else int(self._monitor.fileno())

    def drain_events(self) -> None:
        if self._monitor is not None:
            while self._monitor.poll(timeout=0) is not None:
                pass


def make_discovery(sysfs_root: str = "/sys", dev_root: str = "/dev") -> Discovery:
    """pyudev for the real /sys and /dev; a plain scan for any other tree."""
    if sysfs_root == "/sys" and dev_root == "/dev":
        try:
            return PyudevDiscovery()
        except Exception as e:  # no libudev: the scan finds the same devices
            log.debug("pyudev unavailable (%s); scanning /sys", e)
    return SysfsDiscovery(sysfs_root, dev_root)


def find_uio_device(
    sysfs_root: str = "/sys", dev_root: str = "/dev", discovery: Discovery | None = None
) -> UioDevice | None:
    """The file-copy uio device if one is bound now (no binding, no waiting)."""
    disc = discovery or make_discovery(sysfs_root, dev_root)
    for vmbus_dir in disc.fcopy_devices():
        dev = disc.uio_device(vmbus_dir)
        if dev is not None:
            return dev
    return None


# -- binding -----------------------------------------------------------------------


def driver_name(vmbus_dir: str) -> str | None:
    """The driver bound to a VMBus device (its `driver` link), None if unbound or gone."""
    try:
        # One readlink(): the link vanishes when the device is rescinded, and
        # os.path.realpath() (lstat, then readlink) raises if that happens between.
        return os.path.basename(os.readlink(os.path.join(vmbus_dir, "driver")))
    except OSError:
        return None


def write_attribute(path: str, data: bytes) -> None:
    """One write() to a sysfs attribute (O_NONBLOCK: harmless there, and it keeps
    the simulator's new_id FIFO from blocking us when nobody reads it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def run_modprobe(module: str) -> None:
    subprocess.run(
        ["modprobe", module], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


class Binder:
    """Attach the file-copy class to uio_hv_generic through new_id, once, idempotently.

    Kernels before the "bind FCopy by default" change (7.2, stable 6.12.101)
    have no ID table in uio_hv_generic; later ones bind by themselves, so a
    device without a driver is first given BIND_GRACE seconds.  EEXIST (the
    dynamic ID is already there) is success.  A device bound to another
    driver (hv_utils on <= 6.9) is left alone.
    """

    def __init__(
        self,
        sysfs_root: str,
        modprobe: Callable[[str], None] | None = run_modprobe,
        clock: Callable[[], float] = time.monotonic,
        write_attr: Callable[[str, bytes], None] = write_attribute,
    ) -> None:
        self.sysfs_root = sysfs_root
        self._modprobe = modprobe
        self._write_attr = write_attr
        self._clock = clock
        self._first_seen: dict[str, float] = {}
        self._written = False
        self._next_try = 0.0
        self._reported: set[str] = set()

    def driver_dir(self) -> str:
        return os.path.join(self.sysfs_root, "bus", "vmbus", "drivers", UIO_DRIVER)

    def _once(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.log(level, msg, *args)

    def bind(self, vmbus_dir: str) -> None:
        if os.path.isdir(os.path.join(vmbus_dir, "uio")):
            return
        name = driver_name(vmbus_dir)
        if name is not None:
            if name != UIO_DRIVER:
                self._once(
                    "other:" + vmbus_dir,
                    logging.WARNING,
                    "%s is bound to %s, not %s",
                    vmbus_dir,
                    name,
                    UIO_DRIVER,
                )
            return
        now = self._clock()
        first = self._first_seen.setdefault(vmbus_dir, now)
        if now - first < BIND_GRACE:
            return  # a kernel that binds by default gets its chance first
        if self._written or now < self._next_try:
            # The dynamic ID is in place (it outlives rescinds): binding is
            # the kernel's job now.  Failed attempts are retried slowly.
            return
        self._next_try = now + BIND_RETRY
        if not os.path.isdir(self.driver_dir()) and self._modprobe is not None:
            self._modprobe(UIO_DRIVER)
        self.write_new_id()

    def write_new_id(self) -> bool:
        """Write the class GUID to uio_hv_generic's new_id; True if it is (now) there."""
        path = os.path.join(self.driver_dir(), "new_id")
        try:
            self._write_attr(path, FCOPY_CLASS_ID.encode())
        except OSError as e:
            if e.errno == errno.EEXIST:
                self._written = True
                return True
            self._once(
                "new_id",
                logging.ERROR,
                "cannot bind %s via %s: %s",
                FCOPY_CLASS_ID,
                path,
                os.strerror(e.errno or 0),
            )
            return False
        self._written = True
        log.info("asked %s to bind the file-copy device", UIO_DRIVER)
        return True


# -- the uio channel ------------------------------------------------------------------


class UioChannel:
    """/dev/uioN (or the simulator's socket): the two mapped rings plus the interrupt fd."""

    def __init__(
        self, fd: int, mapping: mmap.mmap, ring_size: int, header_size: int, memfd: int = -1
    ) -> None:
        self._fd = fd
        self._memfd = memfd
        self._mapping: mmap.mmap | None = mapping
        self.ring_size = ring_size
        self.header_size = header_size
        # map0: first R bytes TX (guest -> host), next R bytes RX (host -> guest).
        self.tx = _ffi.Ring(mapping, 0, ring_size, header_size)
        self.rx = _ffi.Ring(mapping, ring_size, ring_size, header_size)

    @classmethod
    def open(cls, node: str, map_size: int) -> UioChannel:
        st = os.stat(node)
        if stat.S_ISSOCK(st.st_mode):
            return cls._open_socket(node, map_size)
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        try:
            mapping = mmap.mmap(fd, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mapping, map_size // 2, mmap.PAGESIZE)

    @classmethod
    def _open_socket(cls, node: str, map_size: int) -> UioChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(node)
            data, ancdata, _flags, _addr = sock.recvmsg(64, socket.CMSG_SPACE(4))
            memfd = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(payload) >= 4:
                    memfd = struct.unpack_from("<i", payload)[0]
            if memfd < 0 or len(data) < _SIM_HELLO.size:
                raise ChannelReset(f"{node}: no ring memory in the device's greeting")
            try:
                header_size, size = _SIM_HELLO.unpack_from(data)
                if size != map_size:
                    raise ChannelReset(f"{node}: maps {size} bytes, sysfs says {map_size}")
                mapping = mmap.mmap(
                    memfd, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
            except BaseException:
                os.close(memfd)
                raise
        except BaseException:
            sock.close()
            raise
        return cls(sock.detach(), mapping, map_size // 2, header_size, memfd)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ChannelReset("channel is closed")
        return self._fd

    def wait_interrupt(self) -> int:
        """Consume one interrupt (blocking read of the s32 event count)."""
        try:
            data = os.read(self.fileno(), 4)
        except OSError as e:
            if e.errno == errno.EIO:
                raise ChannelReset("the host rescinded the channel") from e
            raise
        if len(data) != 4:
            raise ChannelReset("the host rescinded the channel")
        count: int = struct.unpack("<i", data)[0]
        return count

    def signal(self) -> None:
        """irqcontrol(1): clears the RX mask and signals the host (the only way to notify it)."""
        os.write(self.fileno(), _IRQ_ON)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None
        for fd in (self._fd, self._memfd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._memfd = -1


# -- request handling ---------------------------------------------------------------


class FileCopierLike(Protocol):
    def start(self, req: fcopy_msg.StartCopy) -> int: ...

    def write(self, offset: int, data: bytes) -> int: ...

    def complete(self) -> int: ...

    def cancel(self) -> int: ...

    def reject(self, status: int) -> int: ...

    @property
    def data_fd(self) -> int:
        """Where WRITE data of the current copy goes, -1 if none (or it failed)."""

    def abort(self) -> None: ...


class _Limiter:
    """At most `burst` log lines per `period` seconds for one kind of trouble."""

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        self.burst = burst
        self.period = period
        self._start = -period
        self._count = 0
        self._dropped = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self.period:
            if self._dropped:
                log.warning("%d similar messages suppressed", self._dropped)
            self._start, self._count, self._dropped = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            log.log(level, msg, *args)
        else:
            self._dropped += 1


class IcHandler:
    """Turns one host packet into the response payload (or None when there is nothing to answer)."""

    def __init__(self, copier: FileCopierLike) -> None:
        self.copier = copier
        self.negotiated: tuple[icmsg.Version, icmsg.Version] | None = None
        self._complain = _Limiter()

    def handle(self, raw: bytes) -> tuple[bytes, int] | None:
        """(response payload, trans_id) for a raw packet from the RX ring."""
        try:
            pkt = icmsg.decode_packet(raw)
        except ProtocolError as e:
            self._complain(logging.WARNING, "dropping packet: %s", e)
            return None
        if pkt.type != icmsg.VM_PKT_DATA_INBAND:
            self._complain(logging.WARNING, "dropping VMBus packet of type %d", pkt.type)
            return None
        try:
            hdr = icmsg.parse_header(pkt.payload)
        except ProtocolError as e:
            self._complain(logging.WARNING, "dropping packet: %s", e)
            return None
        if hdr.is_response:
            self._complain(
                logging.WARNING, "dropping unexpected IC response (type %d)", hdr.msgtype
            )
            return None
        if hdr.msgtype == icmsg.ICMSGTYPE_NEGOTIATE:
            neg = icmsg.negotiate(pkt.payload)
            if neg.framework is not None and neg.service is not None:
                self.negotiated = (neg.framework, neg.service)
                log.info(
                    "negotiated framework %d.%d, file copy %d.%d",
                    *neg.framework,
                    *neg.service,
                )
            else:
                self._complain(logging.ERROR, "IC version negotiation failed")
            return neg.reply, pkt.trans_id
        if hdr.msgtype == icmsg.ICMSGTYPE_FCOPY:
            return icmsg.response(pkt.payload, self._fcopy(icmsg.body(pkt.payload))), pkt.trans_id
        self._complain(logging.WARNING, "unexpected IC message type %d", hdr.msgtype)
        return icmsg.response(pkt.payload, icmsg.HV_E_FAIL), pkt.trans_id

    def _fcopy(self, body: bytes) -> int:
        try:
            msg = fcopy_msg.decode_host(body)
        except ProtocolError as e:
            self._complain(logging.WARNING, "%s", e)
            # Data may be missing now: the current copy fails as a failed WRITE would.
            return self.copier.reject(fcopy_msg.E_FAIL)
        try:
            if isinstance(msg, fcopy_msg.WriteData):
                return self.copier.write(msg.offset, msg.data)
            if isinstance(msg, fcopy_msg.StartCopy):
                return self.copier.start(msg)
            if isinstance(msg, fcopy_msg.CompleteCopy):
                return self.copier.complete()
            return self.copier.cancel()
        except Exception:  # a bug must fail the request, not the daemon
            log.exception("file copy request failed")
            return fcopy_msg.E_FAIL


class _Stopped(Exception):
    pass


class UioFcopyDaemon:
    """Find the device, serve its channel, wait for it again after a rescind."""

    def __init__(
        self,
        discovery: Discovery,
        copier: FileCopierLike,
        stopper: Stopper,
        *,
        binder: Binder | None = None,
        spin_ns: int = DEFAULT_SPIN_NS,
        notify: Callable[[str], object] | None = None,
    ) -> None:
        self.discovery = discovery
        self.binder = binder
        self.handler = IcHandler(copier)
        self.copier = copier
        self.stopper = stopper
        self.spin_ns = spin_ns
        self._notify = notify
        self._ready_sent = False
        self._chan: UioChannel | None = None
        self._complain = _Limiter()

    # -- device lifecycle ---------------------------------------------------------------

    def wait_for_device(self) -> UioDevice | None:
        """Block until the bound device exists; None if stopped.  Logs once while waiting."""
        announced = False
        while not self.stopper.requested:
            dirs = self.discovery.fcopy_devices()
            for vmbus_dir in dirs:
                dev = self.discovery.uio_device(vmbus_dir)
                if dev is not None:
                    return dev
                if self.binder is not None:
                    self.binder.bind(vmbus_dir)
            if not announced:
                if dirs:
                    log.info("waiting for %s to bind the file-copy device", UIO_DRIVER)
                else:
                    # The host has Guest Services disabled, or has not offered it yet.
                    log.info(
                        "no file-copy VMBus device (Guest Service Interface disabled?); waiting"
                    )
                announced = True
            self._sleep(0.2 if dirs else RESCAN_INTERVAL)
        return None

    def _sleep(self, timeout: float) -> None:
        fds = [self.stopper.fileno()]
        wake = self.discovery.wake_fd()
        if wake is not None:
            fds.append(wake)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if wake is not None and wake in ready:
            self.discovery.drain_events()
        if self.stopper.fileno() in ready:
            self.stopper.drain()

    def run(self) -> int:
        opened_fail = ""
        while not self.stopper.requested:
            dev = self.wait_for_device()
            if dev is None:
                break
            try:
                self._chan = UioChannel.open(dev.node, dev.map_size)
            except (OSError, ChannelReset) as e:
                why = str(e)
                if why != opened_fail:
                    log.error("open %s failed: %s", dev.node, why)
                    opened_fail = why
                self._sleep(RESCAN_INTERVAL)
                continue
            opened_fail = ""
            log.info(
                "%s: ring %d bytes per direction, header %d",
                dev.node,
                self._chan.ring_size,
                self._chan.header_size,
            )
            try:
                self.serve(self._chan)
            except (OSError, ChannelReset) as e:
                log.error("%s: %s; waiting for the device", dev.node, e)
            except _Stopped:
                pass
            finally:
                # A rescind or stop ends the transfer: the partial file goes.
                self.copier.abort()
                self._chan.close()
                self._chan = None
            if not self.stopper.requested:
                self._wait_gone(dev)
        return 0

    def _wait_gone(self, dev: UioDevice) -> None:
        """After a rescind, give the device a moment to disappear so it is not reopened at once."""
        deadline = time.monotonic() + 1.0
        while not self.stopper.requested and time.monotonic() < deadline:
            if not os.path.exists(dev.node):
                return
            self._sleep(0.05)

    # -- channel --------------------------------------------------------------------------

    def serve(self, chan: UioChannel) -> None:
        """Run one open channel until it is rescinded (raises) or the daemon stops."""
        poller = select.poll()
        poller.register(self.stopper.fileno(), select.POLLIN)
        poller.register(chan.fileno(), select.POLLIN)
        # Step 3 of the sequence: unmask RX, then take whatever is already there.
        self._service(chan)
        if self._notify is not None and not self._ready_sent:
            self._notify("READY=1")
            self._ready_sent = True
        while not self.stopper.requested:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == self.stopper.fileno():
                    self.stopper.drain()
                    continue
                if (
                    ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                    and not ev & select.POLLIN
                ):
                    raise ChannelReset("the host rescinded the channel")
                chan.wait_interrupt()
                self._service(chan)

    def _service(self, chan: UioChannel) -> None:
        """Drain RX completely, unmask, re-check; spin briefly for the next request."""
        rx = chan.rx
        while True:
            spun = self._drain(chan)
            if self.stopper.requested:
                raise _Stopped()
            # Both kernel variants: <= 6.17 set the mask in its interrupt
            # callback, later ones leave it to us.  Clear it ourselves (no
            # hypercall), then look again: the host skips its signal while
            # the mask is set.
            if self.spin_ns > 0 and not spun:
                rx.set_mask(1)
                if rx.poll(self.spin_ns):
                    continue
            if rx.set_mask(0) == 0:
                return

    def _fast_writes(self, chan: UioChannel) -> bool:
        """Let C serve a run of WRITEs of the current copy; True if it then spun idle."""
        fd = self.copier.data_fd
        if fd < 0:
            return False
        while True:
            _served, state = chan.rx.fcopy_writes(chan.tx, chan.fileno(), fd, self.spin_ns)
            if state != _ffi.FAST_LIMIT:
                return state == _ffi.FAST_IDLE
            if self.stopper.requested:
                return False

    def _drain(self, chan: UioChannel) -> bool:
        """Handle every packet in RX; True if the last step already spun for more."""
        rx = chan.rx
        while True:
            if self._fast_writes(chan):
                return True
            try:
                packets, wake_host = rx.recv_batch()
            except OSError as e:
                if e.errno not in (errno.EBADMSG, errno.EMSGSIZE):
                    raise
                self._corrupt(chan, e)
                continue
            if wake_host:
                chan.signal()
            if not packets:
                return False
            for raw in packets:
                answer = self.handler.handle(raw)
                if answer is not None:
                    self._send(chan, *answer)

    def _corrupt(self, chan: UioChannel, error: OSError) -> None:
        """A descriptor or index we cannot trust: drop what is readable rather than wedge.

        The next packet boundary is unknowable, so everything the host has
        published goes; its next request starts at the write index again.
        """
        dropped, wake_host = chan.rx.discard()
        self._complain(
            logging.ERROR,
            "corrupt packet in the receive ring (%s); dropped %d bytes",
            os.strerror(error.errno or 0),
            dropped,
        )
        if wake_host:
            chan.signal()

    def _send(self, chan: UioChannel, payload: bytes, trans_id: int) -> None:
        deadline = 0.0
        while True:
            try:
                wake_host = chan.tx.send(payload, trans_id)
            except BlockingIOError:
                # pending_send_sz is set: the host signals once it has made room.
                now = time.monotonic()
                if not deadline:
                    deadline = now + TX_FULL_TIMEOUT
                elif now >= deadline:
                    self._complain(
                        logging.ERROR, "host does not drain the send ring; response dropped"
                    )
                    return
                self._wait_tx(chan, deadline - now)
                continue
            if wake_host:
                chan.signal()
            return

    def _wait_tx(self, chan: UioChannel, timeout: float) -> None:
        ready, _, _ = select.select(
            [chan.fileno(), self.stopper.fileno()], [], [], min(timeout, 1.0)
        )
        if self.stopper.requested:
            raise _Stopped()
        if chan.fileno() in ready:
            chan.wait_interrupt()


# -- entry points ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the uio transport (the simulator passes its own trees)."""
    parser.add_argument(
        "--sysfs-root",
        default="/sys",
        metavar="DIR",
        help="sysfs to find the file-copy device in (default /sys)",
    )
    parser.add_argument(
        "--dev-root",
        default="/dev",
        metavar="DIR",
        help="directory of the uioN nodes (default /dev)",
    )


def run(args: argparse.Namespace, stopper: Stopper, copier: FileCopierLike | None = None) -> int:
    """Serve file copy over uio_hv_generic until stopped."""
    from ..notify import sd_notify
    from .writer import FileCopier

    sysfs_root = getattr(args, "sysfs_root", "/sys")
    dev_root = getattr(args, "dev_root", "/dev")
    discovery = make_discovery(sysfs_root, dev_root)
    binder = Binder(sysfs_root, run_modprobe if sysfs_root == "/sys" else None)
    daemon = UioFcopyDaemon(
        discovery,
        copier if copier is not None else FileCopier(),
        stopper,
        binder=binder,
        notify=sd_notify,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return daemon.run()
    return 0
