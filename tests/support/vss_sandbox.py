# SPDX-License-Identifier: GPL-2.0-only
"""Test rig for the VSS daemons: a safe filesystem sandbox plus daemons on simulated devices.

Mirrors nothing upstream: harness shared by tests/vss/ and
benchmarks/bench_vss.py.  Every freeze happens inside an FsBox (see
hvsim/fsbox.py): a private mount namespace whose mount table holds
only loop-mounted test images, verified before the box is handed out.
Frozen state is probed with a second FIFREEZE, never by writing; the
sandbox's cleanup thaws from outside the daemon and the test fails if
anything was left frozen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Callable

import pytest

from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.fsbox import FsBox, FsSpec
from hvsim.vss import VssHost
from tests.reference import refdaemons

REFERENCES = ("bookworm", "trixie")

# Independent filesystems of both types, a bind mount (same superblock) and
# a filesystem on a loop file that lives on another test filesystem.
STACKED = (
    FsSpec("a", "ext4"),
    FsSpec("b", "xfs"),
    FsSpec("outer", "ext4", size_mb=48),
    FsSpec("inner", "ext4", inside="outer"),
    FsSpec("abind", bind_of="a"),
)


def need_root() -> None:
    # A missing prerequisite is a failure, never a skip counted as a pass.
    if os.geteuid() != 0:
        pytest.fail("needs root: mount namespaces, loop devices, FIFREEZE")


@contextlib.contextmanager
def sandbox(specs: Sequence[FsSpec], *, sysfs: bool = True) -> Iterator[FsBox]:
    """An FsBox for the test; fails the test if cleanup had to thaw anything."""
    need_root()
    box = FsBox(specs, sysfs=sysfs).start()
    try:
        yield box
    finally:
        leaked = box.close()
    if leaked:
        pytest.fail(f"filesystems left frozen (thawed by the sandbox cleanup): {leaked}")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Daemon:
    """One VSS daemon in a box, on its own simulated /dev/vmbus/hv_vss.

    kind "ours" runs our hv_vss_daemon with --device; "bookworm"/"trixie" run
    Debian's unmodified C daemon through the LD_PRELOAD shim.
    """

    def __init__(
        self,
        box: FsBox,
        kind: str = "ours",
        *,
        extra: Sequence[str] = (),
        tag: str = "",
        register: bool = True,
    ) -> None:
        self.box = box
        self.kind = kind
        self.dir = os.path.join(box.sim_dir, tag or kind)
        os.makedirs(self.dir, exist_ok=True)
        self.kernel = ChardevKernel(os.path.join(self.dir, "hv_vss"), "hv_vss")
        self.host = VssHost(self.kernel)
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: refdaemons.LogReader | None = None
        self.start(register=register)

    def start(self, *, register: bool = True) -> None:
        self.box.verify()  # nothing but our test filesystems, before any daemon runs
        if self.kind == "ours":
            argv = [*launch.daemon_argv("hv_vss_daemon"), "-n", "--device", self.kernel.path, *self.extra]
            env = {}
        else:
            argv = [str(refdaemons.ref_daemon(self.kind, "hv_vss_daemon")), "-n", *self.extra]
            env = {
                "LD_PRELOAD": str(refdaemons.build_shim()),
                "HVSHIM_DIR": self.dir,
                "HVSHIM_NO_SYSLOG": "1",
            }
        self.proc = self.box.popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.logs = refdaemons.LogReader(self.proc)
        if register and not self.kernel.wait_registered(30):
            raise AssertionError(
                f"{self.kind} daemon did not register:\n" + "\n".join(self.log_lines())
            )

    def log_lines(self, timeout: float = 0.0) -> list[str]:
        assert self.logs is not None
        if timeout:
            self.logs._fill(timeout)
        return self.logs.lines

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the daemon and wait for it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        assert self.logs is not None
        self.logs.drain(2)
        return rc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.kernel.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalized(lines: Sequence[str]) -> list[str]:
    """Log lines without the pid, for comparing daemons."""
    out = []
    for line in lines:
        if "pid is:" in line:
            line = line.split("pid is:")[0] + "pid is:N"
        out.append(line)
    return out
