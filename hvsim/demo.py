# SPDX-License-Identifier: GPL-2.0-only
"""`hvsim demo`: run the parts, then one summary line per part.

Simulator infrastructure, mirrors nothing upstream.  Each part (KVP, VSS,
file copy over the char device, over the uio ring) starts the real daemon
against the simulator, narrates what the host sees and records its checks
in a Part.  Whatever happens in a part, the run goes on with the next one
and ends with a summary: "ok", or "FAILED: <reason>" and the daemon's last
log lines.  An unexpected exception is a failed part too; its traceback goes
to a log file (or to the terminal with --debug), never bare to a newcomer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from hvdaemons.errors import HvError

from .chardev import ChardevKernel

LOG_TAIL = 5


class PartFailed(HvError):
    """A part cannot go on; the message is its one-line reason."""


@dataclass
class Part:
    """One part of the demo: its checks, and the daemon's log once it has one."""

    title: str
    failures: list[str] = field(default_factory=list)
    daemon_log: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        """Print and record one check of what the host saw."""
        print(f"    {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            self.failures.append(what)
        return ok

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> list[str]:
        """The summary line, and for a failure the daemon's last log lines."""
        if self.ok:
            return [f"  {self.title:<32} ok"]
        reason = self.failures[0].splitlines()[0] if self.failures[0] else "failed"
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        lines = [f"  {self.title:<32} FAILED: {reason}{more}"]
        tail = [ln for ln in self.daemon_log if ln.strip()][-LOG_TAIL:]
        if tail:
            lines.append("      the daemon's last log lines:")
            lines += [f"        {ln}" for ln in tail]
        else:
            lines.append("      (no log from the daemon)")
        return lines


Step = Callable[[Part], None]


def wait_registered(kernel: ChardevKernel, proc: subprocess.Popen[Any], timeout: float) -> None:
    """Until the daemon has registered; PartFailed at once if it exits first."""
    deadline = time.monotonic() + timeout
    while not kernel.wait_registered(0.1):
        if proc.poll() is not None:
            raise PartFailed(f"the daemon exited with status {proc.returncode} before registering")
        if time.monotonic() > deadline:
            raise PartFailed(
                f"the daemon did not register with the simulated kernel in {timeout:.0f} s"
            )


def run(steps: Sequence[tuple[str, Step]], *, debug: bool = False) -> int:
    """Run every part; print the summary; 0 only if every part worked."""
    parts: list[Part] = []
    log_path: str | None = None
    for title, step in steps:
        part = Part(title)
        parts.append(part)
        try:
            step(part)
        except PartFailed as e:
            print(f"  {e}")
            part.failures.insert(0, str(e))
        except Exception as e:
            text = traceback.format_exc()
            if debug:
                sys.stdout.flush()
                sys.stderr.write(text)
                where = "traceback above"
            else:
                log_path = log_path or _traceback_log()
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(f"== {title}\n{text}\n")
                where = f"traceback in {log_path}"
            first = str(e).splitlines()[0] if str(e) else ""
            print(f"  unexpected {type(e).__name__}: {first} ({where})")
            part.failures.insert(0, f"unexpected {type(e).__name__}: {first} ({where})")
        print()
    print("== summary")
    for part in parts:
        for line in part.summary():
            print(line)
    sys.stdout.flush()
    return 0 if all(p.ok for p in parts) else 1


def _traceback_log() -> str:
    fd, path = tempfile.mkstemp(prefix="hvsim-demo-", suffix=".log")
    os.close(fd)
    return path
