# SPDX-License-Identifier: GPL-2.0-only
"""The file-copy daemon under systemd: WATCHDOG=1 keeps coming and STATUS=
shows how far a copy got while its WRITEs are served in C, over both
transports (the real hv_fcopy_daemon, a real $NOTIFY_SOCKET).

The host pauses in the middle of a copy: the C write loops must hand control
back to the daemon's loop (which pings and reports the bytes written so far)
instead of waiting for the next WRITE for good.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.protocol.fcopy import CREATE_PATH, DATA_FRAGMENT
from hvdaemons.protocol.status import HvStatus
from hvsim import uio as sim_uio
from tests.support.fcopy import LegacyRig
from tests.support.notify import NotifySocket

# Pings every 0.1 s (half of WATCHDOG_USEC).
WATCHDOG_USEC = "200000"
FRAGMENTS = 3


def notify_env(sock: NotifySocket) -> dict[str, str]:
    return {"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": WATCHDOG_USEC}


def copying(name: str, done: int, size: int) -> str:
    """The STATUS= part a copy in progress shows (see writer.CopyStatus)."""
    return rf"copying \S*{re.escape(name)}: {done // 1024}\.0 KiB of {size // 1024}\.0 KiB"


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def test_char_device_pings_and_reports_while_a_copy_waits_for_the_host(
    tmp_path: Path, notify: NotifySocket
) -> None:
    rig = LegacyRig(tmp_path / "dev", env=notify_env(notify), timeout=30)
    try:
        dest = tmp_path / "dest"
        size = 10 * DATA_FRAGMENT
        host = rig.host
        assert host.start("big.bin", str(dest), CREATE_PATH, size) == HvStatus.S_OK
        for i in range(FRAGMENTS):  # answered by the C pump
            assert host.write(i * DATA_FRAGMENT, bytes(DATA_FRAGMENT)) == HvStatus.S_OK
        # The host pauses: the pump must come back for the loop to ping and report.
        notify.drain()
        notify.wait_for(copying("big.bin", FRAGMENTS * DATA_FRAGMENT, size))
        notify.wait_for("^WATCHDOG=1$")
        notify.wait_for("^WATCHDOG=1$")
        for i in range(FRAGMENTS, 10):
            assert host.write(i * DATA_FRAGMENT, bytes(DATA_FRAGMENT)) == HvStatus.S_OK
        assert host.complete() == HvStatus.S_OK
        notify.wait_for(r"last copy \S*big\.bin: copied")
        assert (dest / "big.bin").stat().st_size == size
    finally:
        rig.close()


@pytest.mark.parametrize("variant", ["6.10", "7.2"])
def test_uio_pings_and_reports_while_a_copy_waits_for_the_host(
    tmp_path: Path, notify: NotifySocket, variant: str
) -> None:
    sim = sim_uio.UioSim(str(tmp_path / "sim"), variant)
    log = tmp_path / "daemon.log"
    try:
        sim.offer()
        with sim_uio.running_daemon(
            str(tmp_path / "sim"), log_path=str(log), env=notify_env(notify)
        ) as proc:
            host = sim_uio.UioHost(sim, timeout=20)
            sim_uio._wait_bound(sim, 20)
            host.connect(20)
            assert host.negotiate()[0] == HvStatus.S_OK, log.read_text()
            notify.wait_for("^READY=1$")
            # Waiting for requests is not being stuck.
            notify.wait_for("^WATCHDOG=1$")
            dest = tmp_path / "dest"
            size = 10 * DATA_FRAGMENT
            assert host.start("big.bin", str(dest), CREATE_PATH, size) == HvStatus.S_OK
            for i in range(FRAGMENTS):  # answered by the ring's C fast path
                assert host.write(i * DATA_FRAGMENT, bytes(DATA_FRAGMENT)) == HvStatus.S_OK
            notify.drain()
            notify.wait_for(copying("big.bin", FRAGMENTS * DATA_FRAGMENT, size))
            notify.wait_for("^WATCHDOG=1$")
            for i in range(FRAGMENTS, 10):
                assert host.write(i * DATA_FRAGMENT, bytes(DATA_FRAGMENT)) == HvStatus.S_OK
            assert host.complete() == HvStatus.S_OK
            notify.wait_for(r"last copy \S*big\.bin: copied")
            assert (dest / "big.bin").stat().st_size == size
            assert proc.poll() is None, log.read_text()
    finally:
        sim.close()
