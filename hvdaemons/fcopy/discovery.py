# SPDX-License-Identifier: GPL-2.0-only
"""Where the file-copy VMBus device is, which driver owns it, and its uio node.

Replaces the device lookup of tools/hv/hv_fcopy_uio_daemon.c (the first entry
of /sys/bus/vmbus/devices/eb765408-.../uio) without its defects: the device
is found by its class GUID, through pyudev or a scan of a sysfs tree (the
simulator's, or /sys without libudev), and the ring size comes from map0's
size.  Nothing here binds, opens or waits.
"""

from __future__ import annotations

import os

from ..log import get
from ..value import Value
from ..vmbus import FCOPY_CLASS_ID, FCOPY_INSTANCE_ID

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Protocol

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


def driver_name(vmbus_dir: str) -> str | None:
    """The driver bound to a VMBus device (its `driver` link), None if unbound or gone."""
    try:
        # One readlink(): the link vanishes when the device is rescinded, and
        # os.path.realpath() (lstat, then readlink) raises if that happens between.
        return os.path.basename(os.readlink(os.path.join(vmbus_dir, "driver")))
    except OSError:
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
