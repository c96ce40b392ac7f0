# SPDX-License-Identifier: GPL-2.0-only
"""hvctl vss plan (the daemon's planner) and hvctl timesync."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hvdaemons.ctl.daemons import ProcessTable
from hvdaemons.ctl.devices import DeviceView, PtpClock, VmbusDevice
from hvdaemons.ctl.timesync import Timesync, fd_to_clockid, measure_offset, render_text
from tests.ctl.test_status import proc_tree
from tests.support.kvp import PKG_ROOT, daemon_env
from tests.support.umockdev import hvctl, hvctl_in_tree, json_of

MOUNTINFO = """\
20 1 254:0 / / rw,relatime - ext4 /dev/vda1 rw
21 20 0:5 / /proc rw - proc proc rw
22 20 254:16 / /srv rw - xfs /dev/vdb rw
23 20 254:32 / /boot/efi rw - vfat /dev/vda15 rw
24 20 254:48 / /mnt/ro ro - ext4 /dev/vdc ro
25 20 254:16 /sub /srv2 rw - xfs /dev/vdb rw
"""


def test_vss_plan_is_the_daemons_list() -> None:
    ours = hvctl("vss", "plan")
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        [sys.executable, "-m", "hvdaemons.vss.daemon", "--list"],
        cwd=str(PKG_ROOT),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert theirs.returncode == 0 and ours.stdout == theirs.stdout


def test_vss_plan_json(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    cp = hvctl("vss", "plan", "--json", "--mountinfo", str(info))
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert [(f["order"], f["mount_point"], f["fstype"]) for f in doc["freeze"]] == [
        (1, "/srv", "xfs"),
        (2, "/", "ext4"),
    ]
    reasons = {m["mount_point"]: (m["freeze"], m["reason"]) for m in doc["mounts"]}
    assert reasons == {
        "/": (True, "root filesystem: last"),
        "/proc": (False, "not a /dev/ block device"),
        "/srv": (True, "mount order"),
        "/boot/efi": (False, "vfat cannot be frozen"),
        "/mnt/ro": (False, "read-only: nothing to flush"),
        "/srv2": (False, "same filesystem as /srv"),
    }
    text = hvctl("vss", "plan", "--mountinfo", str(info)).stdout
    assert "  1. /srv (xfs on /dev/vdb): mount order" in text
    cp = hvctl("vss", "plan", "--mountinfo", str(tmp_path / "missing"))
    assert cp.returncode == 1 and "cannot read" in cp.stderr and "Traceback" not in cp.stderr


def view_with_ptp(node: str | None) -> DeviceView:
    ts = VmbusDevice("x", "9527e630-d0ae-497b-adce-e80ab0175caf", "x", "hv_utils")
    ptp = (PtpClock("ptp0", "hyperv", node),) if node else ()
    return DeviceView((ts,), {}, ptp)


def test_chrony_configured_for_the_hyper_v_clock(tmp_path: Path) -> None:
    conf = tmp_path / "chrony.conf"
    confd = tmp_path / "conf.d"
    run = tmp_path / "run"
    confd.mkdir()
    run.mkdir()
    conf.write_text(f"pool 2.debian.pool.ntp.org iburst\nconfdir {confd}\n")
    # What packaging/libexec/chrony-ptp-hyperv writes, reached through two confdirs.
    (confd / "hvdaemons-ptp-hyperv.conf").write_text(f"confdir {run}\n")
    (run / "ptp-hyperv.conf").write_text(
        "refclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0 stratum 2\n"
    )
    procs = ProcessTable(proc_tree(tmp_path / "proc", {10: "chronyd", 11: "systemd-timesyn"}))
    r = Timesync(procs, (str(conf),), chronyc=None).report(view_with_ptp(str(tmp_path / "ptp0")))
    chrony, timesyncd = r.consumers
    assert (chrony.name, chrony.running, chrony.uses_ptp) == ("chrony", True, True)
    assert str(run / "ptp-hyperv.conf") in chrony.detail
    assert (timesyncd.running, timesyncd.uses_ptp) == (True, False)
    assert "only NTP" in timesyncd.detail
    # The clock device is no PTP clock here: the offset is unknown, and says why.
    assert r.ptp_present and r.offset_seconds is None
    assert "cannot open" in r.offset_error
    text = render_text(r)
    assert "chrony: running, uses it: refclock PHC configured in" in text
    assert "systemd-timesyncd: running, does not use it" in text
    # Without the refclock line, or without chronyd, chrony does not use it.
    (run / "ptp-hyperv.conf").unlink()
    r = Timesync(procs, (str(conf),), chronyc=None).report(view_with_ptp("/dev/ptp0"))
    assert r.consumers[0].uses_ptp is False and "no `refclock PHC`" in r.consumers[0].detail
    (run / "ptp-hyperv.conf").write_text("refclock PHC /dev/ptp_hyperv\n")
    idle = ProcessTable(proc_tree(tmp_path / "proc2", {12: "bash"}))
    r = Timesync(idle, (str(conf),), chronyc=None).report(view_with_ptp("/dev/ptp0"))
    assert r.consumers[0].uses_ptp is False
    assert "chronyd is not running" in r.consumers[0].detail


def test_offset_of_something_that_is_not_a_ptp_clock(tmp_path: Path) -> None:
    f = tmp_path / "ptp0"
    f.write_text("")
    off = measure_offset(str(f))
    assert off.seconds is None and off.error == "cannot read the clock: Invalid argument"
    assert fd_to_clockid(3) == -29  # FD_TO_CLOCKID(3) = (~3 << 3) | CLOCKFD(3)


def test_timesync_on_recorded_guests(tmp_path: Path) -> None:
    source = ("proc", proc_tree(tmp_path, {1: "init"}))
    cp = hvctl_in_tree("gen2-all-services", source, "timesync", "--json")
    doc = json_of(cp)
    assert doc["ptp_present"] is True and doc["ptp_device"] == "/dev/ptp0"
    assert doc["offered"] is True
    assert doc["offset_seconds"] is None and doc["offset_error"]  # umockdev's node is no clock
    assert cp.returncode == 1
    cp = hvctl_in_tree("not-a-guest", source, "timesync")
    assert cp.returncode == 2
    assert 'Hyper-V PTP clock: absent (no ptp device with clock_name "hyperv")' in cp.stdout
    assert "not a Hyper-V guest" in cp.stderr
