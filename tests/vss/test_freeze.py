# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.vss.freeze and the VSS handler, with a recording Freezer.

The Freezer is the one injected seam: it records FIFREEZE/FITHAW calls and
answers with the kernel's errnos (EBUSY on a second freeze, EINVAL on thawing
a thawed filesystem), so rollback, order, held logging, the deadline and the
state file are checked without freezing anything real.  The real freezer is
exercised end to end in test_e2e.py.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvdaemons import log as hvlog
from hvdaemons.errors import ProtocolError
from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus
from hvdaemons.vss.daemon import VssHandler
from hvdaemons.vss.freeze import FreezeEngine, Marker, NotReached
from hvdaemons.vss.mounts import Planner, Target
from hvsim.protocol import vss as sim_vss

Event = tuple[str, str]


class RecordingFreezer:
    """Behaves like FIFREEZE/FITHAW on the kernel, and records every call."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.frozen: set[str] = set()
        self.fail: dict[tuple[str, str], int] = {}
        self.unreachable: set[str] = set()
        self.marker: Marker | None = None
        self.marker_seen: list[list[Target] | None] = []

    def freeze(self, target: Target) -> None:
        mp = target.mount_point
        self.events.append(("freeze", mp))
        if self.marker is not None:
            self.marker_seen.append(self.marker.read())
        if mp in self.unreachable:
            raise NotReached(f"{mp} now leads to another mount")
        err = self.fail.get(("freeze", mp))
        if err:
            raise OSError(err, os.strerror(err))
        if mp in self.frozen:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self.frozen.add(mp)

    def thaw(self, target: Target) -> None:
        mp = target.mount_point
        self.events.append(("thaw", mp))
        err = self.fail.get(("thaw", mp))
        if err:
            raise OSError(err, os.strerror(err))
        if mp not in self.frozen:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.frozen.discard(mp)


class EventLog(hvlog.Capture):
    """The daemon's log lines land in the event list, in order, as stderr shows them."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__(hvlog.INFO)  # the daemon's level without -d
        self.events = events

    def emit(self, name: str, level: int, message: str) -> None:
        self.events.append(("log", f"<{level}>Hyper-V VSS: {message}"))


MOUNTINFO = """\
20 1 254:0 / / rw - ext4 /dev/vda rw
21 20 0:5 / /proc rw - proc proc rw
22 20 254:16 / /mnt/a rw - ext4 /dev/vdb rw
23 20 254:32 / /mnt/b rw - xfs /dev/vdc rw
24 20 254:48 / /mnt/c rw - ext4 /dev/vdd rw
25 20 254:16 / /mnt/a-again rw - ext4 /dev/vdb rw
"""
ORDER = ["/mnt/a", "/mnt/b", "/mnt/c", "/"]


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def logging_to_events(events: list[Event], log_setup: None) -> Iterator[None]:
    """The daemon's logging (hvdaemons.log, hold() and release() included), into events."""
    with EventLog(events):
        yield
        hvlog.release()


@pytest.fixture
def alarm() -> Iterator[None]:
    old = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def planner(tmp_path: Path) -> Planner:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    sysfs = tmp_path / "sys"
    (sysfs / "dev" / "block").mkdir(parents=True)  # a sysfs without loop devices
    stats = {}
    for n, dev in (("vda", (254, 0)), ("vdb", (254, 16)), ("vdc", (254, 32)), ("vdd", (254, 48))):
        stats[f"/dev/{n}"] = os.stat_result(
            (0o060600, 1, 6, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": os.makedev(*dev)}
        )

    def fake_stat(path: str) -> os.stat_result:
        try:
            return stats[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    return Planner(str(info), str(sysfs), fake_stat)


def engine(
    planner: Planner,
    freezer: RecordingFreezer,
    tmp_path: Path,
    **kw: object,
) -> FreezeEngine:
    marker = Marker(str(tmp_path / "frozen"))
    freezer.marker = marker
    return FreezeEngine(planner, freezer, marker=marker, **kw)  # type: ignore[arg-type]


def calls(events: list[Event], kind: str) -> list[str]:
    return [mp for k, mp in events if k == kind]


def test_freeze_in_plan_order_thaw_in_reverse(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path)
    out = e.freeze()
    assert out.ok and [t.mount_point for t in out.done] == ORDER
    assert calls(events, "freeze") == ORDER  # the bind mount of /mnt/a is not frozen twice
    assert f.frozen == set(ORDER)
    out = e.thaw()
    assert out.ok
    assert calls(events, "thaw") == list(reversed(ORDER))
    assert f.frozen == set()


def test_first_failure_thaws_what_was_frozen_and_fails(
    planner: Planner, events: list[Event], tmp_path: Path, logging_to_events: None
) -> None:
    f = RecordingFreezer(events)
    f.fail[("freeze", "/mnt/c")] = errno.EIO
    e = engine(planner, f, tmp_path)
    out = e.freeze()
    assert not out.ok
    assert [(k, mp) for k, mp in events if k != "log"] == [
        ("freeze", "/mnt/a"),
        ("freeze", "/mnt/b"),
        ("freeze", "/mnt/c"),
        ("thaw", "/mnt/b"),
        ("thaw", "/mnt/a"),
    ]
    assert f.frozen == set() and e.frozen == []
    logs = calls(events, "log")
    assert logs == ["<3>Hyper-V VSS: FREEZE of /mnt/c failed; error:5 Input/output error"]
    # The failure is logged only once everything is thawed.
    assert events.index(("thaw", "/mnt/a")) < events.index(("log", logs[0]))
    assert Marker(str(tmp_path / "frozen")).read() is None


def test_nothing_is_logged_between_the_first_freeze_and_the_last_thaw(
    planner: Planner, events: list[Event], tmp_path: Path, logging_to_events: None
) -> None:
    f = RecordingFreezer(events)
    f.fail[("freeze", "/mnt/b")] = errno.EOPNOTSUPP  # logs "cannot be frozen" while frozen
    e = engine(planner, f, tmp_path)
    h = VssHandler(e)
    reply = h.handle(sim_vss.encode_request(vss.VssOp.FREEZE))
    assert reply is not None and sim_vss.decode_status_reply(reply) == HvStatus.S_OK
    assert calls(events, "log") == []  # held in memory
    reply = h.handle(sim_vss.encode_request(vss.VssOp.THAW))
    assert reply is not None and sim_vss.decode_status_reply(reply) == HvStatus.S_OK
    last_thaw = max(i for i, (k, _) in enumerate(events) if k == "thaw")
    first_freeze = min(i for i, (k, _) in enumerate(events) if k == "freeze")
    assert not [ev for ev in events[first_freeze:last_thaw] if ev[0] == "log"]
    assert calls(events, "log") == [
        "<6>Hyper-V VSS: /mnt/b (xfs) cannot be frozen: Operation not supported; skipped",
        "<6>Hyper-V VSS: VSS: op=FREEZE: succeeded",
        "<6>Hyper-V VSS: VSS: op=THAW: succeeded",
    ]
    assert calls(events, "thaw") == ["/", "/mnt/c", "/mnt/a"]


def test_ebusy_counts_as_frozen_and_is_thawed_like_the_reference(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    f.frozen.add("/mnt/b")  # frozen by someone else
    e = engine(planner, f, tmp_path)
    assert e.freeze().ok
    assert e.thaw().ok
    assert f.frozen == set()


def test_a_path_leading_elsewhere_is_skipped_not_frozen(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    f.unreachable.add("/mnt/c")
    e = engine(planner, f, tmp_path)
    out = e.freeze()
    assert out.ok and [t.mount_point for t, _ in out.unreachable] == ["/mnt/c"]
    assert f.frozen == {"/mnt/a", "/mnt/b", "/"}
    e.thaw()


def test_thaw_without_a_freeze_thaws_every_eligible_filesystem(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    f.frozen.update({"/mnt/a", "/"})  # e.g. left by a daemon that was replaced
    out = engine(planner, f, tmp_path).thaw()
    assert out.ok and calls(events, "thaw") == list(reversed(ORDER))
    assert [t.mount_point for t in out.done] == ["/", "/mnt/a"]


def test_stop_request_during_a_freeze_rolls_back(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path, should_stop=lambda: len(calls(events, "freeze")) >= 2)
    out = e.freeze()
    assert not out.ok and out.errors[0][1].errno == errno.EINTR
    assert f.frozen == set()


def test_state_file_says_frozen_from_before_the_first_freeze_until_thawed(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path)
    marker = f.marker
    assert marker is not None
    marker.open()
    assert marker.read() is None  # open: "thawed"
    e.freeze()
    seen = f.marker_seen[0]
    assert seen is not None and [t.mount_point for t in seen] == ORDER
    assert marker.read() is not None
    e.thaw()
    assert marker.read() is None
    e.freeze()
    e.close()  # stop while frozen: thaws, then removes the file
    assert f.frozen == set()
    assert not os.path.exists(marker.path)


def test_restart_after_a_kill_thaws_what_the_state_file_lists(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    first = engine(planner, f, tmp_path)
    first.freeze()
    # SIGKILL: no thaw.  A new daemon (or --thaw) on the same state file:
    second = engine(planner, RecordingFreezer(events), tmp_path)
    second.freezer = f
    out = second.recover()
    assert out is not None and out.ok
    assert f.frozen == set()
    assert sorted(t.mount_point for t in out.done) == sorted(ORDER)
    assert Marker(str(tmp_path / "frozen")).read() is None
    assert engine(planner, f, tmp_path).recover() is None  # nothing to recover now


def test_a_state_file_with_unknown_mount_points_is_still_thawed(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    Marker(str(tmp_path / "frozen")).arm([Target("/mnt/old", (7, 9))])
    f.frozen.add("/mnt/old")
    out = engine(planner, f, tmp_path).thaw_everything()
    assert out.ok and calls(events, "thaw")[0] == "/mnt/old"
    assert f.frozen == set()


class ManualTimer:
    """A Timer the test fires itself: the deadline becomes an event, not a wait."""

    def __init__(self) -> None:
        self.armed: float | None = None
        self._fire: Callable[[], None] | None = None

    def arm(self, seconds: float, fire: Callable[[], None]) -> None:
        self.armed, self._fire = seconds, fire

    def disarm(self) -> None:
        self.armed, self._fire = None, None

    def fire(self) -> None:
        fire, self._fire, self.armed = self._fire, None, None
        assert fire is not None, "the timer was not armed"
        fire()


def test_deadline_thaws_if_the_host_never_does_and_thaw_then_fails(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    timer = ManualTimer()
    e = engine(planner, f, tmp_path, thaw_deadline=0.2, timer=timer)
    assert e.freeze().ok
    assert timer.armed == 0.2 and f.frozen == set(ORDER)
    timer.fire()
    assert f.frozen == set()
    assert calls(events, "thaw") == list(reversed(ORDER))
    out = e.thaw()
    assert not out.ok  # the snapshot was not held until THAW


def test_deadline_is_disarmed_by_thaw(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    timer = ManualTimer()
    e = engine(planner, f, tmp_path, thaw_deadline=0.2, timer=timer)
    for _ in range(2):
        e.freeze()
        assert timer.armed == 0.2
        assert e.thaw().ok
        assert timer.armed is None
    assert calls(events, "thaw") == list(reversed(ORDER)) * 2


def test_the_real_deadline_is_a_one_shot_sigalrm(
    planner: Planner, events: list[Event], tmp_path: Path, alarm: None
) -> None:
    f = RecordingFreezer(events)
    e = engine(planner, f, tmp_path, thaw_deadline=30)
    assert e.freeze().ok
    left, interval = signal.getitimer(signal.ITIMER_REAL)
    assert 0 < left <= 30 and interval == 0
    assert e.thaw().ok
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # Armed again and left to expire: SIGALRM runs the thaw in this (main) thread.
    e = engine(planner, f, tmp_path, thaw_deadline=0.05)
    assert e.freeze().ok
    deadline = time.monotonic() + 30  # a hang guard
    while f.frozen:
        assert time.monotonic() < deadline, "the deadline never thawed"
        time.sleep(0.05)
    assert not e.thaw().ok


# -- the handler ----------------------------------------------------------------------


def test_handler_registration_and_replies(
    planner: Planner, events: list[Event], tmp_path: Path
) -> None:
    f = RecordingFreezer(events)
    h = VssHandler(engine(planner, f, tmp_path))
    assert h.registration() == bytes([129]) + bytes(11)
    assert h.registration_reply(struct.pack("=I", 129)) is True
    with pytest.raises(ProtocolError):
        h.registration_reply(bytes(12))
    ok = bytes(12)
    assert h.handle(sim_vss.encode_request(vss.VssOp.HOT_BACKUP)) == ok
    assert h.handle(sim_vss.encode_request(vss.VssOp.FREEZE)) == ok
    assert h.handle(sim_vss.encode_request(vss.VssOp.THAW)) == ok
    fail = struct.pack("=I", HvStatus.E_FAIL)
    f.fail[("freeze", "/mnt/a")] = errno.EIO
    assert h.handle(sim_vss.encode_request(vss.VssOp.FREEZE)) == fail + bytes(8)
    # Unknown ops: the reference says S_OK; we do not claim what we did not do.
    assert h.handle(sim_vss.encode_request(vss.VssOp.GET_DM_INFO)) == fail + bytes(8)
    assert h.handle(b"\x05\x00") == fail + bytes(8)
    assert h.failure_reply(sim_vss.encode_request(vss.VssOp.FREEZE)) == fail + bytes(8)


def test_handler_reset_and_stop_thaw(planner: Planner, events: list[Event], tmp_path: Path) -> None:
    f = RecordingFreezer(events)
    h = VssHandler(engine(planner, f, tmp_path))
    h.handle(sim_vss.encode_request(vss.VssOp.FREEZE))
    h.reset()  # the device went away while frozen
    assert f.frozen == set()
    h.handle(sim_vss.encode_request(vss.VssOp.FREEZE))
    h.stop()
    assert f.frozen == set()


def test_a_reset_before_the_deferred_release_still_emits_the_held_log(
    planner: Planner, events: list[Event], tmp_path: Path, logging_to_events: None
) -> None:
    """Hibernation: FREEZE, the kernel's fake THAW, then the device is reset at once.

    The THAW's log lines wait for a timer (they are emitted just after the
    reply is written); the reset disarms that timer.  The lines, and the
    reset's own, must still come out: nothing is frozen any more.
    """
    f = RecordingFreezer(events)
    timer = ManualTimer()
    h = VssHandler(engine(planner, f, tmp_path, timer=timer, defer_release=True))
    h.handle(sim_vss.encode_request(vss.VssOp.FREEZE))
    h.handle(sim_vss.encode_request(vss.VssOp.THAW))
    assert f.frozen == set() and timer.armed is not None  # the release is due later
    assert calls(events, "log") == []
    h.reset()  # the fake THAW's reply was refused: close, reopen
    hvlog.get("hvdaemons.service").error("/dev/vmbus/hv_vss: end of file; reopening")
    assert calls(events, "log") == [
        "<6>Hyper-V VSS: VSS: op=FREEZE: succeeded",
        "<6>Hyper-V VSS: VSS: op=THAW: succeeded",
        "<3>Hyper-V VSS: /dev/vmbus/hv_vss: end of file; reopening",
    ]


def test_marker_file_layout_and_odd_mount_points(tmp_path: Path) -> None:
    path = tmp_path / "frozen"
    odd = "/mnt/a b\nc\udcff"  # a blank, a newline, a byte that is not UTF-8
    Marker(str(path)).arm([Target("/mnt/x", (7, 9)), Target(odd, (254, 16))])
    assert path.read_bytes() == (
        b"frozen\npid %d\n7 9 2f6d6e742f78\n254 16 %s\n"
        % (os.getpid(), b"/mnt/a b\nc\xff".hex().encode())
    )
    got = Marker(str(path)).read()
    assert got is not None
    assert [(t.mount_point, t.dev) for t in got] == [("/mnt/x", (7, 9)), (odd, (254, 16))]


@pytest.mark.parametrize(
    "content",
    [
        b"frozen\npid 1\n7 9 2f6d6e74",  # torn: no final newline
        b"frozen\npid 1\n7 9 2f6d6e7\n",  # odd number of hex digits
        b"frozen\npid 1\n7 x 2f6d6e74\n",
        b"frozen\npid 1\n7 9\n",
        b'frozen\n{"pid": 1, "targets": [{"mount_point": "/mnt", "dev": [7, 9]}]}\n',
        b"frozen\n",
        b"frozen",
    ],
)
def test_unreadable_marker_means_frozen_targets_unknown(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "frozen"
    path.write_bytes(content)
    assert Marker(str(path)).read() == []


def test_thawed_marker_reads_as_nothing_frozen(tmp_path: Path) -> None:
    path = tmp_path / "frozen"
    path.write_bytes(b"thawed\npid 1\n7 9 2f6d6e74\n")
    assert Marker(str(path)).read() is None
