# SPDX-License-Identifier: GPL-2.0-only
"""What udev knows about the Hyper-V devices of this guest (through pyudev).

Subsystems: vmbus (one device per channel the host offers: class_id,
device_id, driver link), uio (uio_hv_generic's uioN below a VMBus device),
misc (the hv_utils transport nodes vmbus!hv_kvp, vmbus!hv_vss,
vmbus!hv_fcopy) and ptp (the clock whose clock_name is "hyperv").  Paths
come from udev, never from a hard-coded /sys layout, so the same code reads a
recorded device tree under umockdev.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import HvError


class UdevUnavailable(HvError):
    """libudev (or pyudev) cannot be used."""


@dataclass(frozen=True)
class VmbusDevice:
    sys_name: str
    class_id: str  # lower case, no braces
    instance: str  # device_id, lower case, no braces
    driver: str | None
    uio: tuple[str, ...] = ()  # uioN children (uio_hv_generic)
    uio_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PtpClock:
    sys_name: str  # ptpN
    clock_name: str
    node: str | None
    links: tuple[str, ...] = ()  # udev symlinks, e.g. /dev/ptp_hyperv


@dataclass(frozen=True)
class DeviceView:
    vmbus: tuple[VmbusDevice, ...]
    misc: dict[str, str | None] = field(default_factory=dict)  # vmbus/hv_* -> node
    ptp: tuple[PtpClock, ...] = ()
    sys_path: str = "/sys"

    def of_class(self, class_id: str) -> list[VmbusDevice]:
        return [d for d in self.vmbus if d.class_id == class_id]

    @property
    def hyperv_ptp(self) -> PtpClock | None:
        return next((c for c in self.ptp if c.clock_name == "hyperv"), None)


def guid(text: object) -> str:
    """A GUID as sysfs prints it ("{...}\\n"), normalised: lower case, no braces."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return str(text or "").strip().strip("{}").lower()


def _attr(dev: Any, name: str) -> str:
    try:
        value = dev.attributes.get(name)
    except (OSError, KeyError, UnicodeDecodeError):
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


def read_udev() -> DeviceView:
    """The current view of the udev database; UdevUnavailable if it cannot be read."""
    try:
        import pyudev

        ctx = pyudev.Context()
    except Exception as e:  # ImportError, or libudev missing (OSError, ImportError)
        raise UdevUnavailable(f"cannot use libudev through pyudev: {e}") from e
    try:
        return _read(ctx)
    except OSError as e:
        raise UdevUnavailable(f"cannot read the udev database: {e}") from e


def _read(ctx: Any) -> DeviceView:
    children: dict[str, list[tuple[str, str | None]]] = {}
    for dev in ctx.list_devices(subsystem="uio"):
        parent = dev.parent
        if parent is not None:
            children.setdefault(str(parent.sys_path), []).append(
                (str(dev.sys_name), dev.device_node)
            )
    vmbus = []
    for dev in ctx.list_devices(subsystem="vmbus"):
        uio = sorted(children.get(str(dev.sys_path), []))
        vmbus.append(
            VmbusDevice(
                sys_name=str(dev.sys_name),
                class_id=guid(_attr(dev, "class_id")),
                instance=guid(_attr(dev, "device_id")) or str(dev.sys_name),
                driver=dev.driver or None,
                uio=tuple(n for n, _ in uio),
                uio_nodes=tuple(node or f"/dev/{n}" for n, node in uio),
            )
        )
    # libudev shows the sysfs name vmbus!hv_kvp as vmbus/hv_kvp (its devnode name).
    misc = {
        str(d.sys_name).replace("!", "/"): d.device_node
        for d in ctx.list_devices(subsystem="misc")
        if str(d.sys_name).replace("!", "/").startswith("vmbus/")
    }
    ptp = tuple(
        PtpClock(
            str(d.sys_name),
            _attr(d, "clock_name"),
            d.device_node,
            tuple(sorted(str(link) for link in d.device_links)),
        )
        for d in ctx.list_devices(subsystem="ptp")
    )
    vmbus.sort(key=lambda d: (d.class_id, d.instance))
    return DeviceView(tuple(vmbus), misc, ptp, str(ctx.sys_path))
