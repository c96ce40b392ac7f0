# SPDX-License-Identifier: GPL-2.0-only
"""The chrony drop-in: the Hyper-V PTP refclock is used when /dev/ptp_hyperv
exists, and chronyd still starts when it does not (an unconditional
"refclock PHC" is fatal for chronyd). Checked with Debian's real chronyd,
unpacked from its .deb, in -Q (measure only, never set the clock) mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import CACHE, run


@pytest.fixture(scope="module")
def chronyd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = CACHE / "debs"
    d.mkdir(parents=True, exist_ok=True)
    if not sorted(d.glob("chrony_*.deb")):
        run(["apt-get", "download", "chrony"], cwd=d)
    x = tmp_path_factory.mktemp("chrony")
    run(["dpkg-deb", "-x", sorted(d.glob("chrony_*.deb"))[-1], x])
    return x / "usr/sbin/chronyd"


def chrony_setup(deb_tree: Path, tmp: Path) -> tuple[Path, Path, Path]:
    """chrony.conf with Debian's confdir, holding the package's drop-in whose
    /run directory is moved to tmp."""
    confd = tmp / "conf.d"
    confd.mkdir()
    rundir = tmp / "run-chrony"
    dropin = (deb_tree / "etc/chrony/conf.d/hvdaemons-ptp-hyperv.conf").read_text()
    assert "confdir /run/hvdaemons/chrony\n" in dropin
    (confd / "hvdaemons-ptp-hyperv.conf").write_text(
        dropin.replace("/run/hvdaemons/chrony", str(rundir))
    )
    conf = tmp / "chrony.conf"
    conf.write_text(f"confdir {confd}\n")
    return conf, rundir, deb_tree / "usr/libexec/hvdaemons/chrony-ptp-hyperv"


def chronyd_q(chronyd: Path, conf: Path) -> tuple[int, str]:
    # -Q: print the offset and exit, never touch the clock; -t: give up after 1 s.
    cp = run([chronyd, "-Q", "-d", "-u", "root", "-t", "1", "-f", conf], check=False, timeout=30)
    return cp.returncode, cp.stdout + cp.stderr


def test_no_ptp_device_keeps_chronyd_working(deb_tree: Path, chronyd: Path, tmp_path: Path) -> None:
    conf, rundir, script = chrony_setup(deb_tree, tmp_path)
    # A stale file from a previous boot with the device is removed.
    rundir.mkdir()
    (rundir / "ptp-hyperv.conf").write_text("refclock PHC /dev/ptp_hyperv\n")
    run([script, str(tmp_path / "no-such-ptp"), rundir])
    assert not (rundir / "ptp-hyperv.conf").exists()
    _, out = chronyd_q(chronyd, conf)
    # It got to looking for sources (there are none here) instead of dying.
    assert "Fatal error" not in out and "No suitable source for synchronisation" in out, out


def test_ptp_device_becomes_a_refclock(deb_tree: Path, chronyd: Path, tmp_path: Path) -> None:
    conf, rundir, script = chrony_setup(deb_tree, tmp_path)
    # Any character device stands in for the PHC; /dev/null is one.
    run([script, "/dev/null", rundir])
    assert (
        rundir / "ptp-hyperv.conf"
    ).read_text() == "refclock PHC /dev/null poll 3 dpoll -2 offset 0 stratum 2\n"
    _, out = chronyd_q(chronyd, conf)
    # chronyd read the line and tried the device: /dev/null is no PHC.
    assert "Fatal error : Could not open PHC" in out, out


def test_chrony_unit_dropin(deb_tree: Path) -> None:
    dropin = deb_tree / "lib/systemd/system/chrony.service.d/hvdaemons-ptp-hyperv.conf"
    text = dropin.read_text()
    assert "ExecStartPre=-+/usr/libexec/hvdaemons/chrony-ptp-hyperv\n" in text
