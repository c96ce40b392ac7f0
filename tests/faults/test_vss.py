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
from tests.support.vss_sandbox import STACKED, sandbox

KINDS = ["ours", *refdaemons.RELEASES]
IMAGES = 4  # STACKED's filesystems a FREEZE freezes (the bind shares a superblock)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["hot_backup", "freeze", "thaw"])
def test_sigkill_after_each_step_of_a_backup(kind: str, step: str) -> None:
    with sandbox(STACKED) as box:
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
    if kind != "ours":
        # The C daemons skip loop-backed filesystems (tests/vss/test_reference.py), and
        # the sandbox has nothing else: their FREEZE froze nothing to leave behind.
        # Their source keeps no record of a freeze, so a restart cannot thaw either.
        assert frozen_after_kill == frozen_after_restart == 0
        return
    assert frozen_after_kill == (IMAGES if step == "freeze" else 0)
    if step == "freeze":
        # The state file in /run tells the next start what to thaw.
        assert frozen_after_restart == 0
        assert target.log is not None
        assert target.log.wait_for("may have been killed while frozen", 0, 5) is not None
    else:
        assert frozen_after_restart == 0


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
