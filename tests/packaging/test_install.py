# SPDX-License-Identifier: GPL-2.0-only
"""The packages installed for real: the .debs with apt into a fresh Debian
bookworm root (mmdebstrap, cached), the .rpms with rpm --root. Install, run
the installed programs (the daemons against the installed simulator),
upgrade from the previous build, swap with Debian's hyperv-daemons and
back, remove, purge.

No systemd runs in the roots, so the maintainer scripts take their
"no running systemd" paths (as in an image build); the unit side is covered
by test_units.py and test_udev.py."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import PACKAGING, Packages, Root, run, version

PROGRAMS = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon")
CONFFILE = "etc/chrony/conf.d/hvdaemons-ptp-hyperv.conf"


def dpkg_status(root: Root, pkg: str = "hvdaemons") -> str:
    cp = root.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", pkg], check=False)
    return cp.stdout.strip() if cp.returncode == 0 else "absent"


def test_install_run_remove_purge(debian_root: Root, packages: Packages) -> None:
    before = debian_root.files()
    debian_root.apt_install(packages.deb)
    assert dpkg_status(debian_root) == f"ii {version()}-1"

    for prog in PROGRAMS:
        cp = debian_root.run([f"/usr/sbin/{prog}", "--help"], check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert prog in cp.stdout and "--no-daemon" in cp.stdout, cp.stdout
        # The man page documents every option --help lists.
        page = prog if prog != "hv_fcopy_uio_daemon" else "hv_fcopy_daemon"
        man = (PACKAGING / "man" / f"{page}.8").read_text().replace("\\-", "-")
        missing = set(re.findall(r"--[a-z][a-z-]+", cp.stdout)) - set(
            re.findall(r"--[a-z][a-z-]+", man)
        )
        assert not missing, f"{page}.8 lacks {sorted(missing)}"
    # The daemons alone: no simulator.
    assert not (debian_root / "usr/bin/hvsim").exists()
    assert not (debian_root / "usr/lib/hvdaemons/hvsim").exists()
    # hvctl: in /usr/bin, and its man page documents every option of every command.
    man = (PACKAGING / "man" / "hvctl.1").read_text().replace("\\-", "-")
    for cmd in (["status"], ["kvp", "list"], ["kvp", "set"], ["vss", "plan"], ["timesync"]):
        cp = debian_root.run(["/usr/bin/hvctl", *cmd, "--help"])
        missing = set(re.findall(r"--[a-z][a-z-]+", cp.stdout)) - set(
            re.findall(r"--[a-z][a-z-]+", man)
        )
        assert not missing, f"hvctl.1 lacks {sorted(missing)} of hvctl {' '.join(cmd)}"
    # Outside Hyper-V (this root): a clear message and exit 2.
    cp = debian_root.run(["hvctl", "status"], check=False)
    assert cp.returncode == 2 and "not a Hyper-V guest" in cp.stderr, cp.stdout + cp.stderr

    # postinst byte-compiled the private modules; the KVP state dir exists.
    assert list((debian_root / "usr/lib/hvdaemons/hvdaemons/__pycache__").glob("*.pyc"))
    assert (debian_root / "var/lib/hyperv").is_dir()
    assert (debian_root / CONFFILE).is_file()

    # The simulator on top, then gone again with the daemons it depends on.
    debian_root.apt_install(packages.sim_deb)
    assert dpkg_status(debian_root, "hvdaemons-sim") == f"ii {version()}-1"
    cp = debian_root.run(["hvsim", "--help"])
    assert "serve" in cp.stdout
    assert list((debian_root / "usr/lib/hvdaemons/hvsim/__pycache__").glob("*.pyc"))

    debian_root.run(["apt-get", "remove", "-y", "hvdaemons"])
    assert dpkg_status(debian_root) == f"rc {version()}-1"
    # Removed with it (it has no conffiles, so nothing is left to purge).
    assert dpkg_status(debian_root, "hvdaemons-sim") == "absent"
    assert not (debian_root / "usr/bin/hvsim").exists()
    assert not (debian_root / "usr/sbin/hv_kvp_daemon").exists()
    # prerm removed the byte code, so dpkg could remove the whole tree.
    assert not (debian_root / "usr/lib/hvdaemons").exists()
    assert (debian_root / CONFFILE).is_file()  # conffiles stay until purge

    debian_root.run(["apt-get", "purge", "-y", "hvdaemons"])
    assert dpkg_status(debian_root) == "absent"
    after = debian_root.files()
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}


def test_upgrade_from_previous_build(
    debian_root: Root, packages: Packages, previous_packages: Packages
) -> None:
    debian_root.apt_install(previous_packages.deb)
    assert dpkg_status(debian_root) == f"ii {version()}-0"
    # State a running system would have: a KVP pool and byte code.
    pool = debian_root / "var/lib/hyperv/.kvp_pool_0"
    pool.write_bytes(b"k" * 2560)
    debian_root.apt_install(packages.deb)
    assert dpkg_status(debian_root) == f"ii {version()}-1"
    assert pool.read_bytes() == b"k" * 2560  # an upgrade keeps the pools
    cp = debian_root.run(["/usr/sbin/hv_kvp_daemon", "--help"], check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # Purge removes the pools when no other KVP daemon is left.
    debian_root.run(["apt-get", "purge", "-y", "hvdaemons"])
    assert not (debian_root / "var/lib/hyperv").exists()


def test_replaces_hyperv_daemons_and_back(
    debian_root: Root, packages: Packages, hyperv_daemons_deb: Path
) -> None:
    debian_root.apt_install(hyperv_daemons_deb)
    assert dpkg_status(debian_root, "hyperv-daemons").startswith("ii ")
    theirs = (debian_root / "lib/systemd/system/hv-kvp-daemon.service").read_text()
    pool = debian_root / "var/lib/hyperv/.kvp_pool_1"
    pool.parent.mkdir(exist_ok=True)
    pool.write_bytes(b"p" * 2560)

    # Ours over theirs: apt removes hyperv-daemons, our files take the paths.
    debian_root.apt_install(packages.deb)
    assert dpkg_status(debian_root, "hyperv-daemons") in (
        "absent",
        "rc " + hyperv_daemons_deb.name.split("_")[1],
    )
    assert dpkg_status(debian_root) == f"ii {version()}-1"
    assert (debian_root / "usr/sbin/hv_kvp_daemon").read_bytes().startswith(b"#!/usr/bin/python3")
    ours = (debian_root / "lib/systemd/system/hv-kvp-daemon.service").read_text()
    assert ours != theirs and "Type=notify" in ours
    assert run(
        ["sh", "-c", f"dpkg --root={debian_root.path} -S /usr/sbin/hv_kvp_daemon"]
    ).stdout.startswith("hvdaemons:")
    assert pool.read_bytes() == b"p" * 2560

    # And back: theirs over ours, nothing of ours left behind.
    debian_root.apt_install(hyperv_daemons_deb)
    assert dpkg_status(debian_root).startswith(("absent", "rc "))
    assert (debian_root / "usr/sbin/hv_kvp_daemon").read_bytes().startswith(b"\x7fELF")
    assert (debian_root / "lib/systemd/system/hv-kvp-daemon.service").read_text() == theirs
    assert not (debian_root / "usr/lib/hvdaemons").exists()
    assert not (debian_root / "lib/udev/rules.d/70-hv-kvp.rules").exists()
    assert pool.read_bytes() == b"p" * 2560
    # Purging ours now must not take the pools from the installed C daemon.
    debian_root.run(["dpkg", "--purge", "hvdaemons"])
    assert pool.read_bytes() == b"p" * 2560


# -- the installed daemons against the simulator ---------------------------------


class Notify:
    """A datagram socket standing in for systemd's notify socket; tells which
    pid sent READY=1."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(self.path))

    def wait_ready(self, proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"daemon exited {proc.returncode}: {proc.communicate()[0]}"
            self.sock.settimeout(0.5)
            try:
                msg, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            if b"READY=1" in msg.split(b"\n"):
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        pid: int = struct.unpack("iII", data[:12])[0]
                        return pid
                raise AssertionError("READY=1 without credentials")
        raise AssertionError(f"no READY=1 within {timeout} s")

    def close(self) -> None:
        self.sock.close()


@contextmanager
def simulator(
    root: Root, simdir: Path, service: str, timeout: float = 30
) -> Iterator[subprocess.Popen[str]]:
    """The installed hvsim, serving one service's device in simdir (/run/hvsim
    in the root). timeout: a hang guard (longer under qemu-user)."""
    proc = root.popen(
        ["hvsim", "serve", "--dir", "/run/hvsim", "--service", service],
        binds=[(simdir, "/run/hvsim")],
    )
    try:
        deadline = time.monotonic() + timeout
        # The device, not the control socket: hvsim binds that first.
        while not (simdir / f"hv_{service}").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=timeout)


@contextmanager
def daemon(
    root: Root, simdir: Path, prog: str, device: str, timeout: float = 30
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    notify = Notify(simdir)
    proc = root.popen(
        [f"/usr/sbin/{prog}", "--no-daemon", "--device", f"/run/hvsim/{device}"],
        binds=[(simdir, "/run/hvsim")],
        env={"NOTIFY_SOCKET": "/run/hvsim/notify"},
    )
    try:
        pid = notify.wait_ready(proc, timeout)
        yield proc, pid
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=timeout)
        notify.close()
        print(out)
    assert proc.returncode == 0, out


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def hvsim(root: Root, simdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return root.run(["hvsim", *args], binds=[(simdir, "/run/hvsim")], check=False)


def host_copies(root: Root, simdir: Path, payload: bytes) -> Path:
    """Copy-VMFile of payload to /root/incoming/payload.bin through the running
    simulator; the copy's path on this side."""
    (simdir / "payload.bin").write_bytes(payload)
    cp = hvsim(
        root,
        simdir,
        "fcopy",
        "--dir",
        "/run/hvsim",
        "copy",
        "--create-path",
        "/run/hvsim/payload.bin",
        "/root/incoming/payload.bin",
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return root / "root/incoming/payload.bin"


def test_installed_kvp_daemon_against_simulator(
    debian_root: Root, packages: Packages, tmp_path: Path
) -> None:
    debian_root.apt_install(packages.deb, packages.sim_deb)
    simdir = tmp_path / "sim"
    simdir.mkdir()
    with (
        simulator(debian_root, simdir, "kvp"),
        daemon(debian_root, simdir, "hv_kvp_daemon", "hv_kvp") as (_, pid),
    ):
        # The launcher carries the upstream name: ps/pgrep see hv_kvp_daemon.
        assert comm(pid) == "hv_kvp_daemon"
        # The host stores a value; the daemon keeps it in the root's pool file.
        cp = hvsim(
            debian_root,
            simdir,
            "kvp",
            "--dir",
            "/run/hvsim",
            "set",
            "--pool",
            "0",
            "PackagingTest",
            "installed-from-deb",
        )
        assert cp.returncode == 0, cp.stdout + cp.stderr
        pool0 = (debian_root / "var/lib/hyperv/.kvp_pool_0").read_bytes()
        assert b"PackagingTest\0" in pool0 and b"installed-from-deb\0" in pool0
        cp = hvsim(
            debian_root, simdir, "kvp", "--dir", "/run/hvsim", "get", "--pool", "0", "PackagingTest"
        )
        assert cp.returncode == 0 and "installed-from-deb" in cp.stdout, cp.stdout + cp.stderr
        # Guest intrinsic items come from the root's own files (/etc/os-release).
        cp = hvsim(debian_root, simdir, "kvp", "--dir", "/run/hvsim", "enumerate", "--pool", "2")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "Debian GNU/Linux" in cp.stdout, cp.stdout


def test_installed_fcopy_daemon_against_simulator(
    debian_root: Root, packages: Packages, tmp_path: Path
) -> None:
    debian_root.apt_install(packages.deb, packages.sim_deb)
    simdir = tmp_path / "sim"
    simdir.mkdir()
    payload = os.urandom(300_000)
    with (
        simulator(debian_root, simdir, "fcopy"),
        daemon(debian_root, simdir, "hv_fcopy_uio_daemon", "hv_fcopy") as (_, pid),
    ):
        assert comm(pid) == "hv_fcopy_uio_da"  # TASK_COMM_LEN truncates, as for the C daemon
        copy = host_copies(debian_root, simdir, payload)
    assert copy.read_bytes() == payload


def test_installed_hvsim_demo_runs_the_installed_daemons(
    debian_root: Root, packages: Packages
) -> None:
    """The demo starts the daemons from /usr/lib/hvdaemons (a private directory,
    not on python3's own path) and reports each part."""
    debian_root.apt_install(packages.deb, packages.sim_deb)
    for which, parts in (
        ("kvp", ["KVP"]),
        ("fcopy", ["file copy over the char device", "file copy over the uio ring"]),
    ):
        cp = debian_root.run(["hvsim", "demo", which], check=False, timeout=300)
        out = cp.stdout + cp.stderr
        assert "Traceback" not in out, out
        lines = cp.stdout.splitlines()
        assert lines[lines.index("== summary") + 1 :] == [f"  {p:<32} ok" for p in parts], out
        assert cp.returncode == 0, out


# -- the RPM in a scratch root -----------------------------------------------------


def test_rpm_install_upgrade_erase(
    debian_root: Root, packages: Packages, previous_packages: Packages
) -> None:
    """rpm --root into the Debian root: it has /bin/sh and python3 for the
    scriptlets and the Python dependencies, but no RPM database of them,
    hence --nodeps."""
    r = str(debian_root.path)
    # Owned by Fedora's "filesystem" package, which this root lacks.
    (debian_root / "usr/share/licenses").mkdir()
    before = debian_root.files()
    # Debian's rpm keeps its database in ~/.rpmdb; use the distributions' place.
    rpm = ["rpm", "--root", r, "--dbpath", "/var/lib/rpm", "--nodeps"]
    run([*rpm, "-i", previous_packages.rpm, previous_packages.sim_rpm])
    run([*rpm, "-U", packages.rpm, packages.sim_rpm])
    q = run([*rpm[:5], "-q", "hvdaemons", "hvdaemons-sim"]).stdout.split()
    assert q == [f"hvdaemons-{version()}-1.x86_64", f"hvdaemons-sim-{version()}-1.x86_64"]
    verify = run([*rpm, "-V", "hvdaemons", "hvdaemons-sim"], check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for prog in PROGRAMS:
        cp = debian_root.run([f"/usr/sbin/{prog}", "--help"], check=False)
        assert cp.returncode == 0 and prog in cp.stdout, cp.stdout + cp.stderr
    assert (debian_root / "usr/lib/systemd/system/hypervkvpd.service").is_symlink()
    assert list((debian_root / "usr/lib/hvdaemons/hvdaemons/__pycache__").glob("*.pyc"))
    cp = debian_root.run(["/usr/bin/hvsim", "--help"], check=False)
    assert cp.returncode == 0 and "serve" in cp.stdout, cp.stdout + cp.stderr
    # hvdaemons-sim requires this very hvdaemons: it cannot go first.
    cp = run([*rpm[:5], "-e", "--test", "hvdaemons"], check=False)
    assert cp.returncode != 0 and "hvdaemons-sim" in cp.stderr, cp.stdout + cp.stderr

    run([*rpm, "-e", "hvdaemons-sim"])
    assert not (debian_root / "usr/lib/hvdaemons/hvsim").exists()
    run([*rpm, "-e", "hvdaemons"])
    assert run([*rpm[:5], "-q", "hvdaemons"], check=False).returncode != 0
    after = debian_root.files()
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
