# SPDX-License-Identifier: GPL-2.0-only
"""Freezing and thawing filesystems without ever leaving them frozen.

Mirrors vss_do_freeze() and vss_operate() of tools/hv/hv_vss_daemon.c:
open(mount point, O_RDONLY) + ioctl(FIFREEZE/FITHAW); EBUSY on freeze and
EINVAL on thaw count as success (bind mounts, btrfs subvolumes, already
frozen or not frozen); the first freeze error thaws everything frozen so
far and fails the request.  On top of the reference:

* the order comes from mounts.Planner (stacked filesystems top-down), and
  thawing is the exact reverse;
* EOPNOTSUPP/ENOTTY from FIFREEZE (exfat, ntfs3, FUSE block filesystems)
  skips that filesystem instead of failing the whole backup;
* nothing is written to disk while frozen: log records are held in memory
  (hvdaemons.log.hold) from the first FIFREEZE until after the last FITHAW;
* a state file in /run says "frozen" from before the first FIFREEZE until
  after the last FITHAW, so a daemon restarted after SIGKILL (or
  `hv_vss_daemon --thaw` from the unit's ExecStopPost=) knows to thaw;
* a deadline (SIGALRM) thaws by itself if the host never sends THAW.

The Freezer protocol is the only thing touching the kernel, so tests inject
a recording one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import threading

from .. import _ffi
from .. import log as hvlog
from ..errors import HvError
from .mounts import Target

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Callable, Protocol

    from .mounts import Dev, Plan, Planner

log = hvlog.get(__name__)

FIFREEZE = _ffi.const("FIFREEZE")
FITHAW = _ffi.const("FITHAW")

# O_NONBLOCK/O_NOCTTY: a mount point that is a FIFO or device node (a file
# bind mount) must not block or grab a terminal; only directories and
# regular files are frozen through.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY

# After a host THAW, held log lines are emitted this long after (i.e. once
# the reply is written).
RELEASE_DELAY = 0.001

# FIFREEZE errors that mean "this filesystem type cannot be frozen".
UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY})


class NotReached(HvError):
    """The mount point no longer leads to the filesystem planned (mount table changed)."""


if TYPE_CHECKING:
    # For the type checker only: a Protocol defined at run time needs typing.

    class Freezer(Protocol):
        """FIFREEZE/FITHAW one filesystem; raises OSError with the kernel's errno."""

        def freeze(self, target: Target) -> None: ...

        def thaw(self, target: Target) -> None: ...

    class Timer(Protocol):
        """Calls a function once, some time later, in the daemon's main thread."""

        def arm(self, seconds: float, fire: Callable[[], None]) -> None: ...

        def disarm(self) -> None: ...


class IoctlFreezer:
    """The production Freezer: open(mount point) + ioctl, as the reference does."""

    def __init__(self, proc: str = "/proc") -> None:
        self._fdinfo = os.path.join(proc, "self", "fdinfo")

    def freeze(self, target: Target) -> None:
        self._call(target, FIFREEZE, check_mount=True)

    def thaw(self, target: Target) -> None:
        self._call(target, FITHAW, check_mount=False)

    def _call(self, target: Target, cmd: int, *, check_mount: bool) -> None:
        fd = os.open(target.mount_point, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise NotReached(f"{target.mount_point} is not a directory or file")
            # The path must still lead to the planned superblock.  st_dev says
            # so cheaply; where it differs (btrfs subvolumes have their own)
            # the mount id in fdinfo decides.
            same_dev = (os.major(st.st_dev), os.minor(st.st_dev)) == target.dev
            if check_mount and target.mount_ids and not same_dev:
                mnt = self._mount_id(fd)
                if mnt is not None and mnt not in target.mount_ids:
                    raise NotReached(f"{target.mount_point} now leads to another mount")
            fcntl.ioctl(fd, cmd, 0)
        finally:
            os.close(fd)

    def _mount_id(self, fd: int) -> int | None:
        # procfs, not disk: safe while other filesystems are frozen.
        try:
            rd = os.open(f"{self._fdinfo}/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.read(rd, 4096)
        except OSError:
            return None
        finally:
            os.close(rd)
        for line in data.split(b"\n"):
            if line.startswith(b"mnt_id:"):
                return int(line.split(b":", 1)[1])
        return None


class Marker:
    """The "may be frozen" state file (default /run/hv_vss_daemon.frozen).

    Says "frozen" from before the first FIFREEZE until after a complete
    thaw, so whatever kills the daemon in between, the next start (or
    --thaw from the unit's ExecStopPost=) knows.  The daemon keeps it open
    and flips the first word in place: one pwrite() per FREEZE and THAW.
    Layout: "frozen\n" or "thawed\n", "pid N\n", then one line per target:
    "MAJOR MINOR PATH" with the mount point's bytes in hex (any byte may
    appear in a path; json would cost the daemon 0.5 MiB with re).
    """

    FROZEN = b"frozen"
    THAWED = b"thawed"

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._body = b""
        self._key: list[tuple[str, Dev]] = []

    def open(self) -> None:
        """Create the file (state thawed) and keep it open."""
        if self._fd < 0:
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
            self._body = b""
            self._write(self.THAWED, [])

    def _write(self, state: bytes, targets: list[Target]) -> None:
        key = [(t.mount_point, t.dev) for t in targets]
        if self._body and key == self._key:
            os.pwrite(self._fd, state, 0)  # the usual case: flip the state word
            return
        lines = [b"pid %d" % os.getpid()]
        lines += [b"%d %d %s" % (dev[0], dev[1], os.fsencode(mp).hex().encode()) for mp, dev in key]
        body = b"\n".join(lines)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, state + b"\n" + body + b"\n", 0)
        self._body = body
        self._key = key

    def arm(self, targets: list[Target]) -> None:
        """Before freezing: record that targets may be frozen."""
        if self._fd >= 0:
            self._write(self.FROZEN, targets)
            return
        # Not kept open (--thaw, tests): write a whole file.
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            self._fd = fd
            self._write(self.FROZEN, targets)
        finally:
            self._fd = -1
            self._body = b""
            os.close(fd)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """After a complete thaw."""
        if self._fd >= 0:
            os.pwrite(self._fd, self.THAWED, 0)
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """The daemon exits with nothing frozen: remove the file."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def read(self) -> list[Target] | None:
        """The targets recorded if the state is frozen ([] if unreadable), else None."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return []
        state, _, body = data.partition(b"\n")
        if state == self.THAWED:
            return None
        targets = []
        if not body.startswith(b"pid ") or not body.endswith(b"\n"):
            return []  # torn (the whole file is one pwrite()) or foreign
        try:
            for line in body.splitlines()[1:]:
                major, minor, hexpath = line.split(b" ")
                mount_point = os.fsdecode(bytes.fromhex(hexpath.decode("ascii")))
                targets.append(Target(mount_point=mount_point, dev=(int(major), int(minor))))
        except ValueError:  # also UnicodeError: a torn or foreign file
            return []
        return targets


class Outcome:
    """What one freeze or thaw pass did."""

    __slots__ = ("ok", "done", "unsupported", "unreachable", "errors")

    def __init__(self) -> None:
        self.ok = True
        self.done: list[Target] = []
        self.unsupported: list[tuple[Target, OSError]] = []
        self.unreachable: list[tuple[Target, str]] = []
        self.errors: list[tuple[Target, OSError]] = []


class AlarmTimer:
    """A Timer on SIGALRM (setitimer): no thread, nothing to wake on the hot path.

    Python runs the handler in the main thread between bytecodes, so it
    never interrupts a freeze half-way; the engine re-arms if it is busy.
    """

    def __init__(self) -> None:
        self._fire: Callable[[], None] | None = None
        signal.signal(signal.SIGALRM, self._on_alarm)

    def arm(self, seconds: float, fire: Callable[[], None]) -> None:
        self._fire = fire
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self) -> None:
        self._fire = None
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        fire, self._fire = self._fire, None
        if fire is not None:
            fire()


class FreezeEngine:
    """Freeze/thaw passes with rollback, deadline, marker and held logging.

    Thread-safe (one lock); the SIGALRM timer runs in the main thread and
    backs off while a pass is in progress there.
    """

    def __init__(
        self,
        planner: Planner,
        freezer: Freezer,
        *,
        marker: Marker | None = None,
        thaw_deadline: float = 0.0,
        timer: Timer | None = None,
        defer_release: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        hold_logs: Callable[[], None] = hvlog.hold,
        release_logs: Callable[[], None] = hvlog.release,
        on_change: Callable[[list[Target]], None] = lambda frozen: None,
    ) -> None:
        self.planner = planner
        self.freezer = freezer
        self.marker = marker
        self.thaw_deadline = thaw_deadline
        self._should_stop = should_stop
        self._hold = hold_logs
        self._release = release_logs
        # Told what is frozen after every change (the STATUS= line); it must
        # not write to a filesystem.
        self._on_change = on_change
        self._lock = threading.RLock()
        # What this daemon froze (including EBUSY: already frozen), in order.
        self._frozen: list[Target] = []
        self._frozen_devs: set[Dev] = set()
        self._expired = False
        self._busy = False
        self._last_plan: Plan | None = None
        self._defer_release = defer_release
        # One timer for the deadline (while frozen) and the deferred log
        # release (after a thaw): they never overlap.
        self._deadline: Timer | None = None
        if thaw_deadline > 0 or defer_release:
            self._deadline = timer if timer is not None else AlarmTimer()

    @contextlib.contextmanager
    def _section(self) -> Iterator[None]:
        """The lock, plus a flag the SIGALRM handler (same thread) can see."""
        with self._lock:
            was, self._busy = self._busy, True
            try:
                yield
            finally:
                self._busy = was

    @property
    def frozen(self) -> list[Target]:
        with self._section():
            return list(self._frozen)

    # -- freeze ----------------------------------------------------------------

    def freeze(self) -> Outcome:
        """Freeze every planned filesystem, or none: on the first error, thaw and fail."""
        with self._section():
            plan = self.planner.plan()
            if plan is not self._last_plan:
                # Before the first FIFREEZE, and once per mount table.
                for note in plan.notes:
                    log.warning("%s", note)
                self._last_plan = plan
            targets = list(plan.targets)
            if self.marker is not None:
                try:
                    self.marker.arm(self._frozen + targets)
                except OSError as e:
                    log.error("cannot write %s: %s", self.marker.path, e.strerror)
            self._expired = False
            out = Outcome()
            self._hold()
            failed: tuple[Target, BaseException] | None = None
            try:
                failed = self._freeze_all(targets, out)
            except BaseException as exc:
                failed = (targets[min(len(out.done), len(targets) - 1)], exc)
                raise
            finally:
                if failed is not None:
                    self._rollback(out, failed)
            for t, err in out.unsupported:
                log.info(
                    "%s (%s) cannot be frozen: %s; skipped", t.mount_point, t.fstype, err.strerror
                )
            for t, why in out.unreachable:
                log.warning("%s skipped: %s", t.mount_point, why)
            self._on_change(list(self._frozen))
            if self._deadline is not None and self._frozen and self.thaw_deadline > 0:
                self._deadline.arm(self.thaw_deadline, self._on_deadline)
            if not self._frozen:
                # Nothing frozen (all skipped, or rolled back): nothing to hold logs for.
                self._release()
                self._clear_marker()
            return out

    def _freeze_all(self, targets: list[Target], out: Outcome) -> tuple[Target, OSError] | None:
        """The frozen window's loop: no logging, no allocation beyond the bookkeeping."""
        for t in targets:
            if self._should_stop():
                return (t, OSError(errno.EINTR, "stop requested"))
            try:
                self.freezer.freeze(t)
            except NotReached as e:
                out.unreachable.append((t, str(e)))
                continue
            except OSError as e:
                if e.errno in UNSUPPORTED:
                    out.unsupported.append((t, e))
                    continue
                if e.errno != errno.EBUSY:  # EBUSY: already frozen, as in the reference
                    return (t, e)
            if t.dev not in self._frozen_devs:
                self._frozen.append(t)
                self._frozen_devs.add(t.dev)
            out.done.append(t)
        return None

    def _rollback(self, out: Outcome, failed: tuple[Target, BaseException]) -> None:
        target, err = failed
        thawed = self._thaw_list(list(reversed(self._frozen)))
        self._set_frozen([])
        if not thawed.errors:
            self._clear_marker()
        self._release()
        out.ok = False
        if isinstance(err, OSError) and err.errno is not None:
            log.error(
                "FREEZE of %s failed; error:%d %s",
                target.mount_point,
                err.errno,
                os.strerror(err.errno),
            )
            out.errors.append((target, err))
        else:
            log.error("FREEZE of %s failed; error: %s", target.mount_point, err)
            out.errors.append((target, OSError(errno.EIO, str(err))))
        self._log_thaw_errors(thawed)

    # -- thaw ------------------------------------------------------------------

    def thaw(self) -> Outcome:
        """The host's THAW: thaw what we froze, in reverse; with nothing recorded, every eligible filesystem."""
        with self._section():
            if self._deadline is not None:
                self._deadline.disarm()
            if self._frozen:
                targets = list(reversed(self._frozen))
            else:
                targets = list(reversed(self._plan_quietly()))
            out = self._finish_thaw(targets, host=True)
            if self._expired:
                self._expired = False
                out.ok = False
                log.error(
                    "THAW: filesystems had already been thawed %.0f s after FREEZE; "
                    "the snapshot may not be consistent",
                    self.thaw_deadline,
                )
            return out

    def thaw_if_frozen(self, why: str) -> Outcome:
        """Thaw what we froze, if anything (device lost, stop signal)."""
        with self._section():
            if self._deadline is not None:
                self._deadline.disarm()
            if not self._frozen:
                # The timer just disarmed may have been due to emit the log
                # lines held since a host THAW: nothing is frozen, emit them.
                self._release()
                return Outcome()
            out = self._finish_thaw(list(reversed(self._frozen)))
            log.warning("%s while frozen: thawed %d filesystem(s)", why, len(out.done))
            return out

    def thaw_everything(self) -> Outcome:
        """--thaw and start-up recovery: every eligible filesystem plus whatever the marker lists."""
        with self._section():
            if self._deadline is not None:
                self._deadline.disarm()
            targets = list(reversed(self._frozen))
            recorded = self.marker.read() if self.marker is not None else None
            planned = self._plan_quietly()
            seen = {t.dev for t in targets}
            # The marker's order is the freeze order: thaw it reversed, then
            # the current plan reversed (in case the mount table changed).
            for t in [*reversed(recorded or []), *reversed(planned)]:
                if t.dev not in seen:
                    seen.add(t.dev)
                    targets.append(t)
            return self._finish_thaw(targets)

    def recover(self) -> Outcome | None:
        """At start-up: if a previous daemon may have left filesystems frozen, thaw them."""
        if self.marker is None or self.marker.read() is None:
            return None
        out = self.thaw_everything()
        log.warning(
            "%s found: a previous daemon may have been killed while frozen; thawed %s",
            self.marker.path,
            ", ".join(t.mount_point for t in out.done) or "nothing (none was frozen)",
        )
        return out

    def close(self) -> Outcome:
        """The daemon is stopping: thaw, emit what is held, remove the state file."""
        out = self.thaw_if_frozen("stop requested")
        if self._deadline is not None:
            self._deadline.disarm()
        if not self._frozen:
            self._release()
        if self.marker is not None and out.ok:
            self.marker.close()
        return out

    def _on_deadline(self) -> None:
        if self._busy:
            # SIGALRM landed inside a freeze or thaw pass of this thread:
            # look again in a moment rather than thaw half-way through.
            if self._deadline is not None:
                self._deadline.arm(0.05, self._on_deadline)
            return
        with self._section():
            if not self._frozen:
                return
            out = self._finish_thaw(list(reversed(self._frozen)))
            self._expired = True
            log.error(
                "no THAW from the host %.0f s after FREEZE: thawed %d filesystem(s)",
                self.thaw_deadline,
                len(out.done),
            )

    def _set_frozen(self, targets: list[Target]) -> None:
        self._frozen = targets
        self._frozen_devs = {t.dev for t in targets}
        self._on_change(list(targets))

    def _plan_quietly(self) -> list[Target]:
        try:
            return list(self.planner.plan().targets)
        except OSError as e:
            log.error("cannot read the mount table: %s", e)
            return []

    def _thaw_list(self, targets: list[Target]) -> Outcome:
        """FITHAW each target (in the order given); EINVAL means it was not frozen."""
        out = Outcome()
        for t in targets:
            try:
                self.freezer.thaw(t)
            except NotReached as e:
                out.unreachable.append((t, str(e)))
                continue
            except OSError as e:
                if e.errno == errno.EINVAL:
                    continue
                if e.errno in UNSUPPORTED or e.errno == errno.ENOENT:
                    continue  # cannot be frozen, or gone: not frozen either
                out.errors.append((t, e))
                out.ok = False
                continue
            out.done.append(t)
        return out

    def _finish_thaw(self, targets: list[Target], *, host: bool = False) -> Outcome:
        out = self._thaw_list(targets)
        self._set_frozen([t for t, _ in out.errors])
        if out.ok:
            self._clear_marker()
        if host and self._defer_release and self._deadline is not None and not self._frozen:
            # The host waits for this THAW's reply: emit the held log lines
            # just after it is written (the alarm fires in the poll loop).
            self._deadline.arm(RELEASE_DELAY, self._release_later)
        else:
            self._release()
        self._log_thaw_errors(out)
        return out

    def _clear_marker(self) -> None:
        """Everything thawed: say so in the state file.  A failed write (a full /run)
        is logged and fails nothing: the thaw itself has happened."""
        if self.marker is None:
            return
        try:
            self.marker.clear()
        except OSError as e:
            log.error("cannot write %s: %s", self.marker.path, e.strerror)

    def _release_later(self) -> None:
        if self._frozen:
            return  # frozen again meanwhile: the next thaw releases
        if self._busy and self._deadline is not None:
            self._deadline.arm(RELEASE_DELAY, self._release_later)
            return
        self._release()

    @staticmethod
    def _log_thaw_errors(out: Outcome) -> None:
        for t, e in out.errors:
            log.error("THAW of %s failed; error:%d %s", t.mount_point, e.errno or 0, e.strerror)
