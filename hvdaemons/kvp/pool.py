# SPDX-License-Identifier: GPL-2.0-only
"""The KVP pool files /var/lib/hyperv/.kvp_pool_0 .. 4.

Mirrors kvp_file_init(), kvp_update_mem_state(), kvp_update_file(),
kvp_key_add_or_modify(), kvp_key_delete(), kvp_get_value() and
kvp_pool_enumerate() of tools/hv/hv_kvp_daemon.c, with the same on-disk
format: a plain array of 2560-byte records (512-byte key, 2048-byte value,
NUL-terminated UTF-8), insertion order, no header; files created with
O_RDWR|O_CREAT|O_CLOEXEC, mode 0644, in a directory created 0755.

Locking.  Every read-modify-write holds, on the pool's descriptor, the
POSIX whole-file write lock the C daemon and Microsoft's sample writer take
(fcntl F_SETLKW, F_WRLCK, 0..EOF) *and* the BSD flock() cloud-init takes
(the two do not exclude each other on Linux).  The lock is held across the
whole read-modify-write, unlike the reference, which drops it between its
re-read and its rewrite.  The file is only ever modified in place, never
replaced by rename(), so every other process's lock stays on the file
everyone uses; if the file is replaced or deleted behind our back we
reopen the path.

Caching.  The reference re-reads the whole file for every request.  Here
the records live in memory and the file is re-read only when it changed:
its (device, inode, size, mtime, ctime) signature is compared with the one
we last saw.  Two details make that exact.  (1) After each of our own writes
we set the file's mtime one nanosecond *back* (futimens), so any later write
by anyone, even within the same clock tick, produces a different mtime.
(2) A signature read while the clock has not yet moved past the file's mtime
is "racy" (someone may still write within that tick, git's racy-clean
problem) and is never trusted: the next request re-reads.  A request whose
signature matches reads no file data and takes no lock.

Crash safety (kill -9, OOM).  A single write() is *not* atomic against
SIGKILL: the kernel copies page by page and gives up between pages when a
fatal signal is pending, so a multi-page write can stop half way (easy to
show with large writes).  A write contained in one page is all-or-nothing.
So every change is split at page boundaries and ordered so that each prefix
of completed pieces leaves a pool that parses as either the old or the new
state:

* SET of an existing key rewrites only the bytes of its record that differ
  (the record is zero-filled: no stale bytes; a SET that changes nothing
  writes nothing).  If they span a page
  boundary, the piece order is chosen so that the intermediate record reads
  as old or new (e.g. the new value's NUL lies in the first piece); when no
  order does (both old and new value straddle the boundary), the change goes
  through the journal below.
* SET of a new key appends one record.  An interrupted append leaves an
  incomplete trailing record, which every reader (ours, the reference's,
  cloud-init's) ignores: the old state.
* DELETE of the last record is one ftruncate().  Any other DELETE writes a
  redo journal (.kvp_journal_N beside the pools: offset, data, old and new
  size, CRC), then shifts the later records down and truncates, then removes
  the journal.  An incomplete journal (bad CRC) means the pool was not
  touched yet; a complete one is replayed when the daemon starts, which
  yields the new state.  Records another process appended after the crash
  are kept.
* A trailing partial record (from a crash, or from another writer) is never
  silently dropped: it is served around (ignored, as upstream does) and,
  before the next change of the file's size, moved to .kvp_salvage_N and
  logged, so the file is realigned for appenders without losing bytes.
  An unreadable pool is never written.

Guarantee: after a kill -9 at any point, the pool file holds the complete
old state or the complete new state of the interrupted request (for a
DELETE: once the daemon has restarted and replayed its journal), possibly
plus an incomplete trailing record that readers ignore.  Not covered:
power loss (there is no fsync; the reference has none either) and other
processes rewriting the pool between our crash and our restart.

A failed write (ENOSPC, EIO) leaves the in-memory state as it was and the
file as it was (an append that ran out of space is truncated back).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
import zlib
from collections import namedtuple
from contextlib import contextmanager

from ..errors import HvError
from ..log import Once, get
from ..protocol.kvp import MAX_KEY_SIZE, MAX_VALUE_SIZE, POOL_COUNT, RECORD_SIZE

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterator

log = get(__name__)

R = RECORD_SIZE
PAGE = os.sysconf("SC_PAGE_SIZE")
# Records read per pread() when (re)loading: 80 KiB, below glibc's mmap
# threshold, so the buffer is reused from the heap instead of growing it
# (1 MiB chunks left ~2 MiB more resident after loading 5,000 records).
_READ_RECORDS = 32
_COARSE_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", 5)

_JOURNAL_MAGIC = b"HVKVPJ01"
_JOURNAL_HEAD = struct.Struct("<8sQQQQQ")  # magic, inode, old size, new size, offset, length
_CRC = struct.Struct("<I")


def pool_path(state_dir: str, number: int) -> str:
    return os.path.join(state_dir, f".kvp_pool_{number}")


def journal_path(state_dir: str, number: int) -> str:
    # Not ".kvp_pool_N.*": tools glob ".kvp_pool_*".
    return os.path.join(state_dir, f".kvp_journal_{number}")


def salvage_path(state_dir: str, number: int) -> str:
    return os.path.join(state_dir, f".kvp_salvage_{number}")


def record_bytes(key: bytes, value: bytes) -> bytes:
    """A zero-filled 2560-byte record (key and value cut to fit their arrays)."""
    key = key[:MAX_KEY_SIZE]
    value = value[:MAX_VALUE_SIZE]
    return key + bytes(MAX_KEY_SIZE - len(key)) + value + bytes(MAX_VALUE_SIZE - len(value))


def parse_record(rec: bytes, start: int = 0) -> tuple[bytes, bytes]:
    """(key, value) of the record at start: each up to its NUL (or its whole array)."""
    kend = rec.find(b"\0", start, start + MAX_KEY_SIZE)
    if kend < 0:
        kend = start + MAX_KEY_SIZE
    vend = rec.find(b"\0", start + MAX_KEY_SIZE, start + R)
    if vend < 0:
        vend = start + R
    return rec[start:kend], rec[start + MAX_KEY_SIZE : vend]


def parse_pool(data: bytes) -> list[tuple[bytes, bytes]]:
    """All complete records of a pool file's content (a trailing partial one is ignored)."""
    return [parse_record(data, off) for off in range(0, len(data) - R + 1, R)]


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


# What identifies a version of the file: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
_Sig = tuple[int, int, int, int, int]


def _sig(st: os.stat_result) -> _Sig:
    # Pool._fresh_unlocked() builds the same tuple inline (the GET hot path).
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Piece(namedtuple("Piece", ("offset", "data"))):
    """data (bytes), to be written at offset (int): a pair, as typing.NamedTuple made it."""

    __slots__ = ()
    offset: int
    data: bytes


def split_pages(offset: int, data: bytes, page: int = PAGE) -> list[Piece]:
    """data at offset, cut at page boundaries: each piece is written all-or-nothing."""
    pieces = []
    pos = 0
    while pos < len(data):
        room = page - (offset + pos) % page
        pieces.append(Piece(offset + pos, data[pos : pos + room]))
        pos += room
    return pieces


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of two different equal-length byte strings."""
    lo, hi = 0, len(a)  # a[:lo] == b[:lo]; a[:hi] != b[:hi]
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while a[lo] == b[lo]:
        lo += 1
    return lo


def _common_suffix(a: bytes, b: bytes) -> int:
    """Length of the common suffix of two different equal-length byte strings."""
    n = len(a)
    lo, hi = 0, n  # a[n-lo:] == b[n-lo:]; a[n-hi:] != b[n-hi:]
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if a[n - mid : n - lo] == b[n - mid : n - lo]:
            lo = mid
        else:
            hi = mid
    while a[n - 1 - lo] == b[n - 1 - lo]:
        lo += 1
    return lo


def in_place_plan(base: int, old: bytes, new: bytes, page: int = PAGE) -> list[Piece] | None:
    """Writes that turn record old (at file offset base) into new, crash-consistently.

    Only differing bytes are written.  Returns the pieces in a safe order
    (every prefix leaves a record that reads as old or as new), or None if
    there is no such order and the change must be journaled.
    """
    d0 = _common_prefix(old, new)
    d1 = R - _common_suffix(old, new)
    pieces = split_pages(base + d0, new[d0:d1], page)
    if len(pieces) == 1:
        return pieces
    want = (parse_record(old), parse_record(new))
    for order in (pieces, pieces[::-1]):
        ok = True
        rec = bytearray(old)
        for piece in order[:-1]:
            at = piece.offset - base
            rec[at : at + len(piece.data)] = piece.data
            if parse_record(bytes(rec)) not in want:
                ok = False
                break
        if ok:
            return order
    return None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    done = 0
    while done < len(data):
        n = os.pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


class PoolUnavailable(HvError):
    """The pool cannot be used right now (unreadable or a journal could not be replayed)."""


class Pool:
    """One pool file, cached in memory.  Not thread-safe (the daemon is single-threaded)."""

    def __init__(self, state_dir: str, number: int, *, debug: bool = False) -> None:
        self.state_dir = state_dir
        self.number = number
        self.path = pool_path(state_dir, number)
        self.debug = debug
        self._fd = -1
        self._ident = (-1, -1)  # (st_dev, st_ino) of self._fd
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._raw: dict[int, bytes] = {}  # records with bytes after a terminator
        self._index: dict[bytes, int] = {}  # key -> first record with it
        self._partial = 0  # bytes of an incomplete trailing record
        self._sig: _Sig | None = None
        self._racy = True
        self._journal_pending = False
        # Says so once per version of a damaged file (a version never comes back:
        # its ctime only moves on), and forgets them once the damage is gone.
        self._damaged = Once(log)

    # -- opening ---------------------------------------------------------------

    def open(self) -> None:
        """Open (creating) the file and replay a journal a crash left behind."""
        self._fd = self._open_path()
        self._journal_pending = os.path.exists(journal_path(self.state_dir, self.number))
        if self._journal_pending:
            with self._locked():
                pass

    def _open_path(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def fd(self) -> int:
        return self._fd

    # -- locking and freshness ----------------------------------------------------

    def _lock(self, fd: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # POSIX F_SETLKW, whole file: the C daemon's lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # cloud-init's lock
        except BaseException:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            raise

    def _unlock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _current_fd(self) -> os.stat_result:
        """Make self._fd the file the path names now (it may have been replaced or removed).

        Called with the lock held on self._fd; returns with it held on the new
        one, and that file's stat.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            log.warning("pool file %s vanished; creating it again", self.path)
        else:
            if (st.st_dev, st.st_ino) == self._ident:
                return st
            log.warning("pool file %s was replaced; reopening it", self.path)
        ident = self._ident
        new = self._open_path()
        try:
            self._lock(new)
        except BaseException:
            os.close(new)
            # Still on the old file: the next call must see the new one as new.
            self._ident = ident
            raise
        old, self._fd = self._fd, new
        # Closing the old descriptor releases our locks on the old file.
        os.close(old)
        self._sig = None
        st = os.fstat(new)
        self._ident = (st.st_dev, st.st_ino)
        return st

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold both locks on the current file, with a replayed journal and fresh records."""
        if self._fd < 0:
            self._fd = self._open_path()
        self._lock(self._fd)
        try:
            st = self._current_fd()
            if self._journal_pending:
                self._recover()
                st = os.fstat(self._fd)
            self._refresh(st)
            yield
        finally:
            self._unlock(self._fd)

    def _fresh_unlocked(self) -> bool:
        """True if the cached records are known to match the file (no lock needed)."""
        # Every GET comes through here: one stat() and as few Python calls as can be.
        sig = self._sig
        if sig is None or self._racy or self._journal_pending:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == sig

    def _refresh(self, st: os.stat_result) -> None:
        if self._sig is not None and not self._racy and _sig(st) == self._sig:
            return
        self._load(st)

    def _load(self, st: os.stat_result) -> None:
        """Re-read every record (the lock is held)."""
        self._sig = None
        n, partial = divmod(st.st_size, R)
        keys: list[bytes] = []
        values: list[bytes] = []
        raw: dict[int, bytes] = {}
        index: dict[bytes, int] = {}
        off = 0
        end = n * R
        while off < end:
            try:
                buf = os.pread(self._fd, min(_READ_RECORDS * R, end - off), off)
            except OSError as e:
                log.error(
                    "Failed to read file, pool: %d; error: %d %s",
                    self.number,
                    e.errno,
                    os.strerror(e.errno or errno.EIO),
                )
                raise
            usable = len(buf) - len(buf) % R
            for j in range(0, usable, R):
                kend = buf.find(b"\0", j, j + MAX_KEY_SIZE)
                if kend < 0:
                    kend = j + MAX_KEY_SIZE
                vend = buf.find(b"\0", j + MAX_KEY_SIZE, j + R)
                if vend < 0:
                    vend = j + R
                key = buf[j:kend]
                i = len(keys)
                keys.append(key)
                values.append(buf[j + MAX_KEY_SIZE : vend])
                if key not in index:
                    index[key] = i
                # Keep the exact bytes of a record that has something after a
                # terminator (written by another program): ENUMERATE sends the
                # whole arrays, and a shift on DELETE must copy them unchanged.
                if buf.count(0, kend, j + MAX_KEY_SIZE) != j + MAX_KEY_SIZE - kend or (
                    buf.count(0, vend, j + R) != j + R - vend
                ):
                    raw[i] = buf[j : j + R]
            if usable < len(buf) or len(buf) < min(_READ_RECORDS * R, end - off):
                # The file shrank under us (a writer that does not lock).
                partial = 0
                break
            off += len(buf)
        self._keys, self._values, self._raw, self._index = keys, values, raw, index
        self._partial = partial
        if partial:
            self._damaged(
                log.WARNING,
                "pool %d: %s is %d bytes, not a multiple of %d; ignoring its last %d bytes",
                self.number,
                self.path,
                st.st_size,
                R,
                partial,
                key=_sig(st),
            )
        else:
            self._damaged.reset()
        self._remember(st)

    def _remember(self, st: os.stat_result) -> None:
        self._sig = _sig(st)
        # Until the coarse clock has moved past the mtime, another write in the
        # same tick could leave the signature unchanged: don't trust it.
        self._racy = st.st_mtime_ns >= time.clock_gettime_ns(_COARSE_CLOCK)

    def _stamp(self) -> None:
        """After our write: mtime one ns back, so that any later write changes it."""
        st = os.fstat(self._fd)
        try:
            os.utime(self._fd, ns=(st.st_atime_ns, st.st_mtime_ns - 1))
        except OSError:
            self._remember(st)
            self._racy = True
            return
        self._sig = _sig(os.fstat(self._fd))
        self._racy = False

    def _fresh(self) -> None:
        """Make the records current: a stat if nothing changed, else a re-read under the lock."""
        if not self._fresh_unlocked():
            with self._locked():
                pass

    # -- queries ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value of the first record with this key, or None."""
        if not self._fresh_unlocked():
            with self._locked():
                pass
        i = self._index.get(key)
        return None if i is None else self._values[i]

    def _record(self, i: int) -> bytes:
        raw = self._raw.get(i)
        return raw if raw is not None else record_bytes(self._keys[i], self._values[i])

    def record(self, index: int) -> bytes | None:
        """The exact 2560 bytes of record index (ENUMERATE), or None past the end."""
        self._fresh()
        if not 0 <= index < len(self._keys):
            return None
        return self._record(index)

    def items(self) -> list[tuple[bytes, bytes]]:
        self._fresh()
        return list(zip(self._keys, self._values))

    def dump(self) -> None:
        """-d: log every record, as kvp_dump_initial_pools() does."""
        self._fresh()
        log.debug("===Start dumping the contents of pool %d ===", self.number)
        n = len(self._keys)
        for i in range(n):
            log.debug(
                "pool: %d, %d/%d key=%s val=%s",
                self.number,
                i + 1,
                n,
                _show(self._keys[i]),
                _show(self._values[i]),
            )

    # -- changes ---------------------------------------------------------------

    def set(self, key: bytes, value: bytes) -> bool:
        """Add or update key; True if a record was added.  OSError leaves everything as it was."""
        new = record_bytes(key, value)
        with self._locked():
            i = self._index.get(key)
            if i is not None:
                old = self._record(i)
                if old != new:
                    self._rewrite(i, old, new)
                    self._raw.pop(i, None)
                    self._values[i] = value[:MAX_VALUE_SIZE]
                if self.debug:
                    log.debug(
                        "kvp_key_add_or_modify: updated: pool=%d key=%s val=%s",
                        self.number,
                        _show(key),
                        _show(value),
                    )
                return False
            self._salvage_partial()
            n = len(self._keys)
            self._append(n * R, new)
            self._keys.append(key[:MAX_KEY_SIZE])
            self._values.append(value[:MAX_VALUE_SIZE])
            self._index.setdefault(self._keys[-1], n)
            if self.debug:
                log.debug(
                    "kvp_key_add_or_modify: added: pool=%d key=%s val=%s",
                    self.number,
                    _show(key),
                    _show(value),
                )
            return True

    def delete(self, key: bytes) -> bool:
        """Remove the first record with key; False if there is none."""
        with self._locked():
            i = self._index.get(key)
            if i is None:
                if self.debug:
                    log.debug(
                        "kvp_key_delete: could not delete KVP: pool=%d key=%s. Record not found",
                        self.number,
                        _show(key),
                    )
                return False
            if self.debug:
                log.debug(
                    "kvp_key_delete: deleting the KVP: pool=%d key=%s val=%s",
                    self.number,
                    _show(key),
                    _show(self._values[i]),
                )
            self._salvage_partial()
            n = len(self._keys)
            if i == n - 1:
                self._change(lambda: os.ftruncate(self._fd, (n - 1) * R))
            else:
                tail = b"".join(self._record(j) for j in range(i + 1, n))
                self._change(lambda: self._journaled(i * R, tail, n * R, (n - 1) * R))
            del self._keys[i]
            del self._values[i]
            self._raw = {(j - 1 if j > i else j): b for j, b in self._raw.items() if j != i}
            index: dict[bytes, int] = {}
            for j, k in enumerate(self._keys):
                index.setdefault(k, j)
            self._index = index
            return True

    def _change(self, action: object) -> None:
        """Run a file change; on failure forget the cache (the file may differ now)."""
        assert callable(action)
        try:
            action()
        except BaseException:
            self._sig = None
            raise
        self._stamp()

    def _rewrite(self, i: int, old: bytes, new: bytes) -> None:
        plan = in_place_plan(i * R, old, new)
        if plan is None:
            size = os.fstat(self._fd).st_size
            self._change(lambda: self._journaled(i * R, new, size, size))
            return

        def write() -> None:
            for piece in plan:
                _pwrite_all(self._fd, piece.data, piece.offset)

        self._change(write)

    def _append(self, offset: int, rec: bytes) -> None:
        def write() -> None:
            try:
                _pwrite_all(self._fd, rec, offset)
            except OSError:
                # Out of space part way: take the partial record back.
                try:
                    os.ftruncate(self._fd, offset)
                except OSError:
                    pass
                raise

        self._change(write)

    def _salvage_partial(self) -> None:
        """Move an incomplete trailing record aside before the file's size changes."""
        if not self._partial:
            return
        n = len(self._keys)
        tail = os.pread(self._fd, self._partial, n * R)
        target = salvage_path(self.state_dir, self.number)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _pwrite_all_append(fd, tail)
        finally:
            os.close(fd)
        self._change(lambda: os.ftruncate(self._fd, n * R))
        log.warning(
            "pool %d: moved %d trailing bytes (an incomplete record) to %s",
            self.number,
            len(tail),
            target,
        )
        self._partial = 0

    # -- the journal ---------------------------------------------------------------

    def _journaled(self, offset: int, data: bytes, old_size: int, new_size: int) -> None:
        """Apply data at offset and resize, crash-safely through a redo journal."""
        jpath = journal_path(self.state_dir, self.number)
        blob = encode_journal(os.fstat(self._fd).st_ino, old_size, new_size, offset, data)
        fd = os.open(jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _pwrite_all(fd, blob, 0)
        except OSError:
            os.close(fd)
            _unlink(jpath)
            raise
        os.close(fd)
        # From here on the journal is complete: if anything below fails or we
        # are killed, replaying it completes the change.
        self._journal_pending = True
        self._recover()

    def _recover(self) -> None:
        """Replay (or discard) the journal; called with the lock held."""
        jpath = journal_path(self.state_dir, self.number)
        try:
            with open(jpath, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            self._journal_pending = False
            return
        except OSError as e:
            raise PoolUnavailable(f"cannot read {jpath}: {e}") from e
        entry = _parse_journal(blob)
        if entry is None:
            log.warning("pool %d: discarding incomplete journal %s", self.number, jpath)
            _unlink(jpath)
            self._journal_pending = False
            return
        ino, old_size, new_size, offset, data = entry
        st = os.fstat(self._fd)
        if st.st_ino != ino or st.st_size < new_size:
            log.error(
                "pool %d: journal %s does not fit %s any more (changed by another program); "
                "discarding it",
                self.number,
                jpath,
                self.path,
            )
            _unlink(jpath)
            self._journal_pending = False
            return
        try:
            cur = st.st_size
            keep: bytes | None = None
            if new_size < old_size:
                # Still the old size with our duplicate of the last record at
                # new_size: not truncated yet.  Anything beyond old_size (or,
                # once truncated, beyond new_size) another writer appended.
                dup = data[-R:] if len(data) >= R else b""
                if cur >= old_size and dup and os.pread(self._fd, R, new_size) == dup:
                    keep = os.pread(self._fd, cur - old_size, old_size)
                else:
                    keep = os.pread(self._fd, cur - new_size, new_size)
            _pwrite_all(self._fd, data, offset)
            if keep is not None:
                if keep:
                    _pwrite_all(self._fd, keep, new_size)
                os.ftruncate(self._fd, new_size + len(keep))
        except OSError as e:
            log.error("pool %d: replaying journal %s failed: %s", self.number, jpath, e)
            self._sig = None
            raise PoolUnavailable(f"journal replay failed: {e}") from e
        _unlink(jpath)
        self._journal_pending = False
        self._sig = None


def _pwrite_all_append(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        n = os.write(fd, data[done:])
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def encode_journal(ino: int, old_size: int, new_size: int, offset: int, data: bytes) -> bytes:
    """A journal entry: put data at offset of the pool file (inode ino), resize old -> new."""
    head = _JOURNAL_HEAD.pack(_JOURNAL_MAGIC, ino, old_size, new_size, offset, len(data))
    return head + data + _CRC.pack(zlib.crc32(data, zlib.crc32(head)))


def _parse_journal(blob: bytes) -> tuple[int, int, int, int, bytes] | None:
    if len(blob) < _JOURNAL_HEAD.size + _CRC.size:
        return None
    magic, ino, old_size, new_size, offset, length = _JOURNAL_HEAD.unpack_from(blob)
    if magic != _JOURNAL_MAGIC or len(blob) != _JOURNAL_HEAD.size + length + _CRC.size:
        return None
    head = blob[: _JOURNAL_HEAD.size]
    data = blob[_JOURNAL_HEAD.size : _JOURNAL_HEAD.size + length]
    (crc,) = _CRC.unpack_from(blob, _JOURNAL_HEAD.size + length)
    if zlib.crc32(data, zlib.crc32(head)) != crc:
        return None
    return ino, old_size, new_size, offset, data


class PoolSet:
    """The five pools of a state directory."""

    def __init__(self, state_dir: str, *, debug: bool = False) -> None:
        self.state_dir = state_dir
        self.pools = [Pool(state_dir, n, debug=debug) for n in range(POOL_COUNT)]

    def open(self) -> None:
        """Create the directory (0755) and open every pool; OSError if that is impossible."""
        if not os.path.exists(self.state_dir):
            try:
                os.mkdir(self.state_dir, 0o755)
            except FileExistsError:
                pass
            except OSError as e:
                log.error(
                    "Failed to create '%s'; error: %d %s",
                    self.state_dir,
                    e.errno,
                    os.strerror(e.errno or errno.EIO),
                )
                raise
        for pool in self.pools:
            pool.open()

    def __getitem__(self, number: int) -> Pool:
        return self.pools[number]

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
