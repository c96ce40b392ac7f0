# SPDX-License-Identifier: GPL-2.0-only
"""sd_notify from the daemons: STATUS= lines and the watchdog, through a real
$NOTIFY_SOCKET datagram socket, with the real hv_kvp_daemon process serving the
simulated kernel."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.notify import StatusLine, watchdog_interval
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.kvp import KvpHost
from tests.reference.refdaemons import LogReader
from tests.support.kvp import PKG_ROOT, daemon_argv, daemon_env
from tests.support.notify import NotifySocket


class Daemon:
    def __init__(self, tmp: Path, watchdog_usec: int | None) -> None:
        self.notify = NotifySocket(tmp / "notify")
        self.state = tmp / "state"
        self.kernel = ChardevKernel(str(tmp / "hv_kvp"), "hv_kvp", timeout=30)
        env = daemon_env()
        env["NOTIFY_SOCKET"] = self.notify.path
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [*daemon_argv(), "-n", "--device", self.kernel.path, "--state-dir", str(self.state)],
            cwd=str(PKG_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.log = LogReader(self.proc)
        assert self.kernel.wait_registered(30), "\n".join(self.log.drain(1))
        self.host = KvpHost(self.kernel)

    def close(self) -> None:
        launch.stop(self.proc)
        self.kernel.close()
        self.notify.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, watchdog_usec=200_000)
    yield d
    d.close()


def test_status_lines_say_registration_and_the_last_request(daemon: Daemon) -> None:
    n = daemon.notify
    n.wait_for("^READY=1$")
    # Sent as the registration is taken, just before READY=1.
    assert [m for m in n.seen if m.startswith("STATUS=")] == [
        "STATUS=registered with protocol version 3.1"
    ]
    assert daemon.host.get(1, "Nothing").status == HvStatus.S_CONT
    line = n.wait_for("last request")
    assert re.fullmatch(
        r"STATUS=registered with protocol version 3\.1; "
        r"last request GET pool 1 at \d\d:\d\d:\d\d",
        line,
    ), line
    # A burst: at most one line a second, and the last request is the one shown.
    for i in range(30):
        daemon.host.set(1, f"k{i}", "v")
    assert daemon.host.enumerate(4, 0).status == HvStatus.S_CONT
    line = n.wait_for("ENUMERATE pool 4")
    status_lines = [m for m in n.seen if m.startswith("STATUS=")]
    assert len(status_lines) <= 5, status_lines  # 31 requests, nowhere near 31 lines
    assert line.endswith(re.search(r"at \d\d:\d\d:\d\d$", line).group(0))  # type: ignore[union-attr]


def test_watchdog_pings_come_from_the_loop_and_stop_while_it_is_stuck(daemon: Daemon) -> None:
    n = daemon.notify
    for _ in range(3):  # idle: the poll wakes up at WATCHDOG_USEC/2 to ping
        n.wait_for("^WATCHDOG=1$")
    # Hold the pool lock: the next SET blocks inside the request loop.
    daemon.state.mkdir(exist_ok=True)
    fd = os.open(daemon.state / ".kvp_pool_1", os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    replies: list[int] = []
    t = threading.Thread(target=lambda: replies.append(daemon.host.set(1, "K", "V").status))
    try:
        t.start()
        ino = os.fstat(fd).st_ino
        deadline = time.monotonic() + 20
        while not any(
            "->" in ln and f":{ino} " in ln for ln in Path("/proc/locks").read_text().splitlines()
        ):
            assert time.monotonic() < deadline, "the daemon never waited for the lock"
            time.sleep(0.01)
        n.drain()
        time.sleep(1.0)  # five ping intervals
        assert "WATCHDOG=1" not in n.drain()
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)
    t.join(30)
    assert replies == [HvStatus.S_OK]
    n.wait_for("^WATCHDOG=1$")  # unstuck: pinging again


def test_no_watchdog_no_pings(tmp_path: Path) -> None:
    d = Daemon(tmp_path, watchdog_usec=None)
    try:
        d.notify.wait_for("^STATUS=registered")
        assert d.host.get(1, "x").status == HvStatus.S_CONT
        d.notify.wait_for("last request GET pool 1")
        assert not [m for m in d.notify.seen if m.startswith("WATCHDOG")]
    finally:
        d.close()


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "42"}, pid=42) == 2.0
    # Meant for another process (the one systemd started, which exec'd us otherwise).
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_status_line_throttles_but_never_loses_a_forced_change() -> None:
    sent: list[str] = []
    now = [100.0]
    s = StatusLine(lambda m: sent.append(m) or True, enabled=True, clock=lambda: now[0])
    s.set("registered", "registered with protocol version 3")
    s.set("last", "last request A")
    assert sent == ["STATUS=registered with protocol version 3"]
    assert s.due() == 101.0
    s.set("state", "frozen (1 filesystem) since 10:00:00", force=True)
    assert sent[-1] == (
        "STATUS=registered with protocol version 3; frozen (1 filesystem) since 10:00:00; "
        "last request A"
    )
    s.set("last", "last request B")
    now[0] = 102.0
    s.flush()
    assert sent[-1].endswith("last request B") and s.due() is None
    off = StatusLine(lambda m: sent.append(m) or True, enabled=False)
    off.set("registered", "x", force=True)
    assert len(sent) == 3
