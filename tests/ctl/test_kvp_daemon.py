# SPDX-License-Identifier: GPL-2.0-only
"""hvctl kvp as a client of the running hv_kvp_daemon: what it writes the host sees.

The daemon serves the simulated kernel (hvsim.chardev) from a state
directory; hvctl writes the same pool files under the same locks while the
host enumerates and sets.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.kvp import KvpHost
from tests.reference.refdaemons import LogReader
from tests.support.kvp import PKG_ROOT, daemon_env, spawn_daemon
from tests.support.umockdev import hvctl


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.kernel = ChardevKernel(str(tmp / "hv_kvp"), "hv_kvp", timeout=10)
        self.proc = spawn_daemon(self.kernel.path, str(self.state))
        self.log = LogReader(self.proc)
        assert self.kernel.wait_registered(30), "\n".join(self.log.drain(1))
        self.host = KvpHost(self.kernel)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    launch.stop(d.proc)
    d.kernel.close()


def test_the_host_enumerates_what_hvctl_set(daemon: Daemon) -> None:
    sd = ("--state-dir", str(daemon.state))
    assert daemon.host.enumerate_all(1) == ([], HvStatus.S_CONT)
    cp = hvctl("kvp", "set", "--pool", "1", "BuildId", "2026.12-rc1", *sd)
    assert cp.returncode == 0, cp.stderr
    assert hvctl("kvp", "set", "--pool", "guest", "Role", "web ✓", *sd).returncode == 0
    assert daemon.host.enumerate_all(1) == (
        [("BuildId", "2026.12-rc1"), ("Role", "web ✓")],
        HvStatus.S_CONT,
    )
    assert hvctl("kvp", "set", "BuildId", "2026.12", *sd).returncode == 0
    assert hvctl("kvp", "delete", "Role", *sd).returncode == 0
    assert daemon.host.enumerate_all(1) == ([("BuildId", "2026.12")], HvStatus.S_CONT)
    # And the other way: what the host sets, hvctl reads.
    assert daemon.host.set(3, "VirtualMachineName", "web-01").status == HvStatus.S_OK
    cp = hvctl("kvp", "get", "--pool", "host", "VirtualMachineName", *sd)
    assert (cp.returncode, cp.stdout) == (0, "web-01\n"), cp.stderr


def test_concurrent_writers_and_the_host_lose_no_update(daemon: Daemon) -> None:
    """Four hvctl writers and the host's own SETs into pool 1 at once."""
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\nfrom hvdaemons.ctl.main import main\n"
                "n, state = sys.argv[1], sys.argv[2]\n"
                "for i in range(6):\n"
                "    assert main(['kvp', 'set', f'w{n}-{i}', f'v{i}', '--state-dir', state]) == 0\n",
                str(n),
                str(daemon.state),
            ],
            cwd=str(PKG_ROOT),
            env=daemon_env(),
        )
        for n in range(4)
    ]
    host_status: list[int] = []

    def host_sets() -> None:
        for i in range(15):
            host_status.append(daemon.host.set(1, f"host-{i}", str(i)).status)
            daemon.host.enumerate_all(1)  # the host reads while others write

    t = threading.Thread(target=host_sets)
    t.start()
    for w in writers:
        assert w.wait(timeout=120) == 0
    t.join(timeout=120)
    assert host_status == [HvStatus.S_OK] * 15
    items, end = daemon.host.enumerate_all(1)
    assert end == HvStatus.S_CONT
    want = {(f"w{n}-{i}", f"v{i}") for n in range(4) for i in range(6)}
    want |= {(f"host-{i}", str(i)) for i in range(15)}
    assert sorted(items) == sorted(want)
    assert (daemon.state / ".kvp_pool_1").stat().st_size == len(want) * 2560
