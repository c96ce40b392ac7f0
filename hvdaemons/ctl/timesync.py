# SPDX-License-Identifier: GPL-2.0-only
"""hvctl timesync: the Hyper-V PTP clock, its offset, and who uses it.

hv_utils (drivers/hv/hv_util.c, hv_ptp_gettime()) registers a PTP clock
named "hyperv" that follows the host's time samples; udev names it
/dev/ptp_hyperv.  Its offset from the system clock is read here with
clock_gettime() on the device's dynamic clock id (FD_TO_CLOCKID), bracketed
by two CLOCK_REALTIME reads.  chrony can use it (`refclock PHC`);
systemd-timesyncd speaks only NTP and never reads a PTP clock.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from .daemons import ProcessTable
from .devices import DeviceView, UdevUnavailable, read_udev

CHRONY_CONFS = ("/etc/chrony/chrony.conf", "/etc/chrony.conf")
PTP_LINK = "/dev/ptp_hyperv"


def fd_to_clockid(fd: int) -> int:
    """FD_TO_CLOCKID() of linux/posix-timers.h: a dynamic POSIX clock."""
    return ((~fd) << 3) | 3


@dataclass
class Offset:
    seconds: float | None = None
    error: str = ""


def measure_offset(node: str, samples: int = 5) -> Offset:
    """PTP clock minus system clock, from the tightest of a few bracketed reads."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        return Offset(error=f"cannot open {node}: permission denied (reading it needs root)")
    except OSError as e:
        return Offset(error=f"cannot open {node}: {e.strerror}")
    try:
        clk = fd_to_clockid(fd)
        best: tuple[int, int] | None = None
        for _ in range(samples):
            t1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
            p = time.clock_gettime_ns(clk)
            t2 = time.clock_gettime_ns(time.CLOCK_REALTIME)
            if best is None or t2 - t1 < best[0]:
                best = (t2 - t1, p - (t1 + t2) // 2)
    except OSError as e:
        if e.errno == errno.ESTALE:
            return Offset(error="stale: the host has sent no time sample for 10 minutes (ESTALE)")
        return Offset(error=f"cannot read the clock: {e.strerror}")
    finally:
        os.close(fd)
    assert best is not None
    return Offset(best[1] / 1e9)


@dataclass
class Consumer:
    name: str
    running: bool
    uses_ptp: bool | None  # None: cannot tell
    detail: str


@dataclass
class TimesyncReport:
    ptp_present: bool
    ptp_device: str | None = None
    ptp_links: list[str] = field(default_factory=list)
    offset_seconds: float | None = None
    offset_error: str = ""
    consumers: list[Consumer] = field(default_factory=list)
    offered: bool | None = None  # the time sync VMBus device


def _refclock_lines(confs: list[str]) -> list[tuple[str, str]]:
    """(file, line) of every `refclock PHC` directive, following include/confdir/sourcedir."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    pending = list(confs)
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for raw in lines:
            line = raw.split("#", 1)[0].split("!", 1)[0].strip()
            words = line.split()
            if not words:
                continue
            d = words[0].lower()
            if d == "refclock" and len(words) >= 3 and words[1].upper() == "PHC":
                out.append((path, line))
            elif d == "include" and len(words) >= 2:
                pending.extend(sorted(glob.glob(words[1])))
            elif d in ("confdir", "sourcedir") and len(words) >= 2:
                suffix = ".conf" if d == "confdir" else ".sources"
                for dirname in words[1:]:
                    pending.extend(sorted(glob.glob(os.path.join(dirname, "*" + suffix))))
    return out


def _names_ptp(line: str, ptp_node: str | None) -> bool:
    dev = line.split()[2].split(":", 1)[0]
    if dev == PTP_LINK:
        return True
    if ptp_node is None:
        return False
    try:
        return os.path.realpath(dev) == os.path.realpath(ptp_node)
    except OSError:
        return False


class Timesync:
    def __init__(
        self,
        processes: ProcessTable | None = None,
        chrony_confs: tuple[str, ...] = CHRONY_CONFS,
        chronyc: str | None = "chronyc",
    ) -> None:
        self.processes = processes if processes is not None else ProcessTable()
        self.chrony_confs = chrony_confs
        self.chronyc = chronyc

    def report(self, view: DeviceView) -> TimesyncReport:
        from .services import by_key

        clock = view.hyperv_ptp
        r = TimesyncReport(ptp_present=clock is not None)
        r.offered = bool(view.of_class(by_key("timesync").class_id or "")) if view.vmbus else None
        node = None
        if clock is not None:
            node = clock.node or f"/dev/{clock.sys_name}"
            r.ptp_device = node
            r.ptp_links = list(clock.links)
            off = measure_offset(node)
            r.offset_seconds, r.offset_error = off.seconds, off.error
        running = self.processes.pids()
        r.consumers.append(self._chrony(node, bool(running.get("chronyd"))))
        timesyncd = bool(running.get("systemd-timesyn"))
        r.consumers.append(
            Consumer(
                "systemd-timesyncd",
                timesyncd,
                False,
                "speaks only NTP: it cannot use a PTP clock"
                + ("" if timesyncd else " (not running)"),
            )
        )
        return r

    def _chrony(self, node: str | None, running: bool) -> Consumer:
        lines = [
            (f, ln) for f, ln in _refclock_lines(list(self.chrony_confs)) if _names_ptp(ln, node)
        ]
        if not lines:
            detail = "no `refclock PHC` line for the Hyper-V clock in its configuration"
            return Consumer("chrony", running, False, detail + ("" if running else "; not running"))
        where = ", ".join(sorted({f for f, _ in lines}))
        if not running:
            return Consumer(
                "chrony", False, False, f"configured ({where}) but chronyd is not running"
            )
        detail = f"refclock PHC configured in {where}"
        state = self._chronyc_state()
        if state:
            detail += f"; chronyc: {state}"
        return Consumer("chrony", True, True, detail)

    def _chronyc_state(self) -> str:
        exe = shutil.which(self.chronyc) if self.chronyc else None
        if exe is None:
            return ""
        try:
            cp = subprocess.run(
                [exe, "-n", "-c", "sources"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        states = {
            "*": "selected",
            "+": "combined",
            "-": "not combined",
            "?": "unusable",
            "x": "falseticker",
            "~": "too variable",
        }
        out = []
        for line in cp.stdout.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0] == "#":
                out.append(f"{f[2]} {states.get(f[1], f[1])}")
        return ", ".join(out)


def render_text(r: TimesyncReport) -> str:
    out = []
    if r.offered is False:
        out.append("Time synchronization: not offered by the host")
    if not r.ptp_present:
        out.append('Hyper-V PTP clock: absent (no ptp device with clock_name "hyperv")')
    else:
        links = f" ({', '.join(r.ptp_links)})" if r.ptp_links else ""
        out.append(f"Hyper-V PTP clock: {r.ptp_device}{links}")
        if r.offset_seconds is not None:
            out.append(f"offset from the system clock: {r.offset_seconds * 1e3:+.3f} ms")
        else:
            out.append(f"offset from the system clock: unknown: {r.offset_error}")
    for c in r.consumers:
        uses = {True: "uses it", False: "does not use it", None: "unknown"}[c.uses_ptp]
        out.append(f"{c.name}: {'running' if c.running else 'not running'}, {uses}: {c.detail}")
    return "\n".join(out)


def cmd_timesync(
    args: argparse.Namespace, view: DeviceView | None = None, ts: Timesync | None = None
) -> int:
    if view is None:
        try:
            view = read_udev()
        except UdevUnavailable as e:
            print(f"hvctl: {e}", file=sys.stderr)
            return 1
    r = (ts or Timesync()).report(view)
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    else:
        print(render_text(r))
    if not view.vmbus:
        print("hvctl: not a Hyper-V guest", file=sys.stderr)
        return 2
    return 0 if r.ptp_present and r.offset_seconds is not None else 1
