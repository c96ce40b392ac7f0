# SPDX-License-Identifier: GPL-2.0-only
"""VSS soak traffic: Hyper-V backups against hv_vss_daemon in the VSS sandbox, compressed.

Mirrors nothing upstream: test harness.  Mostly whole backup cycles
(HOT_BACKUP, FREEZE, a short hold while the host snapshots, THAW); now and
then a host that never thaws, so our daemon's --thaw-deadline thaws by
itself (the C daemons have no such deadline: the host's late THAW thaws
them); now and then the channel lost in the middle of a freeze.  Every few
cycles the sandbox checks, by a second FIFREEZE (EBUSY = frozen, never a
write), that nothing was left frozen.

VSS DANGER: every freeze happens inside an FsBox (hvsim/fsbox.py), a private
mount namespace holding only loop-mounted test images; the box's cleanup
thaws whatever is left and the test fails if it had to.
"""

from __future__ import annotations

import random
import time

from hvdaemons.protocol.status import HvStatus
from hvsim.fsbox import FsBox, FsSpec
from hvsim.vss import VssHost, VssResult

from .harness import Soak
from .targets import VssTarget

DEADLINE = 1.0  # s: our daemon's --thaw-deadline in the soak

# The C daemons skip loop-backed filesystems when sysfs shows them as such:
# they get a box without sysfs and without stacking (freezing an image's
# holder before the image would hang them), so that they do freeze.
REFERENCE_BOX = (FsSpec("a", "ext4"), FsSpec("b", "xfs"), FsSpec("abind", bind_of="a"))


class VssTraffic:
    def __init__(self, target: VssTarget, box: FsBox) -> None:
        self.target = target
        self.box = box
        self.host = VssHost(target.kernel)
        self.ours = target.kind == "ours"
        self.cycles = 0

    def _req(self, soak: Soak, kind: str, fn: object) -> VssResult:
        r: VssResult = soak.timed(kind, fn)  # type: ignore[arg-type,assignment]
        return r

    def step(self, soak: Soak, rng: random.Random) -> None:
        self.cycles += 1
        r = rng.random()
        if r < 0.03:
            self._never_thawed(soak)
        else:
            hot = self._req(soak, "hot_backup", self.host.hot_backup)
            soak.expect(hot.ok, "HOT_BACKUP failed", hot.describe())
            freeze = self._req(soak, "freeze", self.host.freeze)
            if soak.expect(freeze.ok, "FREEZE failed", freeze.describe()):
                hold = rng.choice((0, 0, 2, 10, 30))
                time.sleep(hold / 1000)  # the host snapshots its disks
                thaw = self._req(soak, "thaw", self.host.thaw)
                soak.expect(thaw.ok, "THAW failed", thaw.describe())
        if self.cycles % 8 == 0:
            self._nothing_frozen(soak)

    def _never_thawed(self, soak: Soak) -> None:
        """FREEZE and no THAW: ours thaws at its deadline, the C daemons when the late THAW comes."""
        soak.counts["never thawed"] += 1
        assert self.target.log is not None
        mark = self.target.log.mark()
        freeze = self._req(soak, "freeze", self.host.freeze)
        if not soak.expect(freeze.ok, "FREEZE failed", freeze.describe()):
            return
        if self.ours:
            line = self.target.log.wait_for("no THAW from the host", mark, timeout=30)
            soak.expect(line is not None, "the thaw deadline did not fire")
            late = self._req(soak, "thaw", self.host.thaw)
            soak.expect(
                late.status == HvStatus.E_FAIL,
                "a THAW after the deadline was not failed",
                late.describe(),
            )
        else:
            late = self._req(soak, "thaw", self.host.thaw)
            soak.expect(late.ok, "the late THAW failed", late.describe())

    def _nothing_frozen(self, soak: Soak) -> None:
        frozen = self.box.frozen()
        if not soak.expect(not frozen, "left frozen after a cycle", frozen):
            self.box.thaw()

    def disrupt(self, soak: Soak, rng: random.Random) -> None:
        """The channel goes away in the middle of a freeze; the daemon must thaw and register again."""
        freeze = self._req(soak, "freeze", self.host.freeze)
        soak.expect(freeze.ok, "FREEZE failed", freeze.describe())
        self.target.kernel.hangup()
        soak.expect(self.target.kernel.wait_registered(30), "no registration after a device loss")
        # Every daemon thaws when its read fails (tests/faults/test_vss.py).
        self._nothing_frozen(soak)
