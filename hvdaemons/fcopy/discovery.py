# SPDX-License-Identifier: GPL-2.0-only
"""Where the file-copy VMBus device is, which driver owns it, and its uio node.

Replaces the device lookup of tools/hv/hv_fcopy_uio_daemon.c (the first entry
of /sys/bus/vmbus/devices/eb765408-.../uio) without its defects: the device
is found by its class GUID in a scan of the sysfs tree (/sys, or the
simulator's), and the ring size comes from map0's size.  Nothing here binds,
opens or waits.

Like tools/hv, the daemon reads sysfs itself rather than through libudev
(pyudev): sysfs is the kernel's ABI and all the daemon needs, it works where
udev does not run and on a /sys that is not sysfs (libudev ignores such a
tree), and pyudev would add about 3 MiB to the daemon's memory (README.md,
"Memory").  The kernel's own uevents wake a wait instead of udev's monitor.
hvctl, an admin's tool, uses pyudev.
"""

from __future__ import annotations

import errno
import os
import socket

from ..log import get
from ..value import Value
from ..vmbus import FCOPY_CLASS_ID, FCOPY_INSTANCE_ID

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Protocol

log = get(__name__)


class UioDevice(Value):
    """A file-copy VMBus device bound to uio_hv_generic.

    vmbus_dir: the VMBus device's sysfs directory; name: "uioN"; node: its
    device node (or the simulator's socket); map_size: the size of map0
    (txrx_rings), twice the ring size.
    """

    __slots__ = ("vmbus_dir", "name", "node", "map_size")

    def __init__(self, vmbus_dir: str, name: str, node: str, map_size: int) -> None:
        self.vmbus_dir = vmbus_dir
        self.name = name
        self.node = node
        self.map_size = map_size

    @property
    def ring_size(self) -> int:
        return self.map_size // 2


if TYPE_CHECKING:
    # For the type checker only: a Protocol defined at run time needs typing.

    class Discovery(Protocol):
        """Where the file-copy device is: /sys woken by uevents, or the simulator's tree."""

        sysfs_root: str

        def fcopy_devices(self) -> list[str]:
            """sysfs directories of the VMBus devices of the file-copy class."""

        def uio_device(self, vmbus_dir: str) -> UioDevice | None:
            """The uio device bound to a VMBus device, if any."""

        def wake_fd(self) -> int | None:
            """A descriptor readable when devices change, or None to rescan by timer."""

        def drain_events(self) -> None:
            """Consume what made wake_fd() readable."""

        def close(self) -> None:
            """No wake-ups needed for now (a channel is open): release what gives them."""


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


def driver_name(vmbus_dir: str) -> str | None:
    """The driver bound to a VMBus device (its `driver` link), None if unbound or gone."""
    try:
        # One readlink(): the link vanishes when the device is rescinded, and
        # os.path.realpath() (lstat, then readlink) raises if that happens between.
        return os.path.basename(os.readlink(os.path.join(vmbus_dir, "driver")))
    except OSError:
        return None


# Kernel uevents: the NETLINK_KOBJECT_UEVENT protocol and its one multicast
# group (include/uapi/linux/netlink.h; lib/kobject_uevent.c).  Group 1 is the
# kernel's own broadcast, sent after devtmpfs made the node; udevd's
# re-broadcast (group 2) is in libudev's private format and needs udevd.
NETLINK_KOBJECT_UEVENT = 15
KERNEL_UEVENT_GROUP = 1
UEVENT_BUFFER_SIZE = 8192  # a uevent is at most 2 KiB of environment plus its header


class KernelUevents:
    """A socket readable when the kernel adds, binds or removes any device.

    The daemon only looks again when woken, so the messages are not parsed:
    whatever changed, a scan of sysfs says what is there now.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            NETLINK_KOBJECT_UEVENT,
        )
        try:
            self._sock.bind((0, KERNEL_UEVENT_GROUP))
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self, limit: int = 1024) -> int:
        """Read the queued uevents, up to limit; how many (an overrun counts as one).

        The limit keeps a storm of uevents from holding the caller: what is
        left keeps the socket readable for the next wait.
        """
        count = 0
        while count < limit:
            try:
                self._sock.recv(UEVENT_BUFFER_SIZE)
            except BlockingIOError:
                return count
            except OSError as e:
                # ENOBUFS: the queue overflowed and events were lost, which
                # the scan that follows makes up for.
                if e.errno != errno.ENOBUFS:
                    raise
            count += 1
        return count

    def close(self) -> None:
        self._sock.close()


class SysfsDiscovery:
    """Scan a sysfs tree (/sys or the simulator's) for the file-copy device.

    uevents: opens what wakes a wait when devices change (KernelUevents);
    without it the daemon looks again by timer.  Each scan opens it first,
    so no change after a scan goes unnoticed; close() shuts it while a
    channel is served, when the kernel would only queue uevents nobody reads.
    """

    def __init__(
        self,
        sysfs_root: str = "/sys",
        dev_root: str = "/dev",
        uevents: Callable[[], KernelUevents] | None = None,
    ) -> None:
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self._open_uevents = uevents
        self.uevents: KernelUevents | None = None

    def _listen(self) -> None:
        if self.uevents is None and self._open_uevents is not None:
            try:
                self.uevents = self._open_uevents()
            except OSError as e:
                # No AF_NETLINK (a sandbox): the timer rescan finds the same devices.
                log.debug("no kernel uevents (%s); rescanning by timer", e)
                self._open_uevents = None

    def close(self) -> None:
        """Stop listening to uevents until the next scan."""
        if self.uevents is not None:
            self.uevents.close()
            self.uevents = None

    def fcopy_devices(self) -> list[str]:
        self._listen()
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
        return None if self.uevents is None else self.uevents.fileno()

    def drain_events(self) -> None:
        if self.uevents is None:
            return
        try:
            self.uevents.drain()
        except OSError as e:
            # Not expected from a netlink socket; the timer still rescans.
            log.warning("kernel uevents unreadable (%s); rescanning by timer", e)
            self.close()
            self._open_uevents = None


def make_discovery(sysfs_root: str = "/sys", dev_root: str = "/dev") -> Discovery:
    """The scan of sysfs_root, woken by the kernel's uevents on the real /sys."""
    return SysfsDiscovery(sysfs_root, dev_root, KernelUevents if sysfs_root == "/sys" else None)
