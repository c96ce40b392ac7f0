# SPDX-License-Identifier: GPL-2.0-only
"""Whether the integration daemons run: systemd's unit state, else the process table.

Under systemd (sd_booted(3): /run/systemd/system exists) one `systemctl
show` gives each unit's state and its STATUS= line; otherwise, or for a unit
systemd does not know, /proc/PID/comm is matched against the upstream
program names.  Both sources are objects with one method, so callers (and
tests) choose them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .services import PROCESS_NAMES

_PROPS = ("Id", "LoadState", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")


@dataclass(frozen=True)
class DaemonState:
    running: bool
    how: str  # "systemd" or "process"
    state: str  # "active (running)", "failed (watchdog)", "not running", "running (pid 42)"
    status: str = ""  # the unit's STATUS= line
    pids: tuple[int, ...] = ()


class DaemonSource(Protocol):
    def states(self, daemons: Sequence[tuple[str, str]]) -> dict[str, DaemonState]:
        """State of each (program, unit) pair, keyed by program name."""


class ProcessTable:
    """Daemons by process name in a /proc tree."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc

    def pids(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        try:
            names = os.listdir(self.proc)
        except OSError:
            return found
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(self.proc, name, "comm"), "rb") as f:
                    comm = f.read().rstrip(b"\n").decode("utf-8", "replace")
            except OSError:
                continue  # exited meanwhile, or hidden (hidepid)
            found.setdefault(comm, []).append(int(name))
        return found

    def states(self, daemons: Sequence[tuple[str, str]]) -> dict[str, DaemonState]:
        table = self.pids()
        out = {}
        for program, _unit in daemons:
            pids = sorted(
                p for n in PROCESS_NAMES.get(program, (program,)) for p in table.get(n, [])
            )
            if pids:
                shown = ", ".join(str(p) for p in pids)
                out[program] = DaemonState(
                    True, "process", f"running (pid {shown})", pids=tuple(pids)
                )
            else:
                out[program] = DaemonState(False, "process", "not running")
        return out


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show` output: one block of KEY=VALUE lines per unit, blank-line separated."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            cur[key] = value
    if cur:
        blocks.append(cur)
    return blocks


class Systemd:
    """Unit state from systemd; the process table for units it does not know."""

    def __init__(self, systemctl: str = "systemctl", fallback: DaemonSource | None = None) -> None:
        self.systemctl = systemctl
        self.fallback = fallback if fallback is not None else ProcessTable()

    def show(self, units: Sequence[str]) -> list[dict[str, str]]:
        cp = subprocess.run(
            [self.systemctl, "show", "--no-pager", "-p", ",".join(_PROPS), "--", *units],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if cp.returncode != 0 and not cp.stdout:
            raise OSError(f"systemctl show failed: {cp.stderr.strip() or cp.returncode}")
        return parse_show(cp.stdout)

    def states(self, daemons: Sequence[tuple[str, str]]) -> dict[str, DaemonState]:
        try:
            blocks = self.show([u for _, u in daemons])
        except (OSError, subprocess.SubprocessError):
            return self.fallback.states(daemons)
        if len(blocks) != len(daemons):
            return self.fallback.states(daemons)
        out: dict[str, DaemonState] = {}
        unknown = []
        # One block per unit asked for, in order (Id= is the real name if ours is an alias).
        for (program, unit), b in zip(daemons, blocks):
            if b.get("LoadState") in ("not-found", "masked", ""):
                unknown.append((program, unit))
                continue
            active, sub = b.get("ActiveState", "?"), b.get("SubState", "?")
            pid = int(b.get("MainPID", "0") or 0)
            state = f"{unit}: {active} ({sub})"
            if b.get("NRestarts", "0") not in ("", "0"):
                state += f", restarted {b['NRestarts']} times"
            out[program] = DaemonState(
                active == "active" and sub == "running",
                "systemd",
                state,
                b.get("StatusText", ""),
                (pid,) if pid else (),
            )
        if unknown:
            out.update(self.fallback.states(unknown))
        return out


def systemd_booted(run_dir: str = "/run/systemd/system") -> bool:
    """sd_booted(3)."""
    return os.path.isdir(run_dir)


def default_source() -> DaemonSource:
    return Systemd() if systemd_booted() else ProcessTable()
