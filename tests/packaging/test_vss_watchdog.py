# SPDX-License-Identifier: GPL-2.0-only
"""VSS under a real systemd: the watchdog ends a daemon stuck while a filesystem
is frozen, and the unit's ExecStopPost= (hv_vss_daemon --thaw) thaws it.

Only a loop-mounted test filesystem is ever frozen.  The container's root is an
ext4 image on a tmpfs, loop-mounted in a private mount namespace that the
container is booted from (systemd-nspawn); the image's tmpfs is bound into the
container so the daemon can see the loop device's backing file.  nspawn's own
binds of this machine's filesystems (/run/host/...) are unmounted inside the
container, and before the FREEZE the test checks that the daemon's mount table
holds no other writable block-device filesystem and that the daemon's own plan
freezes exactly the container's root.  The freeze probe (a second FIFREEZE:
EBUSY = frozen) refuses to run unless "/" where it runs is that loop device.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Packages, cached_root_tar, need
from .test_systemd_sandbox import SYSTEMD_PACKAGES, Container, derived_unit, start, wait_for

SCRIPT = r"""
set -eu
store=$1; root=$2; tar=$3; deb=$4; sim_deb=$5; extra=$6
mount -t tmpfs -o size=3G,mode=0755 hvctl-vss-store "$store"
truncate -s 1500M "$store/root.img"
mkfs.ext4 -q -F "$store/root.img"
mount -o loop "$store/root.img" "$root"
tar --numeric-owner -xf "$tar" -C "$root"
cp "$deb" "$sim_deb" "$root/tmp/"
PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    chroot "$root" apt-get install -y -q "/tmp/$(basename "$deb")" "/tmp/$(basename "$sim_deb")" >/dev/null
cp -a "$extra/." "$root/"
exec systemd-nspawn --register=no --keep-unit -b --console=pipe --quiet --timezone=off \
    --bind="$store" -D "$root" systemd.unit=multi-user.target
"""

# Run inside the container: "probe" (FIFREEZE, EBUSY = frozen; success = it
# was thawed, thawed again at once) or "thaw".  Refuses unless "/" is the loop
# device the test made.
PROBE = """\
import errno, fcntl, os, sys
FIFREEZE, FITHAW = 0xC0045877, 0xC0045878
mounts = [ln.split() for ln in open("/proc/self/mountinfo")]
root = [m for m in mounts if m[4] == "/"][-1]
source = root[root.index("-") + 2]
if int(root[2].split(":")[0]) != 7 or not source.startswith("/dev/loop") \\
        or os.major(os.stat("/").st_dev) != 7:
    print("refused: / is", source)
    sys.exit(3)
fd = os.open("/", os.O_RDONLY)
if sys.argv[1] == "thaw":
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError:
        pass
    print("thawed")
    sys.exit(0)
try:
    fcntl.ioctl(fd, FIFREEZE, 0)
except OSError as e:
    print("frozen" if e.errno == errno.EBUSY else "error %d" % e.errno)
    sys.exit(0)
fcntl.ioctl(fd, FITHAW, 0)
print("thawed")
"""


class LoopRootContainer(Container):
    def _init_pid(self) -> int:
        # The launcher prepares the image first (tar, apt-get): wait for nspawn.
        # Then nspawn's set-up children come and go: wait for the container's systemd.
        deadline = time.monotonic() + 600
        me = self.proc.pid
        while True:
            assert self.proc.poll() is None, "preparing or booting the loop-mounted root failed"
            assert time.monotonic() < deadline, "the container's systemd never started"
            try:
                if Path(f"/proc/{me}/comm").read_text().strip() == "systemd-nspawn":
                    for kid in Path(f"/proc/{me}/task/{me}/children").read_text().split():
                        if Path(f"/proc/{kid}/comm").read_text().strip() == "systemd":
                            return int(kid)
            except FileNotFoundError:
                pass  # a child that just exited
            time.sleep(0.1)

    def probe(self, what: str = "probe") -> str:
        cp = self.sh(f"python3 -I -B /srv/vss_probe.py {what}", check=False, timeout=60)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout.strip()


def writable_block_mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """(mount point, device, source) of every writable mount of a /dev/ block device."""
    out = []
    for line in mountinfo.splitlines():
        f = line.split()
        sep = f.index("-")
        source, opts, sopts = f[sep + 2], f[5].split(","), f[sep + 3].split(",")
        if source.startswith("/dev/") and "ro" not in opts and "ro" not in sopts:
            out.append((f[4], f[2], source))
    return out


@pytest.fixture(scope="module")
def loop_container(
    packages: Packages, deb_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoopRootContainer]:
    need("unshare")
    need("mkfs.ext4")
    tar = cached_root_tar("systemd-root", SYSTEMD_PACKAGES)
    top = tmp_path_factory.mktemp("vss-watchdog")
    store, root, extra = top / "store", top / "root", top / "extra"
    units = extra / "etc/systemd/system"
    (units / "hvtest-vss.service.d").mkdir(parents=True)
    (extra / "srv").mkdir()
    store.mkdir()
    root.mkdir()
    (extra / "srv/vss_probe.py").write_text(PROBE)
    dev_unit = r"sys-devices-virtual-misc-vmbus\x21hv_vss.device"
    shipped = (deb_tree / "lib/systemd/system/hv-vss-daemon.service").read_text()
    assert "WatchdogSec=" in shipped and "ExecStopPost=/usr/sbin/hv_vss_daemon --thaw" in shipped
    (units / "hvsim-vss.service").write_text(
        "[Service]\nType=notify\nExecStart=/usr/bin/hvsim serve --dir /run/hvsim-vss --service vss\n"
    )
    (units / "hvtest-vss.service").write_text(
        derived_unit(
            shipped,
            dev_unit,
            "/usr/sbin/hv_vss_daemon --no-daemon --device /run/hvsim-vss/hv_vss",
            "hvsim-vss.service",
        )
    )
    # Only the interval changes (the shipped 120 s would make the test slow).
    (units / "hvtest-vss.service.d/watchdog.conf").write_text("[Service]\nWatchdogSec=2s\n")
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"]
    argv += [str(store), str(root), str(tar), str(packages.deb), str(packages.sim_deb), str(extra)]
    c = LoopRootContainer(root, argv)
    try:
        # Unmount what nspawn binds from this machine's filesystems.
        for _ in range(10):
            others = [
                m for m in writable_block_mounts(c.sh("cat /proc/1/mountinfo").stdout)
                if m[0] != "/"
            ]
            if not others:
                break
            for mount_point, _dev, _src in reversed(others):
                c.sh(f"umount -l '{mount_point}'", check=False)
        yield c
    finally:
        # Never stop a container whose root may be frozen: its shutdown would hang.
        c.sh("python3 -I -B /srv/vss_probe.py thaw", check=False, timeout=60)
        c.stop()


def test_watchdog_kill_while_frozen_is_thawed_by_exec_stop_post(
    loop_container: LoopRootContainer,
) -> None:
    c = loop_container
    unit = "hvtest-vss.service"
    start(c, "vss")
    pid = int(c.sh(f"systemctl show -p MainPID --value {unit}").stdout)
    assert pid > 0
    # The gate: the daemon sees one writable block filesystem, the loop root...
    mountinfo = c.sh(f"cat /proc/{pid}/mountinfo").stdout  # the daemon's own view
    rw = writable_block_mounts(mountinfo)
    assert len(rw) == 1 and rw[0][0] == "/" and rw[0][1].startswith("7:"), rw
    assert rw[0][2].startswith("/dev/loop"), rw
    # ...and its own plan freezes exactly that.
    listing = c.sh("hv_vss_daemon --list").stdout
    frozen = re.findall(r"^\s+\d+\. (\S+) \((\S+) on (\S+)\)", listing, re.M)
    assert frozen == [("/", "ext4", rw[0][2])], listing
    assert c.probe() == "thawed"

    try:
        cp = c.sh("hvsim vss --dir /run/hvsim-vss freeze", check=False, timeout=120)
        assert cp.returncode == 0 and "FREEZE" in cp.stdout, cp.stdout + cp.stderr
        assert c.probe() == "frozen"
        show = wait_for(c, unit, ("StatusText",), lambda s: "frozen" in s)
        assert re.search(r"frozen \(1 filesystem\) since \d\d:\d\d:\d\d", show), show
        # Stuck for good while frozen: no more pings.
        c.sh(f"kill -STOP {pid}")
        # The watchdog's SIGKILL, then ExecStopPost=; a restart (RestartSec=) only after it.
        show = wait_for(
            c,
            unit,
            ("ExecStopPost", "NRestarts"),
            lambda s: "code=exited" in s or "NRestarts=0" not in s,
            timeout=60,
        )
        assert c.probe() == "thawed", show
        journal = c.sh(f"journalctl --no-pager -u {unit}", check=False).stdout
        assert "Watchdog timeout" in journal, journal[-3000:]
        assert re.search(r"killed, status=9/KILL|code=killed, status=9", journal), journal[-3000:]
        # hv_vss_daemon --thaw's own report (ExecStopPost=, in the unit's journal).
        assert re.search(r"thawed /$", journal, re.M), journal[-3000:]
    finally:
        c.sh("python3 -I -B /srv/vss_probe.py thaw", check=False, timeout=60)
        c.sh(f"kill -CONT {pid}", check=False)
