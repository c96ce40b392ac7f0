# SPDX-License-Identifier: GPL-2.0-only
"""Writing a file the host pushes into the guest, for both file-copy transports.

Mirrors hv_start_fcopy / hv_copy_data / hv_copy_finished / hv_copy_cancel of
tools/hv/hv_fcopy_daemon.c and tools/hv/hv_fcopy_uio_daemon.c, with their
defects fixed (they follow symlinks, truncate in place and keep partial
files).  What a host or a local user can rely on:

* The destination is path_name/file_name, resolved from "/" one component
  at a time with directory descriptors (openat), never through a path string
  a local user could change under us.  "." and ".." components and file names
  that are empty, ".", "..", or contain "/" or NUL are refused with
  HV_E_FAIL.  A relative path_name is taken from "/" (the reference resolves
  it from its working directory, which is "/" under systemd); "\\" is an
  ordinary character, as in the reference.
* Symbolic links are not followed, with one exception: a link in the
  *directory* part that is owned by root and lies in a root-owned directory
  nobody else can write to (e.g. /var/run -> /run) is followed, because only
  root could have placed it.  Links a local user could have planted are
  refused (HV_E_FAIL), and a link at the file name itself is never followed:
  without OVER_WRITE it counts as an existing file (HV_ERROR_ALREADY_EXISTS),
  with OVER_WRITE it is replaced by the copied file, its target untouched.
* With CREATE_PATH every missing directory of path_name is created, mode
  0755 (less the umask), including the last one; the reference only creates
  components followed by "/", so "/tmp/new" fails there and works here.
* Data goes to ".<name>.hvfcopy-<pid>-<random>" in the destination
  directory, created O_EXCL|O_NOFOLLOW with mode 0644 less the umask (the
  reference creates the file itself 0744, owner-executable).  COMPLETE
  fsyncs it and renames it over the target (OVER_WRITE) or links it to the
  target only if the name is still free (no OVER_WRITE; checked again here,
  not only at START), then fsyncs the directory.  Overwriting therefore
  replaces the file (a new inode owned by root) instead of truncating it in
  place.  After CANCEL, a failed WRITE or COMPLETE, a lost channel or a
  stopping daemon the temporary file is removed, so the target name never
  holds a partial file.  A daemon killed mid-copy leaves its temporary file;
  the next START into the same directory removes such files whose pid is no
  longer running (only regular files owned by us that match the pattern).
* A failed WRITE (HV_ERROR_DISK_FULL for ENOSPC/EDQUOT, else HV_E_FAIL) is
  logged once, discards the partial file at once (freeing the space), and
  every later WRITE and the COMPLETE of that copy get the same status without
  further log lines; the reference reports success at COMPLETE and keeps the
  truncated file.
* Offsets are 64-bit: files above 4 GiB, sparse or not, work.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ..errors import HvError
from ..log import Once, get
from ..notify import StatusLine, clock_text
from ..protocol.status import HvStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable

    from ..protocol.fcopy import StartCopy

    # progress(event, target, received bytes, announced size); event is one of
    # "copying" (start, then during the copy), "copied", "failed", "cancelled",
    # "abandoned".
    CopyProgress = Callable[[str, str, int, int], None]

log = get(__name__)

FILE_MODE = 0o644
DIR_MODE = 0o755
NAME_MAX = 255
MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)

TEMP_TAG = ".hvfcopy-"
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdef")


def temp_pid(name: bytes) -> int | None:
    """The pid in a temporary file's name ".<name>.hvfcopy-<pid>-<8 hex>", else None.

    Names may hold any byte but "/" and NUL.  Parsed by hand: re would cost
    the daemon 0.3-0.4 MiB of RSS for its life (benchmarks/bench_rss.py --imports).
    """
    head, tag, tail = name.rpartition(TEMP_TAG.encode())
    if not tag or not head.startswith(b"."):
        return None
    pid, dash, rand = tail.partition(b"-")
    if not dash or not 1 <= len(pid) <= 10 or not _DIGITS.issuperset(pid):
        return None
    if len(rand) != 8 or not _HEX.issuperset(rand):
        return None
    return int(pid)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# link() unsupported by the filesystem (vfat, exfat, some FUSE).
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})


class CopyError(HvError):
    """A refused or failed step, with the status the host gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_of(e: OSError) -> int:
    """The host status for a failed system call."""
    return HvStatus.ERROR_DISK_FULL if e.errno in (errno.ENOSPC, errno.EDQUOT) else HvStatus.E_FAIL


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def _encode(name: str, what: str) -> bytes:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise CopyError(HvStatus.E_FAIL, f"{what} {name!r} is not valid Unicode") from None


def file_name_bytes(name: str) -> bytes:
    """The file name to create, or CopyError if it is not a plain name."""
    if not name:
        raise CopyError(HvStatus.E_FAIL, "empty file name")
    if name in (".", ".."):
        raise CopyError(HvStatus.E_FAIL, f"file name {name!r} is not a file name")
    if "/" in name or "\0" in name:
        raise CopyError(HvStatus.E_FAIL, f"file name {name!r} contains '/' or NUL")
    raw = _encode(name, "file name")
    if len(raw) > NAME_MAX:
        raise CopyError(HvStatus.E_FAIL, f"file name of {len(raw)} bytes exceeds {NAME_MAX}")
    return raw


def path_components(path: str) -> list[bytes]:
    """The directory names of path_name from "/", or CopyError for "." / ".."."""
    parts = []
    for comp in path.split("/"):
        if not comp:
            continue  # leading, doubled or trailing "/"
        if comp in (".", ".."):
            raise CopyError(HvStatus.E_FAIL, f"relative component {comp!r} in path {path!r}")
        if "\0" in comp:
            raise CopyError(HvStatus.E_FAIL, f"NUL in path {path!r}")
        parts.append(_encode(comp, "path"))
    return parts


def _shown(parts: list[bytes]) -> str:
    return "/" + "/".join(p.decode("utf-8", "backslashreplace") for p in parts)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def temp_name(name: bytes, pid: int) -> bytes:
    """A fresh temporary name for name, within NAME_MAX."""
    # os.urandom() as secrets.token_hex() does; secrets itself would bring
    # hashlib, and with it OpenSSL's libcrypto, into memory (some 4 MiB).
    suffix = b"%s%d-%s" % (TEMP_TAG.encode(), pid, os.urandom(4).hex().encode())
    stem = name[: NAME_MAX - 1 - len(suffix)]
    # Never cut a UTF-8 sequence in half: the name stays valid UTF-8.
    stem = stem.decode("utf-8", "ignore").encode("utf-8")
    return b"." + stem + suffix


def remove_stale_temps(dir_fd: int) -> list[bytes]:
    """Remove temporary files of copies whose daemon died; return their names.

    Only regular files owned by our effective uid, named as temp_pid() reads, whose pid
    is not running (or is ours: our own copies are finished or discarded
    before a START looks here).
    """
    removed = []
    me, uid = os.getpid(), os.geteuid()
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            raw = os.fsencode(entry.name)
            pid = temp_pid(raw)
            if pid is None:
                continue
            if pid != me and _pid_alive(pid):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                    continue
                os.unlink(raw, dir_fd=dir_fd)
            except OSError:
                continue
            removed.append(raw)
    return removed


class _Copy:
    """The copy in progress."""

    __slots__ = (
        "dir_fd",
        "name",
        "temp",
        "fd",
        "target",
        "overwrite",
        "file_size",
        "failed",
        "received",
    )

    def __init__(
        self,
        dir_fd: int,
        name: bytes,
        temp: bytes,
        fd: int,
        target: str,
        overwrite: bool,
        file_size: int,
    ) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.temp = temp
        self.fd = fd
        self.target = target
        self.overwrite = overwrite
        self.file_size = file_size
        # Set by a failed WRITE; the temporary file is gone then.
        self.failed: int = HvStatus.S_OK
        # The end of the furthest WRITE seen here (progress).
        self.received = 0


class _Walk:
    """State of one path resolution (for messages and the symlink budget)."""

    __slots__ = ("root_fd", "root_id", "target", "hops", "created")

    def __init__(self, root_fd: int, root_id: tuple[int, int], target: str) -> None:
        self.root_fd = root_fd
        self.root_id = root_id
        self.target = target
        self.hops = 0
        self.created: list[str] = []


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class CopyStatus:
    """The STATUS= line of the file-copy daemon: the current copy and its progress.

    Progress marks the line's "copy" part stale and is rendered only when a
    line goes out (StatusLine.update(): at most once a second, WRITEs arrive
    by the thousand); whoever runs the loop flushes it later if the host
    pauses.  A copy's end goes out at once.
    """

    def __init__(
        self,
        status: StatusLine | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.status = status if status is not None else StatusLine()
        self._wall = wall

    def __call__(self, event: str, target: str, received: int, size: int) -> None:
        if event == "copying":
            self.status.update("copy", lambda: _copying(target, received, size))
            return
        self.status.set(
            "copy",
            f"last copy {target}: {event} ({_size(received)}) at {clock_text(self._wall())}",
            force=True,
        )


def _copying(target: str, received: int, size: int) -> str:
    pct = f" ({received * 100 // size}%)" if size else ""
    return f"copying {target}: {_size(received)} of {_size(size)}{pct}"


class FileCopier:
    """One file copy at a time, as the host drives it; every method returns the host status.

    Transport-independent: the legacy char-device daemon and the UIO daemon
    both feed it decoded messages.  progress (default: the STATUS= line when
    running under systemd, else nothing) hears of each copy's start, progress
    and end; WRITEs a transport's C fast path does itself are not seen.
    """

    def __init__(self, root: str = "/", progress: CopyProgress | None = None) -> None:
        self.root = root
        self._copy: _Copy | None = None
        # Once per stray run: a host that keeps writing must not flood the log.
        self._orphans = Once(log)
        if progress is None:
            default = CopyStatus()
            progress = default if default.status.enabled else None
        self._progress = progress

    def _report(self, event: str, c: _Copy) -> None:
        if self._progress is not None:
            self._progress(event, c.target, c.received, c.file_size)

    @property
    def busy(self) -> bool:
        """Whether a copy is in progress (started, not completed or cancelled)."""
        return self._copy is not None

    @property
    def data_fd(self) -> int:
        """The descriptor WRITE data of the current copy goes to; -1 if none or it failed.

        For a transport's C fast path (uio ring), which pwrite()s fragments
        itself and hands anything unusual, including a failed or short
        write, back to write() so failures are handled here.
        """
        c = self._copy
        if c is None or c.failed or c.fd < 0:
            return -1
        return c.fd

    # -- START -------------------------------------------------------------

    def start(self, req: StartCopy) -> int:
        if self._copy is not None:
            # Upstream leaks the old descriptor and leaves its file.
            log.warning("new copy while copying to %s; discarding that one", self._copy.target)
            self._discard()
        self._orphans.reset()
        try:
            name = file_name_bytes(req.file_name)
            parts = path_components(req.path_name)
        except CopyError as e:
            log.error("Invalid path: %s/%s: %s", req.path_name, req.file_name, e)
            return e.status
        target = _shown([*parts, name])
        log.info("Target file name: %s", target)
        try:
            dir_fd = self._open_dir(parts, req.create_path, target)
        except CopyError as e:
            log.error("%s", e)
            return e.status
        except OSError as e:
            log.error("Invalid path: %s: %s", target, _strerror(e))
            return status_of(e)
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                log.info("File: %s exists", target)
                if not req.overwrite:
                    os.close(dir_fd)
                    return HvStatus.ERROR_ALREADY_EXISTS
                if stat.S_ISDIR(st.st_mode):
                    raise CopyError(HvStatus.E_FAIL, f"{target} is a directory")
            for stale in remove_stale_temps(dir_fd):
                log.info("removed %s left by an interrupted copy", stale.decode("utf-8", "replace"))
            temp, fd = self._create_temp(dir_fd, name)
        except CopyError as e:
            os.close(dir_fd)
            log.error("%s", e)
            return e.status
        except OSError as e:
            os.close(dir_fd)
            log.error("Open Failed: %s: %s", target, _strerror(e))
            return status_of(e)
        self._copy = _Copy(dir_fd, name, temp, fd, target, req.overwrite, req.file_size)
        self._report("copying", self._copy)
        return HvStatus.S_OK

    def _open_dir(self, parts: list[bytes], create: bool, target: str) -> int:
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(root_fd)
            walk = _Walk(root_fd, (st.st_dev, st.st_ino), target)
            fd = self._walk(os.dup(root_fd), parts, create, walk, link=False)
        finally:
            os.close(root_fd)
        for made in walk.created:
            log.info("created directory %s", made)
        return fd

    def _walk(self, fd: int, parts: list[bytes], create: bool, walk: _Walk, link: bool) -> int:
        """Descend from fd (consumed) through parts; return the final directory's fd."""
        done: list[bytes] = []
        try:
            for comp in parts:
                if link and comp in (b"", b"."):
                    continue
                if link and comp == b"..":
                    # Only inside a trusted link's target; never above the root.
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) == walk.root_id:
                        continue
                    nfd = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                else:
                    nfd = self._step(fd, comp, create, walk, done)
                os.close(fd)
                fd = nfd
                done.append(comp)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _step(self, fd: int, comp: bytes, create: bool, walk: _Walk, done: list[bytes]) -> int:
        here = _shown([*done, comp]) if not walk.hops else comp.decode("utf-8", "backslashreplace")
        made = False
        while True:
            try:
                return os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if made or not create:
                    raise CopyError(
                        HvStatus.E_FAIL, f"Invalid path: {walk.target}: {here} does not exist"
                    ) from None
                try:
                    os.mkdir(comp, DIR_MODE, dir_fd=fd)
                    walk.created.append(here)
                except FileExistsError:
                    pass  # someone else made it meanwhile: judged as found below
                except OSError as e:
                    raise CopyError(
                        status_of(e), f"Failed to create {here}: {_strerror(e)}"
                    ) from None
                made = True
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise CopyError(
                        HvStatus.E_FAIL, f"Invalid path: {walk.target}: {here} is not a directory"
                    ) from None
                return self._follow(fd, comp, st, walk, here)

    def _follow(self, fd: int, comp: bytes, st: os.stat_result, walk: _Walk, here: str) -> int:
        parent = os.fstat(fd)
        trusted = st.st_uid == 0 and parent.st_uid == 0 and not parent.st_mode & 0o022
        if not trusted:
            raise CopyError(
                HvStatus.E_FAIL,
                f"Invalid path: {walk.target}: {here} is a symbolic link that someone other "
                "than root could have placed; not following it",
            )
        walk.hops += 1
        if walk.hops > MAX_SYMLINK_HOPS:
            raise CopyError(
                HvStatus.E_FAIL, f"Invalid path: {walk.target}: too many symbolic links"
            )
        dest = os.readlink(comp, dir_fd=fd)
        start = os.dup(walk.root_fd) if dest.startswith(b"/") else os.dup(fd)
        return self._walk(start, dest.split(b"/"), False, walk, link=True)

    def _create_temp(self, dir_fd: int, name: bytes) -> tuple[bytes, int]:
        for _ in range(16):
            temp = temp_name(name, os.getpid())
            try:
                return temp, os.open(temp, _TEMP_FLAGS, FILE_MODE, dir_fd=dir_fd)
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "no free temporary file name")

    # -- WRITE -------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> int:
        c = self._copy
        if c is None:
            self._orphans(log.ERROR, "data for a copy that was not started")
            return HvStatus.E_FAIL
        if c.failed:
            return c.failed
        try:
            n = os.pwrite(c.fd, data, offset)
            if n != len(data):
                # Regular files only write short at a limit; the retry reports it.
                view = memoryview(data)
                while n < len(data):
                    k = os.pwrite(c.fd, view[n:], offset + n)
                    if k <= 0:
                        raise OSError(errno.EIO, "pwrite made no progress")
                    n += k
        except OverflowError:
            return self._fail(
                c, HvStatus.E_FAIL, f"offset {offset} is beyond the largest file offset"
            )
        except OSError as e:
            return self._fail(
                c,
                status_of(e),
                f"pwrite failed to write {len(data)} bytes at offset {offset} "
                f"to {c.target}: {_strerror(e)}",
            )
        if self._progress is not None:
            end = offset + len(data)
            if end > c.received:
                c.received = end
            self._progress("copying", c.target, c.received, c.file_size)
        return HvStatus.S_OK

    @property
    def reports_progress(self) -> bool:
        """Whether anyone hears of progress (the STATUS= line under systemd)."""
        return self._progress is not None

    def note_progress(self) -> None:
        """A transport's C fast path wrote to data_fd itself: report how far the copy got.

        Transports call this whenever their C loop hands back, also when the
        host merely paused: the progress line (throttled) then catches up.
        """
        c = self._copy
        if self._progress is None or c is None or c.failed or c.fd < 0:
            return
        c.received = max(c.received, os.fstat(c.fd).st_size)
        self._progress("copying", c.target, c.received, c.file_size)

    def _fail(self, c: _Copy, status: int, why: str) -> int:
        log.error("%s; discarding the partial file", why)
        self._remove_temp(c)
        c.failed = status
        self._report("failed", c)
        return status

    # -- COMPLETE / CANCEL -------------------------------------------------

    def complete(self) -> int:
        c = self._copy
        if c is None:
            log.error("copy finished that was not started")
            return HvStatus.E_FAIL
        self._copy = None
        status = self._complete(c)
        if self._progress is not None:
            self._report("copied" if status == HvStatus.S_OK else "failed", c)
        return status

    def _complete(self, c: _Copy) -> int:
        if c.failed:
            self._remove_temp(c)
            return c.failed
        try:
            os.fsync(c.fd)
            st = os.fstat(c.fd)
            c.received = st.st_size
            # In a directory others may write to, our name could now be theirs.
            now = os.stat(c.temp, dir_fd=c.dir_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise CopyError(
                    HvStatus.E_FAIL, f"temporary file of {c.target} was replaced; not using it"
                )
            os.close(c.fd)
            c.fd = -1
            if c.overwrite:
                os.rename(c.temp, c.name, src_dir_fd=c.dir_fd, dst_dir_fd=c.dir_fd)
            else:
                self._link_noreplace(c)
        except FileExistsError:
            log.info("File: %s exists", c.target)
            self._remove_temp(c)
            return HvStatus.ERROR_ALREADY_EXISTS
        except CopyError as e:
            log.error("%s", e)
            self._remove_temp(c)
            return e.status
        except OSError as e:
            log.error("completing %s failed: %s", c.target, _strerror(e))
            self._remove_temp(c)
            return status_of(e)
        try:
            # Make the new name durable too; the data already is.
            os.fsync(c.dir_fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EROFS):
                log.warning("fsync of the directory of %s failed: %s", c.target, _strerror(e))
        self._close_dir(c)
        if c.file_size != st.st_size:
            log.warning(
                "%s: host announced %d bytes, received %d", c.target, c.file_size, st.st_size
            )
        return HvStatus.S_OK

    @staticmethod
    def _link_noreplace(c: _Copy) -> None:
        """Give the temp file the target name only if that name is free (renameat2 NOREPLACE)."""
        try:
            os.link(c.temp, c.name, src_dir_fd=c.dir_fd, dst_dir_fd=c.dir_fd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            # No hard links on this filesystem: check, then rename (a small window).
            try:
                os.stat(c.name, dir_fd=c.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.rename(c.temp, c.name, src_dir_fd=c.dir_fd, dst_dir_fd=c.dir_fd)
                return
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)) from None
        try:
            os.unlink(c.temp, dir_fd=c.dir_fd)
        except OSError:
            pass  # the target is complete; a stale name is cleaned up at a later START

    def cancel(self) -> int:
        c = self._copy
        if c is not None:
            log.info("copy to %s cancelled", c.target)
            self._discard()
            self._report("cancelled", c)
        # Like the reference: cancelling nothing succeeds.
        return HvStatus.S_OK

    def reject(self, status: int = HvStatus.E_FAIL) -> int:
        """A request of the current copy was refused before reaching us (the caller logged why).

        Data may now be missing, so the copy fails as a failed WRITE does: the
        partial file goes, and its later WRITEs and COMPLETE get status.
        """
        c = self._copy
        if c is not None and not c.failed:
            self._remove_temp(c)
            c.failed = status
        return status

    def abort(self) -> None:
        """The channel is gone or the daemon stops: remove any partial file."""
        c = self._copy
        if c is not None:
            log.info("copy to %s abandoned; removing the partial file", c.target)
            self._discard()
            self._report("abandoned", c)

    # -- helpers -----------------------------------------------------------

    def _discard(self) -> None:
        c, self._copy = self._copy, None
        if c is not None:
            self._remove_temp(c)

    @staticmethod
    def _remove_temp(c: _Copy) -> None:
        if c.fd >= 0:
            os.close(c.fd)
            c.fd = -1
        if c.dir_fd >= 0:
            try:
                os.unlink(c.temp, dir_fd=c.dir_fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.error("removing %s failed: %s", c.temp.decode("utf-8", "replace"), _strerror(e))
            FileCopier._close_dir(c)

    @staticmethod
    def _close_dir(c: _Copy) -> None:
        if c.dir_fd >= 0:
            os.close(c.dir_fd)
            c.dir_fd = -1
