# SPDX-License-Identifier: GPL-2.0-only
"""Differential: our hv_vss_daemon against Debian's reference C daemon (bookworm, trixie).

Both run unmodified, one after the other, in the same FsBox (same namespace,
same filesystems) with the same host scenario; the replies (all 12 bytes)
and the set of filesystems found frozen must match, except for the
deliberate differences, each asserted explicitly:

* the reference skips every filesystem on a loop device; ours freezes them
  in stacking order.  For a like-for-like comparison the box is built
  without sysfs: the reference's loop check (sysfs `loop`/`slaves`) then
  sees plain block devices, and so does ours (no stacking in those boxes);
* on SIGTERM while frozen the reference exits and leaves filesystems frozen;
  ours thaws first;
* an op the daemon does not know: the reference answers S_OK, ours E_FAIL.
  The kernel never forwards one (hv_snapshot.c answers every op but
  HOT_BACKUP, FREEZE and THAW itself), so this is shown on the device,
  bypassing the simulated kernel's rules.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import pytest

from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus
from hvsim.fsbox import FsBox, FsSpec
from hvsim.protocol import vss as sim_vss
from tests.support.vss_sandbox import REFERENCES, STACKED, Daemon, normalized, sandbox

# Independent filesystems, a bind mount (same superblock: EBUSY in the
# reference, deduplicated in ours) and a read-only one (skipped by both).
PLAIN = (
    FsSpec("a", "ext4"),
    FsSpec("b", "xfs"),
    FsSpec("abind", bind_of="a"),
    FsSpec("ro", "ext4", readonly=True),
)


def backup(box: FsBox, kind: str) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """HOT_BACKUP, FREEZE, probe, THAW, probe; the replies, both probes and the log."""
    with Daemon(box, kind) as d:
        replies = {}
        r = d.host.hot_backup()
        replies["HOT_BACKUP"] = r.reply.hex()
        box.verify()
        r = d.host.freeze()
        replies["FREEZE"] = r.reply.hex()
        frozen = sorted(box.frozen())
        r = d.host.thaw()
        replies["THAW"] = r.reply.hex()
        thawed = sorted(box.frozen())
        rc = d.stop()
        assert rc == (0 if kind == "ours" else -signal.SIGTERM)  # the reference has no handler
        return replies, frozen, thawed, normalized(d.log_lines())


def in_order(needles: Sequence[str], lines: Sequence[str]) -> bool:
    it = iter(lines)
    return all(any(n == ln for ln in it) for n in needles)


@pytest.mark.parametrize("release", REFERENCES)
def test_same_replies_and_same_filesystems_frozen(release: str) -> None:
    with sandbox(PLAIN, sysfs=False) as box:
        ref = backup(box, release)
        ours = backup(box, "ours")
    assert ref[0] == ours[0] == {"HOT_BACKUP": "00" * 12, "FREEZE": "00" * 12, "THAW": "00" * 12}
    assert ref[1] == ours[1] == ["/mnt/a", "/mnt/b"]
    assert ref[2] == ours[2] == []
    # Every line the reference logs, ours logs too, in the same order
    # (ours adds a warning that it cannot see loop devices without sysfs).
    assert ref[3] == [
        "<6>Hyper-V VSS: VSS starting; pid is:N",
        "<6>Hyper-V VSS: VSS: kernel module version: 129",
        "<6>Hyper-V VSS: VSS: op=CHECK HOT BACKUP",
        "<6>Hyper-V VSS: VSS: op=FREEZE: succeeded",
        "<6>Hyper-V VSS: VSS: op=THAW: succeeded",
    ]
    assert in_order(ref[3], ours[3]), ours[3]


@pytest.mark.parametrize("release", REFERENCES)
def test_same_failure_when_a_filesystem_refuses_to_freeze(release: str) -> None:
    with sandbox([FsSpec("a"), FsSpec("bad"), FsSpec("c", "xfs")], sysfs=False) as box:
        box.shutdown("/mnt/bad")
        results = {}
        for kind in (release, "ours"):
            with Daemon(box, kind) as d:
                r = d.host.freeze()
                assert box.frozen(["/mnt/a", "/mnt/c"]) == []
                assert d.logs is not None
                d.logs.wait_for("FREEZE of /mnt/bad failed; error:5 Input/output error")
                d.logs.wait_for("op=5 failed!")
                d.logs.wait_for("/etc/fstab and /proc/mounts")
                results[kind] = r.reply.hex()
                d.stop()
    assert results[release] == results["ours"] == "05400080" + "00" * 8


@pytest.mark.parametrize("release", REFERENCES)
def test_deliberate_difference_loop_backed_filesystems_are_frozen(release: str) -> None:
    with sandbox(STACKED) as box:  # with sysfs: loop devices are visible
        ref = backup(box, release)
        ours = backup(box, "ours")
    assert ref[0] == ours[0]  # both report success ...
    assert ref[1] == []  # ... but the reference froze nothing: all are loop-backed
    assert ours[1] == ["/mnt/a", "/mnt/b", "/mnt/inner", "/mnt/outer"]
    assert ref[2] == ours[2] == []


@pytest.mark.parametrize("release", REFERENCES)
def test_deliberate_difference_sigterm_while_frozen(release: str) -> None:
    with sandbox(PLAIN, sysfs=False) as box:
        with Daemon(box, release) as d:
            assert d.host.freeze().ok
            d.stop(signal.SIGTERM)
            # The reference has no handler: it dies with the filesystems frozen.
            assert box.frozen() == ["/mnt/a", "/mnt/b"]
            assert box.thaw(["/mnt/a", "/mnt/b"]) == {"/mnt/a": "thawed", "/mnt/b": "thawed"}
        with Daemon(box, "ours") as d:
            assert d.host.freeze().ok
            assert d.stop(signal.SIGTERM) == 0
            assert box.frozen() == []


@pytest.mark.parametrize("release", REFERENCES)
def test_deliberate_difference_unknown_op(release: str) -> None:
    with sandbox(PLAIN[:1], sysfs=False) as box:
        status = {}
        for kind in (release, "ours"):
            with Daemon(box, kind) as d:
                # Straight onto the device: the kernel would answer it itself.
                reply = d.kernel.request(sim_vss.encode_request(vss.VssOp.AUTO_RECOVER))
                assert reply is not None
                status[kind] = sim_vss.decode_status_reply(reply)
                assert d.logs is not None
                d.logs.wait_for("Illegal op:7")
                d.stop()
    assert status == {release: HvStatus.S_OK, "ours": HvStatus.E_FAIL}
