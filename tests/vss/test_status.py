# SPDX-License-Identifier: GPL-2.0-only
"""The VSS daemon's STATUS= line: frozen or thawed, and since when, on every path
that changes it (FREEZE, THAW, the deadline, a lost device, a failed freeze)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

from hvdaemons.notify import StatusLine
from hvdaemons.protocol import vss
from hvdaemons.vss.daemon import FreezeStatus, VssHandler
from hvdaemons.vss.mounts import Planner
from tests.vss.test_freeze import (  # noqa: F401 (fixtures)
    Event,
    RecordingFreezer,
    alarm,
    engine,
    events,
    planner,
)


def status_line() -> tuple[StatusLine, list[str]]:
    sent: list[str] = []
    return StatusLine(lambda m: sent.append(m) or True, enabled=True), sent


def request(op: int) -> bytes:
    return bytes([op]) + bytes(vss.MSG_SIZE - 1)


def test_freeze_thaw_and_lost_device(
    planner: Planner, events: list[Event], tmp_path: Path  # noqa: F811
) -> None:
    line, sent = status_line()
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path, on_change=FreezeStatus(line, wall=lambda: 0.0))
    h = VssHandler(e, line)
    h.handle(request(vss.VssOp.FREEZE))
    midnight = time.strftime("%H:%M:%S", time.localtime(0))
    assert sent[-1] == f"STATUS=frozen (4 filesystems) since {midnight}"
    assert h.describe(request(vss.VssOp.FREEZE)) == "FREEZE"
    h.handle(request(vss.VssOp.THAW))
    assert sent[-1] == f"STATUS=thawed since {midnight}"
    h.handle(request(vss.VssOp.FREEZE))
    assert sent[-1].startswith("STATUS=frozen")
    h.reset()  # the device went away while frozen
    assert sent[-1] == f"STATUS=thawed since {midnight}"
    assert f.frozen == set()
    # A freeze that fails part way is rolled back: never shown as frozen at the end.
    f.fail[("freeze", "/mnt/c")] = errno.EIO
    h.handle(request(vss.VssOp.FREEZE))
    assert sent[-1] == f"STATUS=thawed since {midnight}"


def test_the_deadline_thaw_is_shown(
    planner: Planner, events: list[Event], tmp_path: Path, alarm: None  # noqa: F811
) -> None:
    line, sent = status_line()
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path, thaw_deadline=0.2, on_change=FreezeStatus(line))
    assert e.freeze().ok
    assert sent[-1].startswith("STATUS=frozen (4 filesystems) since ")
    deadline = time.monotonic() + 10
    while f.frozen:  # SIGALRM thaws in this thread
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sent[-1].startswith("STATUS=thawed since ")
