# SPDX-License-Identifier: GPL-2.0-only
"""hvctl status: one row per integration service, and whether it works.

A service works when the host offers its VMBus device, the right driver is
bound, the transport node exists and, where user space is needed, the
daemon runs.  Exit status: 0 when everything offered works, 1 when
something offered does not, 2 when this is not a Hyper-V guest (udev knows
no VMBus device).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..vmbus import HV_UTILS_DRIVER, UIO_DRIVER
from .daemons import DaemonSource, DaemonState
from .devices import DeviceView, VmbusDevice
from .services import SERVICES, Service

EXIT_OK, EXIT_NOT_WORKING, EXIT_NOT_GUEST = 0, 1, 2

NOT_GUEST = "not a Hyper-V guest: udev knows no VMBus device (or the hv_vmbus driver is not loaded)"


@dataclass
class Row:
    key: str
    name: str
    component: str
    impact: str
    offered: bool | None  # None: the service has no Linux side
    class_id: str | None = None
    instances: list[str] = field(default_factory=list)
    driver: str | None = None
    node: str | None = None
    daemon: DaemonState | None = None
    unit: str | None = None
    working: bool | None = None  # None: not offered, or nothing to check
    problems: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["daemon"] = None if self.daemon is None else asdict(self.daemon)
        return d


@dataclass
class Report:
    rows: list[Row]
    guest: bool
    sys_path: str

    @property
    def exit_status(self) -> int:
        if not self.guest:
            return EXIT_NOT_GUEST
        if any(r.offered and r.working is False for r in self.rows):
            return EXIT_NOT_WORKING
        return EXIT_OK


def _driver_problem(dev: VmbusDevice, want: tuple[str, ...]) -> str | None:
    if dev.driver in want:
        return None
    if dev.driver is None:
        return f"no driver is bound to VMBus device {dev.instance} (is {want[0]} loaded?)"
    return f"VMBus device {dev.instance} is bound to {dev.driver}, not {' or '.join(want)}"


def _row(service: Service, view: DeviceView, states: dict[str, DaemonState]) -> Row:
    row = Row(
        service.key,
        service.name,
        service.component,
        service.impact,
        offered=None,
        class_id=service.class_id,
        unit=service.unit,
        note=service.note,
    )
    if service.class_id is None:
        return row
    devs = view.of_class(service.class_id)
    row.offered = bool(devs)
    if service.daemon is not None:
        row.daemon = states.get(service.daemon)
    if not view.vmbus:
        row.note = "not a Hyper-V guest"
        return row
    if not devs:
        row.note = (
            "the host does not offer it (Guest Service Interface is off by default in the "
            "VM's settings)"
            if service.key == "fcopy"
            else "the host does not offer it (switched off in the VM's settings, or an older host)"
        )
        return row
    dev = devs[0]
    row.instances = [d.instance for d in devs]
    row.driver = dev.driver
    problems = row.problems
    if service.key == "fcopy" and dev.driver == UIO_DRIVER:
        row.component = "hv_fcopy_uio_daemon"
        if dev.uio:
            row.node = dev.uio_nodes[0]
        else:
            problems.append(f"{UIO_DRIVER} is bound but has no uio device")
    elif service.key == "fcopy" and dev.driver != HV_UTILS_DRIVER:
        why = _driver_problem(dev, (UIO_DRIVER, HV_UTILS_DRIVER))
        problems.append(
            f"{why}; kernels from 6.10 on need {UIO_DRIVER} bound to it "
            f"(udev rule 70-hv-fcopy.rules does that)"
        )
    else:
        why = _driver_problem(dev, (HV_UTILS_DRIVER,))
        if why:
            problems.append(why)
        elif service.misc is not None:
            row.node = view.misc.get(service.misc)
            if service.misc not in view.misc:
                problems.append(f"{HV_UTILS_DRIVER} has not created /dev/{service.misc}")
    if service.daemon is not None and (row.daemon is None or not row.daemon.running):
        problems.append(f"{row.component} is not running")
    row.working = not problems
    return row


def collect(view: DeviceView, daemons: DaemonSource) -> Report:
    needed = [(s.daemon, s.unit or "") for s in SERVICES if s.daemon is not None]
    states = daemons.states(needed) if view.vmbus else {}
    rows = [_row(s, view, states) for s in SERVICES]
    return Report(rows, bool(view.vmbus), view.sys_path)


def _yes_no(row: Row) -> str:
    if row.offered is None:
        return "-"
    if not row.offered:
        return "no"
    return f"yes (VMBus {', '.join(row.instances)})"


def verdict(row: Row) -> str:
    if row.offered is None:
        return "no Linux side"
    if not row.offered:
        return "not offered by the host" if row.note != "not a Hyper-V guest" else "-"
    if row.working:
        return "working"
    return "NOT WORKING: " + "; ".join(row.problems)


def render_text(report: Report) -> str:
    out = []
    width = max(len(r.name) for r in report.rows) + 2
    for r in report.rows:
        out.append(f"{r.name:<{width}}{verdict(r)}")
        out.append(f"  component  {r.component}")
        out.append(f"  offered    {_yes_no(r)}")
        if r.offered:
            driver = r.driver or "none"
            out.append(f"  driver     {driver}" + (f", {r.node}" if r.node else ""))
        if r.daemon is not None and r.offered is not False:
            out.append(f"  daemon     {r.daemon.state}")
            if r.daemon.status:
                out.append(f"  status     {r.daemon.status}")
        elif r.unit is not None and r.offered:
            out.append("  daemon     unknown")
        if r.note:
            out.append(f"  note       {r.note}")
        out.append(f"  when off   {r.impact}")
        out.append("")
    broken = [r.name for r in report.rows if r.offered and r.working is False]
    if not report.guest:
        out.append("Not a Hyper-V guest.")
    elif broken:
        n = len(broken)
        out.append(f"{n} offered service{'s' if n != 1 else ''} not working: {', '.join(broken)}.")
    else:
        out.append("Every service the host offers works.")
    return "\n".join(out)


def render_json(report: Report) -> str:
    rows = []
    for r in report.rows:
        d = r.to_json()
        d["verdict"] = verdict(r)
        rows.append(d)
    doc = {
        "hyperv_guest": report.guest,
        "sys_path": report.sys_path,
        "services": rows,
        "exit_status": report.exit_status,
    }
    return json.dumps(doc, indent=2)
