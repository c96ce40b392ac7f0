# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.vss.mounts: which filesystems a FREEZE covers, and the stacking order.

Synthetic mountinfo, a synthetic sysfs tree in a temporary directory and an
injected stat(): nothing here touches the machine's mounts.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hvdaemons.vss.mounts import Planner, parse_mountinfo

Dev = tuple[int, int]
ROOT: Dev = (254, 0)


class FakeSystem:
    """A mount table, a /sys/dev/block tree and the stat() results to go with them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sysfs = tmp / "sys"
        (self.sysfs / "dev" / "block").mkdir(parents=True)
        self.lines: list[str] = []
        self.stats: dict[str, os.stat_result] = {}
        self.next_id = 20

    def mount(
        self,
        point: str,
        source: str,
        fstype: str = "ext4",
        dev: Dev | None = None,
        *,
        opts: str = "rw,relatime",
        sopts: str = "rw",
        root: str = "/",
        blockdev: bool = True,
    ) -> None:
        dev = dev or (0, self.next_id)
        self.next_id += 1
        esc = point.replace(" ", "\\040")
        self.lines.append(
            f"{self.next_id} 1 {dev[0]}:{dev[1]} {root} {esc} {opts} shared:1 - {fstype} {source} {sopts}"
        )
        if blockdev and source.startswith("/dev/"):
            self.node(source, dev)

    def node(self, path: str, dev: Dev) -> None:
        self.stats[path] = os.stat_result(
            (stat.S_IFBLK | 0o600, 1, os.makedev(0, 6), 1, 0, 0, 0, 0, 0, 0),
            {"st_rdev": os.makedev(*dev)},
        )

    def file(self, path: str, on: Dev, size: int) -> None:
        self.stats[path] = os.stat_result(
            (stat.S_IFREG | 0o600, 2, os.makedev(*on), 1, 0, 0, size, 0, 0, 0), {"st_rdev": 0}
        )

    def block(self, name: str, dev: Dev, *, parent: str | None = None) -> Path:
        """/sys/devices/virtual/block/<name> (or a partition under parent) and its dev/block link."""
        base = self.sysfs / "devices" / "virtual" / "block"
        d = base / parent / name if parent else base / name
        d.mkdir(parents=True, exist_ok=True)
        if parent:
            (d / "partition").write_text("1\n")
        (self.sysfs / "dev" / "block" / f"{dev[0]}:{dev[1]}").symlink_to(d)
        return d

    def loop(self, name: str, dev: Dev, backing: str, sectors: int, *, offset: int = 0) -> Path:
        d = self.block(name, dev)
        (d / "loop").mkdir()
        (d / "loop" / "backing_file").write_text(backing + "\n")
        (d / "loop" / "offset").write_text(f"{offset}\n")
        (d / "loop" / "sizelimit").write_text("0\n")
        (d / "size").write_text(f"{sectors}\n")
        return d

    def slave(self, holder: str, slave: str) -> None:
        base = self.sysfs / "devices" / "virtual" / "block"
        (base / holder / "slaves").mkdir(exist_ok=True)
        (base / holder / "slaves" / slave).symlink_to(base / slave)

    def stat(self, path: str) -> os.stat_result:
        try:
            return self.stats[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    def planner(self, *, sysfs: bool = True) -> Planner:
        info = self.tmp / "mountinfo"
        info.write_text("\n".join(self.lines) + "\n")
        return Planner(str(info), str(self.sysfs if sysfs else self.tmp / "nosys"), self.stat)

    def order(self) -> list[str]:
        return [t.mount_point for t in self.planner().plan().targets]

    def reasons(self) -> dict[str, str]:
        return {
            d.mount.mount_point: d.reason for d in self.planner().plan().decisions if not d.freeze
        }


@pytest.fixture
def fs(tmp_path: Path) -> FakeSystem:
    f = FakeSystem(tmp_path)
    f.mount("/", "/dev/vda", dev=ROOT)
    f.block("vda", ROOT)
    f.mount("/proc", "proc", "proc")
    f.mount("/sys", "sysfs", "sysfs")
    f.mount("/run", "tmpfs", "tmpfs")
    return f


def test_parse_mountinfo_fields_escapes_and_optional_fields() -> None:
    data = (
        b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n"
        b"37 35 0:21 / /proc rw - proc proc rw\n"
        b"garbage line\n"
    )
    m = parse_mountinfo(data)
    assert len(m) == 2
    assert (m[0].mount_id, m[0].parent_id, m[0].dev) == (36, 35, (98, 0))
    assert m[0].root == "/mnt1" and m[0].mount_point == "/mnt/with space"
    assert m[0].fstype == "ext3" and m[0].source == "/dev/root"
    assert m[0].mount_options == ("rw", "noatime")
    assert m[0].super_options == ("rw", "errors=continue")
    assert not m[0].readonly
    assert m[1].index == 1


def test_reference_rules_dev_source_readonly_vfat_dedupe_root_last(fs: FakeSystem) -> None:
    fs.mount("/boot/efi", "/dev/vda1", "vfat", (254, 1))
    fs.mount("/home", "/dev/vdb", "xfs", (254, 16))
    fs.mount("/mnt/ro", "/dev/vdc", "ext4", (254, 32), opts="ro,relatime")
    fs.mount("/mnt/sbro", "/dev/vdd", "ext4", (254, 48), sopts="ro")
    fs.mount("/srv", "/dev/vdb", "xfs", (254, 16), root="/srv")  # bind of part of /home
    fs.mount("/net", "server:/export", "nfs4", (0, 60))
    fs.mount("/data", "/dev/vde", "btrfs", (0, 61))  # anonymous device, block source
    for name, dev in (("vda1", (254, 1)), ("vdb", (254, 16)), ("vde", (8, 0))):
        fs.block(name, dev)
    fs.node("/dev/vde", (8, 0))
    assert fs.order() == ["/home", "/data", "/"]
    r = fs.reasons()
    assert r["/boot/efi"] == "vfat cannot be frozen"
    assert r["/proc"] == r["/net"] == "not a /dev/ block device"
    assert r["/mnt/ro"].startswith("read-only") and r["/mnt/sbro"].startswith("read-only")
    assert r["/srv"] == "same filesystem as /home"


def test_root_is_primary_of_its_superblock_and_frozen_last(fs: FakeSystem) -> None:
    fs.mount("/var/lib/x", "/dev/vda", "ext4", ROOT, root="/var/lib/x")
    fs.mount("/home", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    plan = fs.planner().plan()
    assert [t.mount_point for t in plan.targets] == ["/home", "/"]
    assert plan.targets[-1].is_root
    assert fs.reasons()["/var/lib/x"] == "same filesystem as /"


def test_stacked_loops_freeze_top_down_whatever_the_mount_order(fs: FakeSystem) -> None:
    # inner is on a loop file on outer, whose loop file is on the root fs.
    fs.mount("/mnt/inner", "/dev/loop1", "ext4", (7, 1))
    fs.mount("/mnt/outer", "/dev/loop0", "xfs", (7, 0))
    fs.mount("/mnt/plain", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    fs.loop("loop0", (7, 0), "/var/img/outer.img", 2048)
    fs.file("/var/img/outer.img", ROOT, 2048 * 512)
    fs.loop("loop1", (7, 1), "/mnt/outer/inner.img", 1000)
    fs.file("/mnt/outer/inner.img", (7, 0), 1000 * 512 + 100)  # a partial sector is not used
    assert fs.order() == ["/mnt/inner", "/mnt/outer", "/mnt/plain", "/"]
    plan = fs.planner().plan()
    why = {d.mount.mount_point: d.reason for d in plan.decisions if d.freeze}
    assert why["/mnt/inner"].startswith("before /, /mnt/outer (")
    assert why["/mnt/outer"].startswith("before / (")
    text = plan.describe()
    assert "1. /mnt/inner (ext4 on /dev/loop1): before /, /mnt/outer" in text
    assert "/proc (proc on proc): not a /dev/ block device" in text


def test_transitive_holder_through_a_skipped_filesystem(fs: FakeSystem) -> None:
    # top's file is on a read-only middle fs whose file is on /data: top must
    # still precede /data, though middle itself is not frozen.
    fs.mount("/data", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    fs.mount("/mnt/middle", "/dev/loop2", "ext4", (7, 2), opts="ro")
    fs.mount("/mnt/top", "/dev/loop3", "ext4", (7, 3))
    fs.loop("loop2", (7, 2), "/data/middle.img", 64)
    fs.file("/data/middle.img", (254, 16), 64 * 512)
    fs.loop("loop3", (7, 3), "/mnt/middle/top.img", 32)
    fs.file("/mnt/middle/top.img", (7, 2), 32 * 512)
    assert fs.order() == ["/mnt/top", "/data", "/"]


def test_partition_of_a_loop_and_device_mapper_over_a_loop(fs: FakeSystem) -> None:
    fs.mount("/home", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    fs.loop("loop4", (7, 4), "/home/disk.img", 4096)
    fs.file("/home/disk.img", (254, 16), 4096 * 512)
    fs.block("loop4p1", (259, 0), parent="loop4")
    fs.mount("/mnt/part", "/dev/loop4p1", "ext4", (259, 0))
    fs.loop("loop5", (7, 5), "/home/lvm.img", 128)
    fs.file("/home/lvm.img", (254, 16), 128 * 512)
    fs.block("dm-0", (253, 0))
    fs.slave("dm-0", "loop5")
    fs.mount("/mnt/lv", "/dev/mapper/vg-lv", "xfs", (253, 0))
    assert fs.order() == ["/mnt/part", "/mnt/lv", "/home", "/"]


def test_root_on_a_loop_goes_before_the_filesystem_holding_its_file(fs: FakeSystem) -> None:
    # A live system: / is a loop file on the medium mounted below it.
    fs.lines.clear()
    fs.mount("/", "/dev/loop6", "ext4", (7, 6))
    fs.mount("/run/medium", "/dev/vdc", "ext4", (254, 32))
    fs.block("vdc", (254, 32))
    fs.loop("loop6", (7, 6), "/run/medium/root.img", 8)
    fs.file("/run/medium/root.img", (254, 32), 8 * 512)
    assert fs.order() == ["/", "/run/medium"]


def test_unresolvable_loops_are_left_alone_like_the_reference(fs: FakeSystem) -> None:
    fs.mount("/mnt/gone", "/dev/loop0", "ext4", (7, 0))
    fs.loop("loop0", (7, 0), "/elsewhere/x.img", 8)  # not visible in this namespace
    fs.mount("/mnt/deleted", "/dev/loop1", "ext4", (7, 1))
    fs.loop("loop1", (7, 1), "/var/y.img (deleted)", 8)
    fs.mount("/mnt/wrong", "/dev/loop2", "ext4", (7, 2))
    fs.loop("loop2", (7, 2), "/var/z.img", 8)
    fs.file("/var/z.img", ROOT, 999 * 512)  # another file of that name
    assert fs.order() == ["/"]
    r = fs.reasons()
    assert "is not visible here" in r["/mnt/gone"]
    assert "was deleted" in r["/mnt/deleted"]
    assert "does not match /dev/loop2 in size" in r["/mnt/wrong"]
    assert all("left alone like the reference" in r[m] for m in ("/mnt/gone", "/mnt/deleted"))


def test_circular_stacking_is_left_alone(fs: FakeSystem) -> None:
    fs.mount("/mnt/x", "/dev/loop0", "ext4", (7, 0))
    fs.mount("/mnt/y", "/dev/loop1", "ext4", (7, 1))
    fs.loop("loop0", (7, 0), "/mnt/y/x.img", 8)
    fs.file("/mnt/y/x.img", (7, 1), 8 * 512)
    fs.loop("loop1", (7, 1), "/mnt/x/y.img", 8)
    fs.file("/mnt/x/y.img", (7, 0), 8 * 512)
    assert fs.order() == ["/"]
    assert "circle" in fs.reasons()["/mnt/x"]


def test_loop_over_a_block_device_and_btrfs_style_file_device(fs: FakeSystem) -> None:
    fs.mount("/mnt/raw", "/dev/loop0", "ext4", (7, 0))
    fs.loop("loop0", (7, 0), "/dev/vdd", 0)
    fs.node("/dev/vdd", (254, 48))
    fs.block("vdd", (254, 48))
    # A file on btrfs reports its subvolume's device, not the superblock's.
    fs.mount("/srv", "/dev/vde", "btrfs", (0, 70))
    fs.node("/dev/vde", (254, 64))
    fs.block("vde", (254, 64))
    fs.mount("/mnt/img", "/dev/loop1", "ext4", (7, 1))
    fs.loop("loop1", (7, 1), "/srv/sub/img.raw", 16)
    fs.file("/srv/sub/img.raw", (0, 71), 16 * 512)
    assert fs.order() == ["/mnt/raw", "/mnt/img", "/srv", "/"]


def test_without_sysfs_everything_is_independent_and_noted(fs: FakeSystem) -> None:
    fs.mount("/mnt/inner", "/dev/loop1", "ext4", (7, 1))
    fs.mount("/mnt/outer", "/dev/loop0", "ext4", (7, 0))
    plan = fs.planner(sysfs=False).plan()
    assert [t.mount_point for t in plan.targets] == ["/mnt/inner", "/mnt/outer", "/"]
    assert any("loop devices cannot be seen" in n for n in plan.notes)
    assert plan.describe().startswith("note: ")


def test_plan_is_cached_until_the_mount_table_changes(fs: FakeSystem) -> None:
    p = fs.planner()
    first = p.plan()
    assert p.plan() is first
    fs.mount("/home", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    Path(p.mountinfo).write_text("\n".join(fs.lines) + "\n")
    second = p.plan()
    assert second is not first
    assert [t.mount_point for t in second.targets] == ["/home", "/"]


def test_targets_carry_every_mount_id_of_their_superblock(fs: FakeSystem) -> None:
    fs.mount("/home", "/dev/vdb", "ext4", (254, 16))
    fs.mount("/home2", "/dev/vdb", "ext4", (254, 16))
    fs.block("vdb", (254, 16))
    home = fs.planner().plan().targets[0]
    assert home.mount_point == "/home"
    assert home.mount_ids is not None and len(home.mount_ids) == 2


@pytest.mark.parametrize(
    ("field", "point"),
    [
        (b"/mnt/plain", "/mnt/plain"),
        (b"/mnt/a\\040b\\011c\\012d\\134e", "/mnt/a b\tc\nd\\e"),
        (b"/mnt/\\134040", "/mnt/\\040"),  # an escaped backslash, then digits
        (b"/mnt/\\303\\251", "/mnt/\xe9"),  # the bytes of UTF-8 "é"
        (b"/mnt/\\377", "/mnt/\udcff"),  # not UTF-8: surrogateescape, as os.fsdecode
        (b"/mnt/\\9x\\04", "/mnt/\\9x\\04"),  # not an escape: kept as is
        (b"/mnt/\\777", "/mnt/\\777"),  # above a byte: kept as is
        (b"/mnt/end\\", "/mnt/end\\"),
    ],
)
def test_mount_point_escapes(field: bytes, point: str) -> None:
    line = b"36 35 98:0 / " + field + b" rw - ext4 /dev/vdb rw\n"
    [m] = parse_mountinfo(line)
    assert m.mount_point == point
