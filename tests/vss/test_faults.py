# SPDX-License-Identifier: GPL-2.0-only
"""hv_vss_daemon under faults: a filesystem that refuses to freeze, the daemon killed
while frozen, a host that never thaws, the device failing while frozen.

Same sandbox rules as test_e2e.py: private mount namespace with only
loop-mounted test images, probes by second FIFREEZE, cleanup thaws and
fails the test if it had to.
"""

from __future__ import annotations

import signal

from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.fsbox import FsSpec
from tests.support.vss_sandbox import STACKED, Daemon, sandbox, wait_until

FAIL = bytes.fromhex("05400080") + bytes(8)
IMAGES = ["/mnt/a", "/mnt/b", "/mnt/outer", "/mnt/inner"]


def test_a_filesystem_that_refuses_to_freeze_rolls_everything_back() -> None:
    specs = [FsSpec("a"), FsSpec("bad"), FsSpec("c", "xfs")]
    with sandbox(specs) as box, Daemon(box) as d:
        box.shutdown("/mnt/bad")  # a shut-down ext4: FIFREEZE fails with EIO
        r = d.host.freeze()
        assert r.status == HvStatus.E_FAIL and r.reply == FAIL
        # /mnt/a had been frozen before /mnt/bad failed: it was thawed again.
        assert box.frozen(["/mnt/a", "/mnt/c"]) == []
        assert d.logs is not None
        d.logs.wait_for("FREEZE of /mnt/bad failed; error:5 Input/output error")
        d.logs.wait_for("VSS: op=FREEZE: failed")
        d.logs.wait_for("op=5 failed!")
        # The daemon keeps serving.
        assert d.host.hot_backup().status == HvStatus.S_OK


def test_killed_while_frozen_stays_frozen_until_thaw_runs() -> None:
    """What survives kill -9: nothing thaws by itself; `hv_vss_daemon --thaw` (the unit's
    ExecStopPost=) does, guided by the state file in /run."""
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert d.host.freeze().ok
        d.stop(signal.SIGKILL)
        assert sorted(box.frozen()) == sorted(IMAGES)
        assert box.run(["grep", "-q", "^frozen", "/run/hv_vss_daemon.frozen"]).returncode == 0
        res = box.run([*launch.daemon_argv("hv_vss_daemon"), "--thaw"])
        assert res.returncode == 0, res.stderr
        assert sorted(res.stdout.split()[1::2]) == sorted(IMAGES)
        assert box.frozen() == []
        assert box.run(["test", "-e", "/run/hv_vss_daemon.frozen"]).returncode == 1
        # A second --thaw finds nothing frozen and still succeeds.
        res = box.run([*launch.daemon_argv("hv_vss_daemon"), "--thaw"])
        assert res.returncode == 0 and res.stdout == ""


def test_killed_while_frozen_then_restarted_thaws_at_start() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert d.host.freeze().ok
        d.stop(signal.SIGKILL)
        assert len(box.frozen()) == 4
        d.start()  # same state file, same device
        assert box.frozen() == []
        assert d.logs is not None
        d.logs.wait_for("a previous daemon may have been killed while frozen")
        assert [r.ok for r in d.host.backup(hold_ms=10)] == [True, True, True]


def test_thaw_option_thaws_even_without_a_state_file() -> None:
    with sandbox(STACKED) as box, Daemon(box, extra=["--state-file", "/run/elsewhere"]) as d:
        assert d.host.freeze().ok
        d.stop(signal.SIGKILL)
        # --thaw looks at the default state file, which does not exist: it
        # still thaws every eligible filesystem.
        res = box.run([*launch.daemon_argv("hv_vss_daemon"), "--thaw"])
        assert res.returncode == 0
        assert box.frozen() == []


def test_a_host_that_never_thaws_is_overridden_by_the_deadline() -> None:
    with sandbox(STACKED) as box, Daemon(box, extra=["--thaw-deadline", "1"]) as d:
        assert [r.ok for r in d.host.freeze_no_thaw()] == [True]
        # Still frozen after FREEZE was answered: the deadline has not fired yet.
        assert len(box.frozen()) == 4
        assert d.logs is not None
        # The event: the daemon says it thawed at the deadline (the wait is a hang guard).
        d.logs.wait_for("no THAW from the host 1 s after FREEZE: thawed 4 filesystem(s)", 30)
        assert box.frozen() == []
        # The late THAW learns that the freeze did not hold.
        r = d.host.thaw()
        assert r.status == HvStatus.E_FAIL
        d.logs.wait_for("the snapshot may not be consistent")
        # The next backup is normal again.
        assert [r.ok for r in d.host.backup(hold_ms=10)] == [True, True, True]


def test_device_read_error_while_frozen_thaws_and_reconnects() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        d.host.disconnect_mid_freeze(hold_ms=50)  # the channel goes away: read() fails
        assert wait_until(lambda: box.frozen() == [], 10)
        assert d.kernel.wait_registered(10)
        assert d.logs is not None
        d.logs.wait_for("device lost while frozen: thawed 4 filesystem(s)")
        assert [r.ok for r in d.host.backup(hold_ms=10)] == [True, True, True]
        assert box.frozen() == []


def test_a_filesystem_frozen_by_someone_else_counts_and_is_thawed() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert box.freeze(["/mnt/b"]) == {"/mnt/b": "frozen"}
        assert d.host.freeze().ok  # EBUSY is success, as in the reference
        assert len(box.frozen()) == 4
        assert d.host.thaw().ok
        assert box.frozen() == []
