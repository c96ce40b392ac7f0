# SPDX-License-Identifier: GPL-2.0-only
"""The daemons a soak runs: ours or Debian's reference C daemons, each on its simulated device.

Mirrors nothing upstream: test harness.  Every target starts the unmodified
executable the way the other tests do (ours from the installed package with
--device; the reference through the hvshim.so LD_PRELOAD shim in a private
mount namespace, see tests/reference/refdaemons.py), keeps its log drained
(a soak logs far more than a pipe holds), and can restart it.

`plant` names a leak injected into our daemon for the harness's own tests:
a sitecustomize.py on the daemon's PYTHONPATH (as tests/hvsim/test_demo.py
injects a start-up failure) wraps os.read, through which the char-device
daemons read every message: "fd" keeps a descriptor every 64th message (slow
enough that an idle machine's request rate stays far from RLIMIT_NOFILE in a
bounded run, where the daemon's own failures would hide the leak), "mem" 2 KiB
per message.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from hvsim import launch
from hvsim import uio as sim_uio
from hvsim.chardev import ChardevKernel
from hvsim.fsbox import FsBox
from hvsim.kvp import packaged_scripts_dir
from tests.reference import refdaemons

PLANTS = ("fd", "mem")

_SITECUSTOMIZE = """\
# Planted by tests/soak: a leak in the daemon under test, nowhere else.
import os
import sys

if sys.argv[:1] == ["-m"] and os.environ.get("HVSOAK_PLANT") in ("fd", "mem"):
    _kind = os.environ["HVSOAK_PLANT"]
    _kept = []
    _seen = [0]
    _read = os.read
    _size = 2048  # a name, not a literal: a constant product would be one shared object

    def read(fd, n):
        data = _read(fd, n)
        if n == 16384:  # hvdaemons.transport.READ_SIZE: one device message
            _seen[0] += 1
            if _kind == "mem":
                _kept.append(b"\\xa5" * _size)
            elif _seen[0] % 64 == 0:
                _kept.append(os.open("/dev/null", os.O_RDONLY))
        return data

    os.read = read
"""


def plant_env(work: Path, plant: str | None) -> dict[str, str]:
    """Environment additions that plant a leak in our daemon (nothing for None)."""
    if plant is None:
        return {}
    if plant not in PLANTS:
        raise ValueError(f"unknown plant {plant!r}")
    site = work / "plant"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.pathsep.join([str(site), *launch.package_dirs()])
    return {"PYTHONPATH": path, "HVSOAK_PLANT": plant}


class LogTail:
    """Drains a daemon's stderr in a thread; keeps the last lines and waits for new ones."""

    def __init__(self, proc: subprocess.Popen[bytes], keep: int = 400) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.count = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self.count += 1
                self._cond.notify_all()

    def mark(self) -> int:
        """The number of lines seen so far, for wait_for(after=)."""
        with self._cond:
            return self.count

    def wait_for(self, needle: str, after: int, timeout: float = 20.0) -> str | None:
        """The first line after line number `after` containing needle, or None at the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                new = min(self.count - after, len(self.lines))
                for line in list(self.lines)[len(self.lines) - new :]:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return None
                self._cond.wait(left)

    def tail(self, n: int) -> list[str]:
        with self._cond:
            return list(self.lines)[-n:]


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def require_reference() -> None:
    """Debian's reference daemons and the shim: a prerequisite, so a loud failure, never a skip."""
    try:
        refdaemons.ensure_reference()
        refdaemons.build_shim()
    except (RuntimeError, OSError) as e:
        pytest.fail(f"the reference daemons are a prerequisite of this test: {e}")


class _Daemon:
    """One daemon process, its drained log, and how a soak looks at it."""

    label: str
    proc: subprocess.Popen[bytes] | None = None
    log: LogTail | None = None

    def _spawn(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.log = LogTail(proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> list[str]:
        return self.log.tail(n) if self.log else []

    def _stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


class _OnChardev(_Daemon):
    """A daemon on a simulated hv_utils device (ChardevKernel)."""

    kernel: ChardevKernel

    def start(self) -> None:
        raise NotImplementedError

    def _registered(self) -> None:
        if not self.kernel.wait_registered(30):
            raise AssertionError(f"{self.label} did not register: {self.log_tail(20)}")

    def restart(self) -> None:
        self._stop()
        # The kernel's release() resets the transport at once; the simulator
        # only notices at the next request.
        self.kernel.hangup()
        self.start()

    def close(self) -> None:
        self._stop()
        self.kernel.close()


class ChardevTarget(_OnChardev):
    """A daemon on a ChardevKernel: hv_kvp or hv_fcopy, ours or a reference release."""

    def __init__(
        self,
        work: Path,
        service: str,  # "kvp" | "fcopy"
        kind: str = "ours",  # "ours" | "bookworm" | "trixie"
        *,
        plant: str | None = None,
        timeout: float = 10.0,
        state_tmpfs: str | None = None,
        scripts: Path | None = None,
    ) -> None:
        """state_tmpfs: the pool directory is a fresh tmpfs with these options (e.g.
        "size=48k": a full disk).  scripts: the KVP helper scripts directory (the
        reference finds it bound at its built-in /usr/libexec/hypervkvpd)."""
        self.work = work
        self.service = service
        self.kind = kind
        self.label = f"{service}/{kind}" + (f"+{plant}-leak" if plant else "")
        self.sim_dir = work / "sim"
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        self.state = work / "state"
        self.state.mkdir(exist_ok=True)
        self.extra_env = plant_env(work, plant)
        self.state_tmpfs = state_tmpfs
        self.scripts = scripts
        self.kernel = ChardevKernel(
            str(self.sim_dir / f"hv_{service}"), f"hv_{service}", timeout=timeout
        )
        self.start()

    def _argv_env(self) -> tuple[list[str], Mapping[str, str]]:
        name = f"hv_{self.service}_daemon"
        if self.kind == "ours":
            argv = [*launch.daemon_argv(name), "-n", "--device", self.kernel.path]
            if self.service == "kvp":
                scripts = str(self.scripts) if self.scripts else packaged_scripts_dir()
                assert scripts, "the installed package has no KVP helper scripts"
                argv += ["--state-dir", str(self.state), "--scripts-dir", scripts]
            if self.state_tmpfs is not None:
                argv = refdaemons.sandbox_argv(argv, tmpfs=[f"{self.state}:{self.state_tmpfs}"])
            return argv, launch.child_env({**self.extra_env})
        binds: dict[str, str] = {}
        tmpfs: list[str] = list(refdaemons.DEFAULT_TMPFS)
        if self.service == "kvp":
            if self.state_tmpfs is None:
                tmpfs, binds = [], {str(self.state): "/var/lib/hyperv"}
            else:
                tmpfs = [f"/var/lib/hyperv:{self.state_tmpfs}"]
            if self.scripts is not None:
                tmpfs.append("/usr/libexec")
                binds[str(self.scripts)] = "/usr/libexec/hypervkvpd"
        argv = refdaemons.sandbox_argv(
            [str(refdaemons.ref_daemon(self.kind, name)), "-n"], tmpfs=tmpfs, binds=binds
        )
        env = launch.child_env(
            {
                "LD_PRELOAD": str(refdaemons.build_shim()),
                "HVSHIM_DIR": str(self.sim_dir),
                "HVSHIM_NO_SYSLOG": "1",
            }
        )
        return argv, env

    def start(self) -> None:
        argv, env = self._argv_env()
        proc = subprocess.Popen(
            argv,
            cwd=launch.NEUTRAL_CWD,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._spawn(proc)
        self._registered()

    def pool_dir(self) -> Path:
        """The KVP pool directory as the daemon sees it (through its mount namespace)."""
        inside = str(self.state) if self.kind == "ours" else "/var/lib/hyperv"
        return Path(f"/proc/{self.pid}/root{inside}")

    def reconnect(self, timeout: float = 30.0) -> bool:
        """The device goes away under the daemon and comes back: it must register again."""
        self.kernel.hangup()
        return self.kernel.wait_registered(timeout)


class VssTarget(_OnChardev):
    """hv_vss_daemon, ours or a reference release, in an FsBox (see hvsim/fsbox.py).

    Every freeze happens inside the box's private mount namespace, whose
    mount table holds only loop-mounted test images; the box verifies that
    before every start, and its cleanup thaws and reports anything left frozen.
    """

    def __init__(self, box: FsBox, kind: str = "ours", *, extra: Sequence[str] = ()) -> None:
        self.box = box
        self.kind = kind
        self.label = f"vss/{kind}"
        self.dir = os.path.join(box.sim_dir, f"soak-{kind}")
        os.makedirs(self.dir, exist_ok=True)
        self.kernel = ChardevKernel(os.path.join(self.dir, "hv_vss"), "hv_vss")
        self.extra = list(extra)
        self.start()

    def start(self) -> None:
        self.box.verify()
        if self.kind == "ours":
            argv = [*launch.daemon_argv("hv_vss_daemon"), "-n", "--device", self.kernel.path]
            env: dict[str, str] = {}
        else:
            argv = [str(refdaemons.ref_daemon(self.kind, "hv_vss_daemon")), "-n"]
            env = {
                "LD_PRELOAD": str(refdaemons.build_shim()),
                "HVSHIM_DIR": self.dir,
                "HVSHIM_NO_SYSLOG": "1",
            }
        proc = self.box.popen(
            [*argv, *self.extra],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._spawn(proc)
        self._registered()


class UioTarget(_Daemon):
    """Our hv_fcopy_daemon on the simulated uio_hv_generic device (no reference has one)."""

    label = "fcopy-uio/ours"

    def __init__(self, work: Path, variant: str = sim_uio.DEFAULT_VARIANT) -> None:
        self.work = work
        self.root = str(work / "sim")
        self.sim = sim_uio.UioSim(self.root, variant)
        self.sim.offer()
        self.host = sim_uio.UioHost(self.sim, timeout=20)
        self.start()

    def start(self) -> None:
        proc: subprocess.Popen[bytes] = launch.popen(
            sim_uio.daemon_command(self.root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._spawn(proc)
        self.connect()

    def connect(self) -> None:
        """Wait for the daemon to bind and open the device, then negotiate as the host does."""
        sim_uio._wait_bound(self.sim, 20, self.proc)
        self.host.connect(20)
        status, _ = self.host.negotiate()
        if status != 0:
            raise AssertionError(f"negotiation failed: 0x{status:08x}: {self.log_tail(20)}")

    def restart(self) -> None:
        self._stop()
        self.sim.wait_closed(10)
        self.start()

    def close(self) -> None:
        self._stop()
        self.sim.close()
