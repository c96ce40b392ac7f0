# SPDX-License-Identifier: GPL-2.0-only
"""Test rigs for the file-copy daemon: a simulated /dev/vmbus/hv_fcopy with a real
daemon process on it (ours, or Debian bookworm's reference C daemon), and
VMBus devices in a sysfs-like tree for discovery and binding.

Mirrors nothing upstream: test harness shared by tests/fcopy/ and
benchmarks/bench_fcopy.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hvdaemons.vmbus import FCOPY_CLASS_ID
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.fcopy import FcopyHost
from hvsim.launch import NEUTRAL_CWD
from tests.reference import refdaemons
from tests.support.process import uevent_sockets

# The daemon's temporary file name, ".<name>.hvfcopy-<pid>-<8 hex>" (hvdaemons/fcopy/writer.py),
# written independently of its parser: the tests' oracle.
TEMP_NAME = re.compile(rb"\.(.*)\.hvfcopy-([0-9]{1,10})-[0-9a-f]{8}", re.DOTALL)

if TYPE_CHECKING:
    from hvdaemons.fcopy.discovery import Discovery, UioDevice


def daemon_argv() -> list[str]:
    """Our hv_fcopy_daemon, the one under test (the installed package, see hvsim.launch)."""
    return launch.daemon_argv("hv_fcopy_daemon")


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Run children with this in NEUTRAL_CWD: they import the package under test."""
    return launch.child_env({"HVSHIM_NO_SYSLOG": "1", **(extra or {})})


class LegacyRig:
    """ChardevKernel("hv_fcopy") in directory dev, a daemon on it, and the host.

    reference=True runs bookworm's hv_fcopy_daemon through the LD_PRELOAD shim;
    otherwise our hv_fcopy_daemon with --device.  Both run in a private mount
    namespace when tmpfs mounts are asked for (e.g. "DIR:size=64k" for a
    full disk); `view(path)` then shows a path as the daemon sees it.  env
    adds to the daemon's environment (e.g. NOTIFY_SOCKET).
    """

    def __init__(
        self,
        dev: Path,
        *,
        reference: bool = False,
        timeout: float = 10.0,
        tmpfs: Sequence[str] = (),
        sandbox: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        dev.mkdir(parents=True, exist_ok=True)
        self.reference = reference
        self._kernel_open = True
        self.kernel = ChardevKernel(str(dev / "hv_fcopy"), "hv_fcopy", timeout=timeout)
        try:
            if reference:
                self.proc = refdaemons.spawn_reference(
                    "bookworm",
                    "hv_fcopy_daemon",
                    str(dev),
                    tmpfs=(*refdaemons.DEFAULT_TMPFS, *tmpfs),
                    env=daemon_env(env),
                )
            else:
                argv = [*daemon_argv(), "-n", "--device", self.kernel.path]
                if sandbox or (sandbox is None and tmpfs):
                    argv = refdaemons.sandbox_argv(argv, tmpfs=tmpfs)
                self.proc = subprocess.Popen(
                    argv,
                    cwd=NEUTRAL_CWD,
                    env=daemon_env(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            self.logs = refdaemons.LogReader(self.proc)
            if not self.kernel.wait_registered(30):
                raise RuntimeError("daemon did not register:\n" + "\n".join(self.logs.drain(1)))
        except BaseException:
            self.close()
            raise
        self.host = FcopyHost(self.kernel)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def view(self, path: str | Path) -> Path:
        """path as the daemon sees it (through its mount namespace)."""
        return Path(f"/proc/{self.proc.pid}/root{os.path.abspath(path)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            self.stop()
            if proc.stderr is not None:
                proc.stderr.close()
        self.close_kernel()

    def close_kernel(self) -> None:
        """The device goes away for good (service disabled on the host, module unloaded)."""
        if self._kernel_open:
            self._kernel_open = False
            self.kernel.close()

    def __enter__(self) -> LegacyRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vmbus_device(
    sysfs: Path, instance: str, class_id: str | None = FCOPY_CLASS_ID, driver: str | None = None
) -> Path:
    """A VMBus device as sysfs shows it: class_id and device_id ("{guid}"), a driver link."""
    dev = sysfs / "bus" / "vmbus" / "devices" / instance
    dev.mkdir(parents=True)
    if class_id is not None:
        (dev / "class_id").write_text("{" + class_id + "}\n")
    (dev / "device_id").write_text("{" + instance + "}\n")
    if driver is not None:
        drv = sysfs / "bus" / "vmbus" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (dev / "driver").symlink_to(drv)
    return dev


def find_uio_device(disc: Discovery) -> UioDevice | None:
    """The file-copy uio device if one is bound now, as the daemon looks for it."""
    for vmbus_dir in disc.fcopy_devices():
        dev = disc.uio_device(vmbus_dir)
        if dev is not None:
            return dev
    return None


def wait_for(predicate: object, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(step)
    return bool(callable(predicate) and predicate())


def wait_listening(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """Whether the file-copy daemon proc comes to hold its kernel-uevent socket, as it
    does while it waits for its device on a guest's /sys; False if it exits first."""
    wait_for(lambda: proc.poll() is not None or uevent_sockets(proc.pid) == 1, timeout)
    return proc.poll() is None and uevent_sockets(proc.pid) == 1


def tree(root: Path) -> dict[str, object]:
    """Everything below root: relative path -> file bytes, "dir", or ("link", target)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            p = Path(dirpath) / d
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
                dirnames.remove(d)
            else:
                out[rel] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes()
    return out
