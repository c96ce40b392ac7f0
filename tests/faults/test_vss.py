# SPDX-License-Identifier: GPL-2.0-only
"""hv_vss_daemon under faults, ours beside Debian's reference C daemons (bookworm, trixie).

SIGKILL after each step of a backup, and a full disk under our state file.
VSS DANGER: everything runs in an FsBox sandbox (hvsim/fsbox.py) holding only
loop-mounted test images; frozen state is probed with a second FIFREEZE,
never by writing, and the sandbox thaws and fails the test if anything was
left frozen.  Other VSS faults: tests/vss/test_faults.py.
"""

from __future__ import annotations

import signal

import pytest

from hvsim.vss import VssHost
from tests.reference import refdaemons
from tests.soak.targets import VssTarget
from tests.soak.vss import REFERENCE_BOX
from tests.support.vss_sandbox import STACKED, sandbox

KINDS = ["ours", *refdaemons.RELEASES]
IMAGES = 4  # STACKED's filesystems a FREEZE freezes (the bind shares a superblock)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["hot_backup", "freeze", "thaw"])
def test_sigkill_after_each_step_of_a_backup(kind: str, step: str) -> None:
    ours = kind == "ours"
    with sandbox(STACKED if ours else REFERENCE_BOX, sysfs=ours) as box:
        target = VssTarget(box, kind)
        try:
            host = VssHost(target.kernel)
            assert host.hot_backup().ok
            if step in ("freeze", "thaw"):
                assert host.freeze().ok
            if step == "thaw":
                assert host.thaw().ok
            assert target.proc is not None
            target.proc.send_signal(signal.SIGKILL)
            target.proc.wait(10)
            frozen_after_kill = len(box.frozen())
            target.kernel.hangup()
            target.start()
            frozen_after_restart = len(box.frozen())
            # The host's next backup, whatever was left.
            assert [r.ok for r in host.backup(hold_ms=5)] == [True, True, True]
            assert box.frozen() == []
        finally:
            target.close()
    frozen = IMAGES if ours else 2  # the C daemons' box: two images, one bind
    assert frozen_after_kill == (frozen if step == "freeze" else 0)
    if step != "freeze":
        assert frozen_after_restart == 0
    elif ours:
        # The state file in /run tells the next start what to thaw.
        assert frozen_after_restart == 0
        assert target.log is not None
        assert target.log.wait_for("may have been killed while frozen", 0, 5) is not None
    else:
        # The C daemons keep no record: frozen until the host's next THAW (their
        # FREEZE counts EBUSY as frozen); a host that gave up leaves every writer
        # of those filesystems blocked.
        assert frozen_after_restart == frozen


def test_full_disk_under_the_state_file() -> None:
    """ENOSPC on the state file (a full /run): logged at start and at each FREEZE; the backups
    go on (the file only helps a restart after SIGKILL, and `--thaw` thaws every eligible
    filesystem without it)."""
    with sandbox(STACKED) as box:
        state = "/dev/shm/hv_vss_daemon.frozen"  # the box's 1 MiB tmpfs
        fill = box.run(["sh", "-c", "cat /dev/zero > /dev/shm/fill"])
        assert "No space left on device" in fill.stderr, fill.stderr
        target = VssTarget(box, extra=["--state-file", state])
        try:
            host = VssHost(target.kernel)
            assert target.log is not None
            assert target.log.wait_for(f"cannot create {state}: No space left on device", 0, 5)
            for _ in range(2):
                mark = target.log.mark()
                assert [r.ok for r in host.backup(hold_ms=5)] == [True, True, True]
                assert target.log.wait_for(
                    f"cannot write {state}: No space left on device", mark, 5
                )
                assert box.frozen() == []
                assert target.alive()
            # Room again: the next backup records its freeze again, silently.
            box.run(["rm", "/dev/shm/fill"])
            mark = target.log.mark()
            assert [r.ok for r in host.backup(hold_ms=5)] == [True, True, True]
            assert target.log.wait_for("cannot", mark, 1) is None
        finally:
            target.close()


@pytest.mark.parametrize("kind", KINDS)
def test_channel_lost_while_frozen(kind: str) -> None:
    """The device goes away between FREEZE and THAW and comes back: every daemon thaws
    when its read fails, reopens, and serves the host's late THAW."""
    ours = kind == "ours"
    with sandbox(STACKED if ours else REFERENCE_BOX, sysfs=ours) as box:
        target = VssTarget(box, kind)
        try:
            host = VssHost(target.kernel)
            assert host.freeze().ok
            target.kernel.hangup()
            assert target.kernel.wait_registered(10)
            frozen_after_reopen = len(box.frozen())
            assert host.thaw().ok
            assert box.frozen() == []
            assert target.alive()
        finally:
            target.close()
    assert frozen_after_reopen == 0
