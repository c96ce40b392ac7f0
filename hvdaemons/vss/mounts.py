# SPDX-License-Identifier: GPL-2.0-only
"""Which filesystems a VSS freeze covers, and in which order.

Mirrors the selection in vss_operate() of tools/hv/hv_vss_daemon.c: a
mount is frozen if its source is under /dev/, it is read-write,
it is not vfat, and `/` comes last.  The reference also skips every
filesystem whose block device sits on a loop device, because freezing the
filesystem holding the loop's backing file first would deadlock.  Here the
stacking is resolved instead (sysfs `loop/backing_file` and `slaves/`), so a
filesystem on a loop device is frozen *before* the filesystem holding its
backing file (top-down) and thawed after it.  Only a loop whose backing file
cannot be pinned down is still skipped.

Filesystems are de-duplicated by superblock (mountinfo's major:minor), so
bind mounts and btrfs subvolumes are frozen once; the reference relies on
EBUSY/EINVAL for that, which the freezer still tolerates.

Reads /proc/self/mountinfo (paths and sysfs root injectable); nothing here
freezes anything.
"""

from __future__ import annotations

import os
import select
import stat

from ..errors import HvError
from ..value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Callable

MOUNTINFO = "/proc/self/mountinfo"
SYSFS = "/sys"

Dev = tuple[int, int]

_OCTAL_DIGITS = frozenset(b"01234567")


def _unescape(field: bytes) -> str:
    # mountinfo writes blanks, tabs, newlines and backslashes as \ooo
    # (fs/proc_namespace.c, mangle()).  Decoded by hand: re would cost the
    # daemon 0.3-0.4 MiB of RSS for its life (bench_rss.py --imports).
    if b"\\" not in field:
        return os.fsdecode(field)
    out = bytearray()
    start = 0
    while True:
        i = field.find(b"\\", start)
        if i < 0:
            out += field[start:]
            return os.fsdecode(bytes(out))
        out += field[start:i]
        code = field[i + 1 : i + 4]
        if len(code) == 3 and _OCTAL_DIGITS.issuperset(code) and int(code, 8) < 256:
            out.append(int(code, 8))
            start = i + 4
        else:
            out += b"\\"
            start = i + 1


class Mount(Value):
    """One line of /proc/self/mountinfo; index: its position in the file (mount order)."""

    __slots__ = (
        "index",
        "mount_id",
        "parent_id",
        "major",
        "minor",
        "root",
        "mount_point",
        "mount_options",
        "fstype",
        "source",
        "super_options",
    )

    def __init__(
        self,
        index: int,
        mount_id: int,
        parent_id: int,
        major: int,
        minor: int,
        root: str,
        mount_point: str,
        mount_options: tuple[str, ...],
        fstype: str,
        source: str,
        super_options: tuple[str, ...],
    ) -> None:
        self.index = index
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.major = major
        self.minor = minor
        self.root = root
        self.mount_point = mount_point
        self.mount_options = mount_options
        self.fstype = fstype
        self.source = source
        self.super_options = super_options

    @property
    def dev(self) -> Dev:
        """The superblock's device number: equal for every mount of one filesystem."""
        return (self.major, self.minor)

    @property
    def readonly(self) -> bool:
        # /proc/mounts, which the reference reads, says "ro" if either the
        # mount or the superblock is read-only.
        return "ro" in self.mount_options or "ro" in self.super_options


def parse_mountinfo(data: bytes) -> list[Mount]:
    """Parse the text of /proc/<pid>/mountinfo (see proc(5))."""
    mounts: list[Mount] = []
    for line in data.splitlines():
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            major, minor = fields[2].split(b":")
            mounts.append(
                Mount(
                    index=len(mounts),
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    mount_options=tuple(os.fsdecode(fields[5]).split(",")),
                    fstype=_unescape(fields[sep + 1]),
                    source=_unescape(fields[sep + 2]),
                    super_options=tuple(os.fsdecode(fields[sep + 3]).split(","))
                    if len(fields) > sep + 3
                    else (),
                )
            )
        except (ValueError, IndexError):
            continue  # a line we cannot read is not one we can freeze
    return mounts


class Target(Value):
    """One filesystem (superblock) to freeze, reached through mount_point.

    mount_ids: every mount of this superblock; the freezer checks that the
    opened path still leads to one of them (None: don't check).
    """

    __slots__ = ("mount_point", "dev", "fstype", "source", "mount_ids", "is_root")

    def __init__(
        self,
        mount_point: str,
        dev: Dev,
        fstype: str = "",
        source: str = "",
        mount_ids: frozenset[int] | None = None,
        is_root: bool = False,
    ) -> None:
        self.mount_point = mount_point
        self.dev = dev
        self.fstype = fstype
        self.source = source
        self.mount_ids = mount_ids
        self.is_root = is_root


class Decision(Value):
    """What happens to one mount, and why (what --list prints).

    order: the 1-based position in the freeze order of a frozen one.
    """

    __slots__ = ("mount", "freeze", "reason", "order")

    def __init__(self, mount: Mount, freeze: bool, reason: str, order: int = 0) -> None:
        self.mount = mount
        self.freeze = freeze
        self.reason = reason
        self.order = order


class Plan(Value):
    __slots__ = ("targets", "decisions", "notes")

    def __init__(
        self,
        targets: tuple[Target, ...],
        decisions: tuple[Decision, ...],
        notes: tuple[str, ...] = (),
    ) -> None:
        self.targets = targets
        self.decisions = decisions
        self.notes = notes

    def describe(self) -> str:
        """Human-readable dry run: freeze order, then every other mount with its reason."""
        out = []
        for note in self.notes:
            out.append(f"note: {note}")
        frozen = sorted((d for d in self.decisions if d.freeze), key=lambda d: d.order)
        if frozen:
            out.append("would freeze, in this order (thaw is the reverse):")
            for d in frozen:
                m = d.mount
                out.append(f"  {d.order}. {m.mount_point} ({m.fstype} on {m.source}): {d.reason}")
        else:
            out.append("would freeze nothing")
        skipped = [d for d in self.decisions if not d.freeze]
        if skipped:
            out.append("skipped:")
            for d in skipped:
                m = d.mount
                out.append(f"  {m.mount_point} ({m.fstype} on {m.source}): {d.reason}")
        return "\n".join(out)


class LoopDevice(Value):
    """A loop device found under a block device, as sysfs describes it."""

    __slots__ = ("name", "backing_file", "offset", "sizelimit", "sectors")

    def __init__(
        self, name: str, backing_file: str, offset: int, sizelimit: int, sectors: int
    ) -> None:
        self.name = name
        self.backing_file = backing_file
        self.offset = offset
        self.sizelimit = sizelimit
        self.sectors = sectors


class _Unresolved(HvError):
    """The storage under a filesystem cannot be pinned down: leave it alone."""


class _Group:
    """The mounts of one superblock."""

    __slots__ = ("dev", "mounts")

    def __init__(self, dev: Dev) -> None:
        self.dev = dev
        self.mounts: list[Mount] = []

    @property
    def primary(self) -> Mount:
        # Freeze through "/" if the root filesystem is among them (it must
        # come last), else through a mount of the whole filesystem, else the
        # first mount.
        for m in self.mounts:
            if m.mount_point == "/":
                return m
        for m in self.mounts:
            if m.root == "/":
                return m
        return self.mounts[0]


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return os.fsdecode(f.read()).rstrip("\n")


def _read_int(path: str) -> int:
    return int(_read_text(path) or 0)


class Planner:
    """Builds a Plan from the mount table, sysfs and stat()."""

    def __init__(
        self,
        mountinfo: str = MOUNTINFO,
        sysfs: str = SYSFS,
        stat_fn: Callable[[str], os.stat_result] = os.stat,
        *,
        cache: bool = True,
    ) -> None:
        self.mountinfo = mountinfo
        self.sysfs = sysfs
        self._stat = stat_fn
        self._cache = cache
        self._last: tuple[bytes, Plan] | None = None
        self._watch: select.poll | None = None
        self._watch_fd = -1

    def watch(self) -> None:
        """Keep the mount table open and let the kernel say when it changes.

        /proc/*/mountinfo polls POLLPRI|POLLERR once after each change of the
        mount namespace (proc(5)), so an unchanged table costs one poll()
        instead of a read and parse on every FREEZE.  Only for procfs: a
        regular file never reports a change.
        """
        if self._watch_fd < 0:
            self._watch_fd = os.open(self.mountinfo, os.O_RDONLY | os.O_CLOEXEC)
            self._watch = select.poll()
            self._watch.register(self._watch_fd, select.POLLPRI)

    def _read_mountinfo(self) -> bytes:
        with open(self.mountinfo, "rb") as f:
            return f.read()

    def plan(self, mounts: Sequence[Mount] | None = None) -> Plan:
        """The plan for the current mount table (or the one given)."""
        if mounts is not None:
            return _Planning(self, list(mounts)).run()
        # An unchanged mount table gives the same plan: a mounted loop
        # device cannot change its backing file, so only mountinfo matters.
        # Saves the sysfs walk on the FREEZE path.
        watching = self._cache and self._last is not None and self._watch is not None
        if watching and self._watch is not None and not self._watch.poll(0):
            assert self._last is not None
            return self._last[1]
        data = self._read_mountinfo()
        if self._cache and self._last is not None and self._last[0] == data:
            return self._last[1]
        plan = _Planning(self, parse_mountinfo(data)).run()
        if self._cache:
            self._last = (data, plan)
        return plan

    # -- sysfs ---------------------------------------------------------------

    def has_block_sysfs(self) -> bool:
        return os.path.isdir(os.path.join(self.sysfs, "dev", "block"))

    def block_device(self, mount: Mount) -> Dev | None:
        """The block device a mount's source names (st_rdev), else its superblock's device."""
        try:
            st = self._stat(mount.source)
        except OSError:
            st = None
        if st is not None and stat.S_ISBLK(st.st_mode):
            return (os.major(st.st_rdev), os.minor(st.st_rdev))
        if mount.major != 0:  # major 0: an anonymous device (btrfs, virtual fs)
            return mount.dev
        return None

    def loops_under(self, dev: Dev) -> list[LoopDevice]:
        """Every loop device the block device dev is (or sits on), through partitions and slaves/."""
        found: list[LoopDevice] = []
        start = os.path.join(self.sysfs, "dev", "block", f"{dev[0]}:{dev[1]}")
        if not os.path.exists(start):
            return found
        seen: set[str] = set()
        pending = [os.path.realpath(start)]
        while pending:
            d = pending.pop()
            if d in seen:
                continue
            seen.add(d)
            if os.path.isdir(os.path.join(d, "loop")):
                found.append(self._loop(d))
                continue
            if os.path.exists(os.path.join(d, "partition")):
                # A partition of a loop device (loop0p1) has no loop/ of its own.
                pending.append(os.path.dirname(d))
            slaves = os.path.join(d, "slaves")
            try:
                names = sorted(os.listdir(slaves))
            except OSError:
                names = []
            pending.extend(os.path.realpath(os.path.join(slaves, n)) for n in names)
        return found

    def _loop(self, d: str) -> LoopDevice:
        loop = os.path.join(d, "loop")
        try:
            backing = _read_text(os.path.join(loop, "backing_file"))
            offset = _read_int(os.path.join(loop, "offset"))
            sizelimit = _read_int(os.path.join(loop, "sizelimit"))
            sectors = _read_int(os.path.join(d, "size"))
        except (OSError, ValueError) as e:
            raise _Unresolved(f"cannot read {loop}: {e}") from e
        return LoopDevice(os.path.basename(d), backing, offset, sizelimit, sectors)


class _Planning:
    """One planning pass over a mount table."""

    def __init__(self, planner: Planner, mounts: list[Mount]) -> None:
        self.p = planner
        self.mounts = mounts
        self.by_dev: dict[Dev, list[Mount]] = {}
        for m in mounts:
            self.by_dev.setdefault(m.dev, []).append(m)
        self.memo: dict[Dev, frozenset[Dev]] = {}
        self.notes: list[str] = []

    def run(self) -> Plan:
        reasons: dict[int, str] = {}
        groups: dict[Dev, _Group] = {}
        for m in self.mounts:
            if not m.source.startswith("/dev/"):
                reasons[m.index] = "not a /dev/ block device"
            elif m.readonly:
                reasons[m.index] = "read-only: nothing to flush"
            elif m.fstype == "vfat":
                reasons[m.index] = "vfat cannot be frozen"
            else:
                groups.setdefault(m.dev, _Group(m.dev)).mounts.append(m)

        if groups and not self.p.has_block_sysfs():
            self.notes.append(
                f"{self.p.sysfs}/dev/block is missing: loop devices cannot be seen, "
                "every filesystem is treated as independent"
            )

        deps: dict[Dev, frozenset[Dev]] = {}
        why: dict[Dev, str] = {}
        for dev, g in groups.items():
            primary = g.primary
            for m in g.mounts:
                if m is not primary:
                    reasons[m.index] = f"same filesystem as {primary.mount_point}"
            try:
                deps[dev] = self.sb_deps(dev, ())
            except _Unresolved as e:
                reasons[primary.index] = f"on a loop device, but {e}: left alone like the reference"
                continue
            holders = [groups[h].primary.mount_point for h in deps[dev] if h in groups]
            if holders:
                why[dev] = (
                    f"before {', '.join(sorted(holders))} (its loop device's file is stored there)"
                )

        order = self.order({d: deps[d] & frozenset(deps) for d in deps}, groups)
        targets: list[Target] = []
        decisions: dict[int, Decision] = {}
        for n, dev in enumerate(order, 1):
            g = groups[dev]
            m = g.primary
            is_root = any(x.mount_point == "/" for x in g.mounts)
            targets.append(
                Target(
                    mount_point=m.mount_point,
                    dev=dev,
                    fstype=m.fstype,
                    source=m.source,
                    mount_ids=frozenset(x.mount_id for x in self.by_dev.get(dev, [])),
                    is_root=is_root,
                )
            )
            reason = why.get(dev, "root filesystem: last" if is_root else "mount order")
            decisions[m.index] = Decision(m, True, reason, n)
        for dev in deps:
            if dev not in order:
                m = groups[dev].primary
                reasons[m.index] = "circular loop-device stacking: left alone"
        result = []
        for m in self.mounts:
            d = decisions.get(m.index)
            result.append(d if d is not None else Decision(m, False, reasons.get(m.index, "")))
        return Plan(tuple(targets), tuple(result), tuple(self.notes))

    # -- stacking ------------------------------------------------------------

    def sb_deps(self, dev: Dev, stack: tuple[Dev, ...]) -> frozenset[Dev]:
        """Superblocks holding (transitively) the storage of superblock dev."""
        if dev in self.memo:
            return self.memo[dev]
        if dev in stack:
            raise _Unresolved("its loop devices are stacked in a circle")
        mounts = self.by_dev.get(dev, [])
        blk = next((b for b in (self.p.block_device(m) for m in mounts) if b is not None), None)
        result: frozenset[Dev] = frozenset()
        if blk is not None:
            result = self.block_deps(blk, (*stack, dev), set())
        self.memo[dev] = result
        return result

    def block_deps(self, blk: Dev, stack: tuple[Dev, ...], seen: set[Dev]) -> frozenset[Dev]:
        if blk in seen:
            raise _Unresolved("its loop devices are stacked in a circle")
        seen.add(blk)
        out: set[Dev] = set()
        for loop in self.p.loops_under(blk):
            path = loop.backing_file
            if path.endswith(" (deleted)"):
                raise _Unresolved(f"the backing file of /dev/{loop.name} was deleted")
            try:
                st = self.p._stat(path)
            except OSError as e:
                raise _Unresolved(
                    f"the backing file {path} of /dev/{loop.name} is not visible here "
                    f"({e.strerror})"
                ) from e
            if stat.S_ISBLK(st.st_mode):
                out |= self.block_deps((os.major(st.st_rdev), os.minor(st.st_rdev)), stack, seen)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _Unresolved(f"the backing file {path} of /dev/{loop.name} is not a file")
            size = st.st_size - loop.offset
            if loop.sizelimit:
                size = min(size, loop.sizelimit)
            if size < 0 or size >> 9 != loop.sectors:
                # Another file at that path (other mount namespace, replaced
                # file): the real holder is unknown.
                raise _Unresolved(
                    f"{path} does not match /dev/{loop.name} in size, so it may not be its backing file"
                )
            host = self.host_of(path, (os.major(st.st_dev), os.minor(st.st_dev)))
            if host is None:
                raise _Unresolved(f"no mount holds {path}")
            out.add(host)
            out |= self.sb_deps(host, stack)
        return frozenset(out)

    def host_of(self, path: str, st_dev: Dev) -> Dev | None:
        """The superblock holding path: by device number, else (btrfs subvolumes) by path."""
        if st_dev in self.by_dev:
            return st_dev
        best: Mount | None = None
        for m in self.mounts:
            mp = m.mount_point
            inside = path == mp or path.startswith(mp.rstrip("/") + "/")
            if inside and (best is None or len(mp) >= len(best.mount_point)):
                best = m
        return best.dev if best is not None else None

    # -- order -----------------------------------------------------------------

    @staticmethod
    def order(deps: dict[Dev, frozenset[Dev]], groups: dict[Dev, _Group]) -> list[Dev]:
        """Topological order: a filesystem before every filesystem holding its storage.

        Among the ones free to go, mount order, with the root filesystem last
        (as the reference does: the daemon and most tools live there).
        """
        waiting_on: dict[Dev, set[Dev]] = {d: set() for d in deps}
        for d, holders in deps.items():
            for h in holders:
                if h != d:
                    waiting_on[h].add(d)  # h may freeze only once d is frozen

        def key(d: Dev) -> tuple[bool, int]:
            g = groups[d]
            return (any(m.mount_point == "/" for m in g.mounts), g.primary.index)

        done: list[Dev] = []
        left = set(deps)
        while left:
            ready = [d for d in left if not (waiting_on[d] & left)]
            if not ready:
                break  # a cycle: those are left out
            nxt = min(ready, key=key)
            done.append(nxt)
            left.discard(nxt)
        return done
