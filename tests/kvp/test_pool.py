# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.pool: the pool files, their locks, the cache and crash safety."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvdaemons import log
from hvdaemons.kvp.pool import (
    Pool,
    PoolSet,
    PoolUnavailable,
    encode_journal,
    in_place_plan,
    parse_pool,
    parse_record,
    record_bytes,
    split_pages,
)
from hvsim.fsbox import FsSpec
from tests.support.kvp import (
    NEUTRAL_CWD,
    REPO,
    R,
    build_c_writer,
    daemon_env,
    golden_parse,
    golden_record,
    reference_record,
    unshare_python,
    write_pool,
)
from tests.support.vss_sandbox import sandbox


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def pool(state: Path) -> Iterator[Pool]:
    p = Pool(str(state), 0)
    p.open()
    yield p
    p.close()


def content(state: Path, n: int = 0) -> bytes:
    return (state / f".kvp_pool_{n}").read_bytes()


def test_poolset_creates_dir_0755_and_files_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        pools = PoolSet(str(tmp_path / "hyperv"))
        pools.open()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "hyperv").st_mode) == 0o755
    for n in range(5):
        st = os.stat(tmp_path / "hyperv" / f".kvp_pool_{n}")
        assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_size == 0
        assert fcntl.fcntl(pools[n].fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    pools.close()


def test_record_format_matches_the_kernel_layout() -> None:
    # key[512] then value[2048], NUL-filled: written out by hand.
    rec = record_bytes(b"Key", "W\u00e9rt".encode())
    assert rec == b"Key" + bytes(509) + bytes.fromhex("57c3a97274") + bytes(2043)
    assert rec == golden_record(b"Key", "W\u00e9rt".encode())
    # Cut to fit the arrays: no terminator when full.
    assert record_bytes(b"k" * 600, b"v" * 3000) == b"k" * 512 + b"v" * 2048
    assert record_bytes(b"", b"") == bytes(R)


def test_parsing_stops_at_each_arrays_nul_or_its_end() -> None:
    rec = b"key\0junk".ljust(512, b"J") + b"val\0stale".ljust(2048, b"S")
    assert parse_record(rec) == (b"key", b"val")
    assert parse_record(b"K" * 512 + b"V" * 2048) == (b"K" * 512, b"V" * 2048)
    assert parse_record(b"x" + rec, 1) == (b"key", b"val")
    # Empty arrays are empty strings, not 512 or 2048 NULs.
    assert parse_record(golden_record(b"", b"v")) == (b"", b"v")
    assert parse_record(golden_record(b"k", b"")) == (b"k", b"")
    # Whole records only; a trailing partial one is ignored.
    two = golden_record(b"a", b"1") + golden_record(b"b", b"")
    assert parse_pool(two + rec[: R - 1]) == [(b"a", b"1"), (b"b", b"")]
    assert parse_pool(rec[: R - 1]) == [] and parse_pool(b"") == []


def test_set_get_enumerate_delete_and_exact_bytes(pool: Pool, state: Path) -> None:
    assert pool.set(b"alpha", b"1") is True
    assert pool.set(b"beta", "zwei ✓".encode()) is True
    assert pool.set(b"alpha", b"one, longer") is False
    assert content(state) == golden_record(b"alpha", b"one, longer") + golden_record(
        b"beta", "zwei ✓".encode()
    )
    assert pool.get(b"alpha") == b"one, longer"
    assert pool.get(b"alph") is None and pool.get(b"alpha\0") is None
    assert pool.record(1) == golden_record(b"beta", "zwei ✓".encode())
    assert pool.record(2) is None and pool.record(-1) is None
    # A shorter value: zero-filled, no stale bytes (the reference leaves the old ones).
    pool.set(b"alpha", b"1")
    assert content(state)[:R] == golden_record(b"alpha", b"1")
    assert pool.delete(b"alpha") is True
    assert pool.delete(b"alpha") is False
    assert content(state) == golden_record(b"beta", "zwei ✓".encode())
    assert pool.delete(b"beta") is True
    assert content(state) == b""


def test_reads_reference_file_with_stale_bytes(pool: Pool, state: Path) -> None:
    recs = [
        reference_record(b"k0", b"v0", junk=b"OLD"),
        reference_record(b"k1", b"v1", junk=b"\x01\x02"),
        reference_record(b"k2", b"v2"),
        reference_record(b"k3", b"v3", junk=b"z"),
    ]
    write_pool(state / ".kvp_pool_0", recs)
    assert pool.items() == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]
    # ENUMERATE sends the whole arrays, stale bytes included, as the reference does.
    assert [pool.record(i) for i in range(4)] == recs
    # Our own writes zero-fill; the other records keep their bytes.
    pool.set(b"k1", b"new")
    assert content(state) == recs[0] + golden_record(b"k1", b"new") + recs[2] + recs[3]
    pool.delete(b"k0")
    assert content(state) == golden_record(b"k1", b"new") + recs[2] + recs[3]


def test_duplicate_keys_written_by_others(pool: Pool, state: Path) -> None:
    write_pool(
        state / ".kvp_pool_0",
        [golden_record(b"k", b"first"), golden_record(b"x", b"y"), golden_record(b"k", b"second")],
    )
    assert pool.get(b"k") == b"first"
    pool.set(b"k", b"updated")
    assert pool.items() == [(b"k", b"updated"), (b"x", b"y"), (b"k", b"second")]
    pool.delete(b"k")
    assert pool.items() == [(b"x", b"y"), (b"k", b"second")]
    assert pool.get(b"k") == b"second"


def test_dump_shows_bytes_that_are_not_utf8_escaped(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    write_pool(state / ".kvp_pool_0", [golden_record(b"caf\xe9", b"\xff!")])
    pool.dump()
    assert logs.messages() == [
        "===Start dumping the contents of pool 0 ===",
        "pool: 0, 1/1 key=caf\\xe9 val=\\xff!",
    ]


def test_empty_key_and_value_read_as_empty(pool: Pool, state: Path) -> None:
    write_pool(state / ".kvp_pool_0", [golden_record(b"", b"v"), golden_record(b"k", b"")])
    assert pool.items() == [(b"", b"v"), (b"k", b"")]
    assert pool.get(b"") == b"v" and pool.get(b"k") == b""


def test_unterminated_arrays(pool: Pool, state: Path) -> None:
    rec = b"K" * 512 + b"V" * 2048
    write_pool(state / ".kvp_pool_0", [rec])
    assert pool.items() == [(b"K" * 512, b"V" * 2048)]
    assert pool.record(0) == rec
    assert pool.get(b"K" * 512) == b"V" * 2048


def _external_rewrite(path: Path, index: int, key: bytes, value: bytes) -> None:
    """Another program rewrites one record in place under the POSIX lock."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.pwrite(fd, golden_record(key, value), index * R)
    finally:
        os.close(fd)


def test_same_size_external_change_right_after_our_write_is_seen(pool: Pool, state: Path) -> None:
    path = state / ".kvp_pool_0"
    for i in range(200):
        pool.set(b"key", b"ours %d" % i)
        _external_rewrite(path, 0, b"key", b"them %d" % i)
        assert pool.get(b"key") == b"them %d" % i


def test_same_size_external_change_right_after_our_read_is_seen(pool: Pool, state: Path) -> None:
    path = state / ".kvp_pool_0"
    pool.set(b"key", b"v")
    for i in range(200):
        _external_rewrite(path, 0, b"key", b"a %d" % i)
        assert pool.get(b"key") == b"a %d" % i
        _external_rewrite(path, 0, b"key", b"b %d" % i)
        assert pool.get(b"key") == b"b %d" % i


CLOCK_REALTIME_COARSE = 5  # <linux/time.h>; the time module does not name it


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_unchanged_file_is_not_read_again(pool: Pool) -> None:
    for i in range(100):
        pool.set(b"k%d" % i, b"v" * 100)
    # The signature is trusted once the coarse clock has passed the last write.
    mtime = os.stat(pool.path).st_mtime_ns
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= mtime:
        time.sleep(0.001)
    assert pool.get(b"k0") == b"v" * 100
    before = _bytes_read()
    for i in range(100):
        assert pool.get(b"k%d" % i) == b"v" * 100
        assert pool.record(i) is not None
    # rchar also counts reading /proc/self/io itself (well under a record).
    assert _bytes_read() - before < R


def test_our_own_write_is_trusted_at_once(pool: Pool) -> None:
    # After each write of ours the file's mtime is set back a nanosecond, so
    # the signature we keep is exact from that moment: no re-read, even
    # within the write's clock tick.
    for i in range(20):
        pool.set(b"k%d" % i, b"v%d" % i)
        before = _bytes_read()
        assert pool.get(b"k%d" % i) == b"v%d" % i
        assert pool.get(b"k0") == b"v0"
        assert _bytes_read() - before < R


def test_a_foreign_change_is_trusted_once_the_clock_has_moved_on(pool: Pool, state: Path) -> None:
    pool.set(b"k", b"ours")
    _external_rewrite(state / ".kvp_pool_0", 0, b"k", b"theirs")
    assert pool.get(b"k") == b"theirs"  # read at once: the signature changed
    # Loaded within the write's clock tick, the signature was not trusted; once
    # the coarse clock has passed the mtime, one more read and then none.
    mtime = os.stat(state / ".kvp_pool_0").st_mtime_ns
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= mtime:
        time.sleep(0.001)
    assert pool.get(b"k") == b"theirs"
    before = _bytes_read()
    for _ in range(100):
        assert pool.get(b"k") == b"theirs"
    assert _bytes_read() - before < R


def test_a_foreign_change_read_within_its_clock_tick_is_read_again(pool: Pool, state: Path) -> None:
    # Another write in the same tick could leave every stat field as it is,
    # so a signature taken before the coarse clock passes the mtime is not
    # trusted: the next GET reads again.  Samples where the clock moved on
    # before the second GET prove nothing and are skipped.
    pool.set(b"k", b"ours")
    samples = 0
    for i in range(500):
        _external_rewrite(state / ".kvp_pool_0", 0, b"k", b"theirs %03d" % i)
        assert pool.get(b"k") == b"theirs %03d" % i
        before = _bytes_read()
        assert pool.get(b"k") == b"theirs %03d" % i
        read = _bytes_read() - before
        if time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= os.stat(pool.path).st_mtime_ns:
            assert read >= R, "a signature from within the write's clock tick was trusted"
            samples += 1
            if samples == 5:
                return
    raise AssertionError(f"only {samples} GETs within a clock tick in 500 tries")


def _open_inodes() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            inodes.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except FileNotFoundError:  # listdir's own descriptor
            pass
    return inodes


def test_replaced_file_is_reopened(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    pool.set(b"a", b"1")
    old_ino = os.stat(state / ".kvp_pool_0").st_ino
    os.link(state / ".kvp_pool_0", state / "old")  # the old file lives on
    other = state / "replacement"
    write_pool(other, [golden_record(b"b", b"2")])
    os.rename(other, state / ".kvp_pool_0")
    assert pool.items() == [(b"b", b"2")]
    assert logs.messages(log.WARNING) == [
        f"pool file {state}/.kvp_pool_0 was replaced; reopening it"
    ]
    pool.set(b"c", b"3")
    assert golden_parse(content(state)) == [(b"b", b"2"), (b"c", b"3")]
    assert os.fstat(pool.fd).st_ino == os.stat(state / ".kvp_pool_0").st_ino
    # The old descriptor is closed (and with it our locks on the old file).
    assert old_ino not in _open_inodes()
    assert content(state, 0) != (state / "old").read_bytes()


def _assert_get_takes_no_lock(pool: Pool, state: Path, key: bytes, value: bytes) -> None:
    """The next GET answers while another process holds the pool lock: it neither
    re-reads nor queues for the lock (the pool's cache must be trusted now)."""
    holder = _LockHolder(state / ".kvp_pool_0", "posix")
    try:
        got: list[bytes | None] = []
        t = threading.Thread(target=lambda: got.append(pool.get(key)))
        t.start()
        # Either the GET answers, or it queues for the lock: the latter fails at once.
        deadline = time.monotonic() + 30  # a hang guard
        while t.is_alive():
            assert not _lock_waiters(state / ".kvp_pool_0"), "GET waited for the pool lock"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert got == [value]
    finally:
        holder.release()
    t.join(30)


def test_a_get_on_an_unchanged_file_takes_no_lock(pool: Pool, state: Path) -> None:
    pool.set(b"k", b"v")
    mtime = os.stat(pool.path).st_mtime_ns
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= mtime:
        time.sleep(0.001)
    assert pool.get(b"k") == b"v"
    _assert_get_takes_no_lock(pool, state, b"k", b"v")


def test_deleted_file_is_recreated(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    pool.set(b"a", b"1")
    os.unlink(state / ".kvp_pool_0")
    assert pool.items() == []
    assert logs.messages(log.WARNING) == [
        f"pool file {state}/.kvp_pool_0 vanished; creating it again"
    ]
    pool.set(b"b", b"2")
    assert content(state) == golden_record(b"b", b"2")


def test_partial_trailing_record_is_ignored_then_salvaged(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    junk = b"half a record" * 10
    write_pool(state / ".kvp_pool_0", [golden_record(b"a", b"1")], tail=junk)
    assert pool.items() == [(b"a", b"1")]
    assert logs.messages(log.WARNING) == [
        f"pool 0: {state}/.kvp_pool_0 is 2690 bytes, not a multiple of 2560;"
        " ignoring its last 130 bytes"
    ]
    # An in-place change keeps the size: the tail stays where it is.
    pool.set(b"a", b"2")
    assert content(state) == golden_record(b"a", b"2") + junk
    # A size change first moves the tail aside (nothing is lost).
    pool.set(b"b", b"3")
    assert content(state) == golden_record(b"a", b"2") + golden_record(b"b", b"3")
    assert (state / ".kvp_salvage_0").read_bytes() == junk
    assert logs.messages(log.WARNING)[-1] == (
        f"pool 0: moved 130 trailing bytes (an incomplete record) to {state}/.kvp_salvage_0"
    )
    assert stat.S_IMODE(os.stat(state / ".kvp_salvage_0").st_mode) == 0o600
    assert not _fds_open_on(state / ".kvp_salvage_0")


class _LockHolder:
    """A separate process holding one kind of lock on a file until told to let go."""

    def __init__(self, path: Path, kind: str) -> None:
        code = (
            "import fcntl, sys\n"
            "f = open(sys.argv[1], 'rb+')\n"
            "(fcntl.lockf if sys.argv[2] == 'posix' else fcntl.flock)(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "locked\n"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(10)


def _lock_waiters(path: Path) -> list[str]:
    """Kinds (POSIX, FLOCK) of the locks this process waits for on path (/proc/locks "->")."""
    st = os.stat(path)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    kinds = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "->" and fields[5:7] == [str(os.getpid()), ident]:
            kinds.append(fields[2])
    return kinds


def _wait_for_lock_waiter(path: Path, kind: str) -> None:
    """Until this process waits for a lock of this kind on path."""
    deadline = time.monotonic() + 20  # a hang guard
    while kind not in _lock_waiters(path):
        assert time.monotonic() < deadline, f"no {kind} lock waiter on {path}"
        time.sleep(0.01)


def _set_behind_a_lock(
    pool: Pool, state: Path, holder: _LockHolder, waiter: str, record: tuple[bytes, bytes]
) -> None:
    """pool.set(*record) while holder keeps its lock on pool 0: the SET queues behind
    it (the event: the kernel lists it in /proc/locks) and leaves the file alone,
    then completes once the lock is released."""
    before = content(state)
    done = threading.Event()

    def change() -> None:
        pool.set(*record)
        done.set()

    t = threading.Thread(target=change)
    t.start()
    try:
        _wait_for_lock_waiter(state / ".kvp_pool_0", waiter)
        assert not done.is_set()
        assert content(state) == before
    finally:
        holder.release()
    t.join(10)
    assert done.is_set()


@pytest.mark.parametrize("kind", ["posix", "flock"])
def test_changes_wait_for_other_lock_holders(pool: Pool, state: Path, kind: str) -> None:
    pool.set(b"a", b"1")
    assert content(state) == golden_record(b"a", b"1")
    holder = _LockHolder(state / ".kvp_pool_0", kind)
    _set_behind_a_lock(pool, state, holder, "POSIX" if kind == "posix" else "FLOCK", (b"b", b"2"))
    assert pool.items() == [(b"a", b"1"), (b"b", b"2")]


def test_concurrent_writers_lose_nothing(pool: Pool, state: Path, tmp_path: Path) -> None:
    n = 150
    path = state / ".kvp_pool_0"
    writer = build_c_writer(tmp_path)
    cloud_init = (
        "import fcntl, sys\n"
        "for i in range(int(sys.argv[2])):\n"
        "    rec = (b'cloudinit%d' % i).ljust(512, b'\\0') + (b'v%d' % i).ljust(2048, b'\\0')\n"
        "    with open(sys.argv[1], 'ab') as f:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX)\n"
        "        f.write(rec)\n"
        "        f.flush()\n"
        "        fcntl.flock(f, fcntl.LOCK_UN)\n"
    )
    procs = [
        subprocess.Popen([str(writer), str(path), str(n), "posix"]),
        subprocess.Popen([sys.executable, "-c", cloud_init, str(path), str(n)]),
    ]
    for i in range(n):
        pool.set(b"ours%d" % i, b"v%d" % i)
    assert [p.wait(60) for p in procs] == [0, 0]
    data = content(state)
    assert len(data) % R == 0
    keys = [k for k, _ in golden_parse(data)]
    want = {b"%s%d" % (p, i) for p in (b"ours", b"posix", b"cloudinit") for i in range(n)}
    assert len(keys) == len(want) and set(keys) == want
    assert {k for k, _ in pool.items()} == want


# -- crash safety ---------------------------------------------------------------------------


def _parse(rec: bytes) -> tuple[bytes, bytes]:
    return golden_parse(rec)[0]


def test_in_place_plan_every_prefix_reads_old_or_new() -> None:
    rng = random.Random(1)
    journaled = 0
    for slot in range(16):  # every phase of a record against the page grid, twice
        base = slot * R
        for _ in range(150):
            key = b"key%d" % rng.randrange(1000)
            old = golden_record(
                key, bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(2048)))
            )
            new = golden_record(
                key, bytes(rng.choice(b"uvwxyz") for _ in range(rng.randrange(2048)))
            )
            if old == new:
                continue
            plan = in_place_plan(base, old, new)
            if plan is None:
                journaled += 1
                continue
            rec = bytearray(old)
            for piece in plan:
                # Nothing outside the record, nothing across a page boundary.
                assert base <= piece.offset and piece.offset + len(piece.data) <= base + R
                assert piece.offset // 4096 == (piece.offset + len(piece.data) - 1) // 4096
                rec[piece.offset - base : piece.offset - base + len(piece.data)] = piece.data
                assert _parse(bytes(rec)) in (_parse(old), _parse(new))
            assert bytes(rec) == new
    # Both kinds occur: a plan that never runs would leave only journaled cases.
    assert 0 < journaled < 16 * 150 // 2


# Hand-made cases against a 4096-byte page.  The record at file offset R
# (2560..5120) crosses the page boundary 4096 at record offset 1536, i.e.
# value byte 1024; the record at 0 crosses none.
def test_in_place_plan_within_one_page_is_the_differing_bytes_alone() -> None:
    old = golden_record(b"key", b"abc")
    new = golden_record(b"key", b"abd")
    assert in_place_plan(0, old, new, 4096) == [(512 + 2, b"d")]
    # A shorter value: the bytes that go become zeros, in the same piece.
    assert in_place_plan(0, old, golden_record(b"key", b"a"), 4096) == [(512 + 1, b"\0\0")]


def test_in_place_plan_shorter_value_across_the_boundary_writes_the_nul_first() -> None:
    old = golden_record(b"key", b"a" * 1500)
    new = golden_record(b"key", b"b" * 10)
    # Differing bytes: value 0..1500; first piece up to the boundary carries the new NUL.
    assert in_place_plan(R, old, new, 4096) == [
        (R + 512, b"b" * 10 + bytes(1014)),
        (4096, bytes(476)),
    ]


def test_in_place_plan_longer_value_across_the_boundary_writes_the_tail_first() -> None:
    old = golden_record(b"key", b"a" * 10)
    new = golden_record(b"key", b"b" * 1500)
    # The tail beyond the old NUL goes first: until the head lands, old reads "a" * 10.
    assert in_place_plan(R, old, new, 4096) == [
        (4096, b"b" * 476),
        (R + 512, b"b" * 1024),
    ]


def test_in_place_plan_from_the_first_byte_to_the_last() -> None:
    # Nothing in common at either end: the whole record, in one piece.
    old = golden_record(b"a", b"x" * 2048)
    new = golden_record(b"b", b"y" * 2048)
    assert in_place_plan(0, old, new, 4096) == [(0, new)]


def test_in_place_plan_refuses_when_both_values_straddle_the_boundary() -> None:
    old = golden_record(b"key", b"a" * 1500)
    new = golden_record(b"key", b"b" * 1500)
    assert in_place_plan(R, old, new, 4096) is None
    # The same change inside one page is a single write.
    assert in_place_plan(0, old, new, 4096) == [(512, b"b" * 1500)]


def test_a_journaled_change_leaves_no_journal_open(pool: Pool, state: Path) -> None:
    for i in range(3):
        pool.set(b"k%d" % i, b"v")
    pool.delete(b"k0")  # a shift: through the journal
    # Replayed and removed: the next GET trusts the cache again, without the lock.
    _assert_get_takes_no_lock(pool, state, b"k2", b"v")
    assert [k for k, _ in pool.items()] == [b"k1", b"k2"]
    assert not (state / ".kvp_journal_0").exists()
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # listdir's own descriptor
            pass
    assert not [link for link in links if ".kvp_journal" in link], links


def test_journal_replay_completes_an_interrupted_delete(state: Path) -> None:
    records = [golden_record(b"k%d" % i, b"v%d" % i * 300) for i in range(6)]
    write_pool(state / ".kvp_pool_0", records)
    ino = os.stat(state / ".kvp_pool_0").st_ino
    tail = b"".join(records[2:])
    # Killed after the journal and the first page of the shift were written.
    (state / ".kvp_journal_0").write_bytes(encode_journal(ino, 6 * R, 5 * R, 1 * R, tail))
    with open(state / ".kvp_pool_0", "r+b") as f:
        f.seek(R)
        f.write(tail[: 4096 - R])
    p = Pool(str(state), 0)
    p.open()
    assert [k for k, _ in p.items()] == [b"k0", b"k2", b"k3", b"k4", b"k5"]
    assert content(state) == records[0] + tail
    assert not (state / ".kvp_journal_0").exists()
    p.close()


def test_journal_replay_keeps_records_appended_after_the_crash(state: Path) -> None:
    records = [golden_record(b"k%d" % i, b"v") for i in range(4)]
    foreign = golden_record(b"appended", b"later")
    write_pool(state / ".kvp_pool_0", [*records, foreign])
    ino = os.stat(state / ".kvp_pool_0").st_ino
    (state / ".kvp_journal_0").write_bytes(
        encode_journal(ino, 4 * R, 3 * R, 0, b"".join(records[1:]))
    )
    p = Pool(str(state), 0)
    p.open()
    assert [k for k, _ in p.items()] == [b"k1", b"k2", b"k3", b"appended"]
    p.close()


def test_journal_replay_after_the_truncate_is_idempotent(state: Path) -> None:
    records = [golden_record(b"k%d" % i, b"v") for i in range(4)]
    write_pool(state / ".kvp_pool_0", records[1:])  # shift and truncate done, journal left
    ino = os.stat(state / ".kvp_pool_0").st_ino
    (state / ".kvp_journal_0").write_bytes(
        encode_journal(ino, 4 * R, 3 * R, 0, b"".join(records[1:]))
    )
    p = Pool(str(state), 0)
    p.open()
    assert [k for k, _ in p.items()] == [b"k1", b"k2", b"k3"]
    p.close()


@pytest.mark.parametrize("damage", ["truncated", "head-only", "crc", "other-file"])
def test_bad_journal_is_discarded_and_the_pool_left_alone(
    state: Path, damage: str, logs: log.Capture
) -> None:
    records = [golden_record(b"k%d" % i, b"v") for i in range(3)]
    write_pool(state / ".kvp_pool_0", records)
    ino = os.stat(state / ".kvp_pool_0").st_ino
    blob = encode_journal(ino + (damage == "other-file"), 3 * R, 2 * R, 0, b"".join(records[1:]))
    if damage == "truncated":
        blob = blob[:1000]
    elif damage == "head-only":
        blob = blob[:46]  # cut inside the 48-byte header
    elif damage == "crc":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    (state / ".kvp_journal_0").write_bytes(blob)
    # An old mtime: the signature read at open() is trusted at once.
    os.utime(state / ".kvp_pool_0", ns=(10**18, 10**18))
    p = Pool(str(state), 0)
    p.open()
    assert content(state) == b"".join(records)
    assert not (state / ".kvp_journal_0").exists()
    journal, pool_file = state / ".kvp_journal_0", state / ".kvp_pool_0"
    if damage == "other-file":
        said = (
            f"pool 0: journal {journal} does not fit {pool_file} any more"
            " (changed by another program); discarding it"
        )
    else:
        said = f"pool 0: discarding incomplete journal {journal}"
    assert logs.messages(log.WARNING) == [said]
    # Discarded for good: the requests that follow need no lock to look for it again.
    _assert_get_takes_no_lock(p, state, b"k1", b"v")
    p.close()


# The child of the kill -9 test: applies a seeded sequence of operations,
# reporting each one's start and end on stdout.
_CHILD = r"""
import os, sys
# The tests package from the repository, hvdaemons from PYTHONPATH (the one under test).
sys.path.append(sys.argv[3])
from tests.kvp.test_pool import crash_ops
from hvdaemons.kvp.pool import Pool
p = Pool(sys.argv[1], 0)
p.open()
for i, (op, key, value) in enumerate(crash_ops(int(sys.argv[2]))):
    os.write(1, b"s%d\n" % i)
    if op == "set":
        p.set(key, value)
    else:
        p.delete(key)
    os.write(1, b"d%d\n" % i)
"""

CRASH_WARMUP = 150


def crash_ops(seed: int, count: int = 4000) -> list[tuple[str, bytes, bytes]]:
    """Big values, in-place updates, appends and deletes near the front (long shifts)."""
    rng = random.Random(seed)
    keys: list[bytes] = []
    ops = []
    serial = 0
    for i in range(count):
        r = rng.random()
        if i < CRASH_WARMUP or r < 0.3 or not keys:
            key = b"key-%d" % serial
            serial += 1
            keys.append(key)
            value = bytes([65 + serial % 26]) * rng.randrange(2048)
            ops.append(("set", key, value))
        elif r < 0.75:
            key = rng.choice(keys)
            ops.append(("set", key, bytes([97 + rng.randrange(26)]) * rng.randrange(2048)))
        else:
            key = keys.pop(rng.randrange(min(5, len(keys))))
            ops.append(("del", key, b""))
    return ops


def _model(ops: list[tuple[str, bytes, bytes]], n: int) -> list[tuple[bytes, bytes]]:
    items: dict[bytes, bytes] = {}
    for op, key, value in ops[:n]:
        if op == "set":
            items[key] = value
        else:
            del items[key]
    return list(items.items())


def _kill_once(state: Path, seed: int, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state), str(seed), str(REPO)],
        stdout=subprocess.PIPE,
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
    )
    assert proc.stdout is not None
    out = b""
    while b"d%d\n" % CRASH_WARMUP not in out:
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, "the writer died"
        out += chunk
    time.sleep(rng.uniform(0, 0.15))
    proc.send_signal(signal.SIGKILL)
    out += proc.stdout.read()
    proc.wait()
    done = [int(line[1:]) for line in out.split() if line.startswith(b"d")]
    completed = done[-1] + 1
    ops = crash_ops(seed)
    after = Pool(str(state), 0)
    after.open()  # replays a journal, as the restarted daemon does
    got = after.items()
    after.close()
    assert got in (_model(ops, completed), _model(ops, completed + 1)), f"seed {seed}"
    assert not (state / ".kvp_journal_0").exists()


def test_kill_9_leaves_old_or_new_state(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(12):
        state = tmp_path / f"s{i}"
        state.mkdir()
        _kill_once(state, 1000 + i, rng)


@pytest.mark.slow
def test_kill_9_leaves_old_or_new_state_many_times(tmp_path: Path) -> None:
    rng = random.Random(8)
    for i in range(300):
        state = tmp_path / f"s{i}"
        state.mkdir()
        _kill_once(state, 5000 + i, rng)


# -- full disk -------------------------------------------------------------------------------

_ENOSPC = r"""
import errno, json, os, subprocess, sys
d = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "hvtest", d], check=True)
from hvdaemons.kvp.pool import Pool
p = Pool(d, 0)
p.open()
out = {}
added = 0
try:
    while True:
        p.set(b"key%d" % added, b"x" * 2000)
        added += 1
except OSError as e:
    out["set_errno"] = e.errno
out["added"] = added
out["mem"] = len(p.items())
data = open(os.path.join(d, ".kvp_pool_0"), "rb").read()
out["size"] = len(data)
out["file"] = len(data) // 2560
# Deleting the first record needs a journal as big as the pool: no room.
try:
    p.delete(b"key0")
    out["delete_first"] = "ok"
except OSError as e:
    out["delete_first"] = e.errno
out["after_delete_first"] = os.path.getsize(os.path.join(d, ".kvp_pool_0")) // 2560
out["journal_left"] = os.path.exists(os.path.join(d, ".kvp_journal_0"))
# Deleting the last one is a truncate: always possible, and frees room.
out["delete_last"] = p.delete(b"key%d" % (added - 1))
p.set(b"again", b"y")
out["final"] = [k.decode() for k, _ in p.items()][-2:]
print(json.dumps(out))
"""


def _mounted_child(code: str, d: Path) -> dict[str, Any]:
    """Run code in a private mount namespace on directory d (made here); its JSON answer."""
    d.mkdir()
    res = unshare_python(code, str(d))
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def test_full_disk_leaves_file_and_memory_consistent(tmp_path: Path) -> None:
    out = _mounted_child(_ENOSPC, tmp_path / "small")
    assert out["set_errno"] == 28  # ENOSPC
    assert out["added"] > 5
    assert out["mem"] == out["file"] == out["added"] and out["size"] == out["added"] * R
    assert out["delete_first"] == 28 and out["after_delete_first"] == out["added"]
    assert out["journal_left"] is False
    assert out["delete_last"] is True
    assert out["final"] == [f"key{out['added'] - 2}", "again"]


# -- what mutation testing found unguarded (tests/mutation/run.py) ---------------------------


def _fds_open_on(path: Path) -> list[int]:
    """This process's descriptors on path (also once it is unlinked)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # listdir's own descriptor
            continue
        if link in (str(path), f"{path} (deleted)"):
            fds.append(int(name))
    return fds


def test_stale_bytes_in_one_array_alone_are_kept_and_shifted(pool: Pool, state: Path) -> None:
    # Bytes after the key's NUL only, then after the value's NUL only.
    key_junk = b"k1\0" + b"J" * 509 + b"v1" + bytes(2046)
    value_junk = b"k3" + bytes(510) + b"v3\0" + b"S" * 2045
    write_pool(
        state / ".kvp_pool_0",
        [golden_record(b"k0", b"v0"), key_junk, golden_record(b"k2", b"v2"), value_junk],
    )
    assert pool.items() == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]
    assert pool.record(1) == key_junk and pool.record(3) == value_junk
    # A DELETE in front shifts them, exact bytes and all, in the file and in ENUMERATE.
    assert pool.delete(b"k0") is True
    assert [pool.record(i) for i in range(3)] == [key_junk, golden_record(b"k2", b"v2"), value_junk]
    assert content(state) == key_junk + golden_record(b"k2", b"v2") + value_junk


def test_a_change_no_page_order_makes_safe_goes_through_the_journal(
    pool: Pool, state: Path
) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    i = page // R  # the first record across a page boundary
    cut = page - i * R - 512  # the value byte the boundary falls on
    for n in range(i):
        pool.set(b"k%d" % n, b"v")
    old_value, new_value = b"a" * (cut + 100), b"b" * (cut + 200)
    pool.set(b"long", old_value)
    # Both values straddle the boundary: no order of the two pieces is safe.
    assert (
        in_place_plan(i * R, golden_record(b"long", old_value), golden_record(b"long", new_value))
        is None
    )
    assert pool.set(b"long", new_value) is False
    expected = b"".join(golden_record(b"k%d" % n, b"v") for n in range(i))
    assert content(state) == expected + golden_record(b"long", new_value)
    assert not (state / ".kvp_journal_0").exists()
    assert pool.get(b"long") == new_value


def test_a_pool_opens_its_file_on_first_use_and_again_after_close(state: Path) -> None:
    p = Pool(str(state), 0)
    assert p.fd == -1
    assert p.set(b"a", b"1") is True  # never open()ed: opened on first use
    assert content(state) == golden_record(b"a", b"1")
    p.close()
    assert p.fd == -1 and not _fds_open_on(state / ".kvp_pool_0")
    p.close()  # twice: nothing to close
    assert p.set(b"b", b"2") is True
    assert content(state) == golden_record(b"a", b"1") + golden_record(b"b", b"2")
    p.close()
    assert not _fds_open_on(state / ".kvp_pool_0")


def test_a_pool_on_descriptor_0_is_used_and_closed(state: Path) -> None:
    # A daemon started with stdin closed gets its first pool on descriptor 0.
    saved = os.dup(0)
    try:
        os.close(0)
        p = Pool(str(state), 0)
        p.open()
        assert p.fd == 0
        p.set(b"a", b"1")
        assert p.get(b"a") == b"1"
        assert _fds_open_on(state / ".kvp_pool_0") == [0]
        p.close()
        assert not _fds_open_on(state / ".kvp_pool_0")
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_poolset_close_closes_every_pool(tmp_path: Path) -> None:
    pools = PoolSet(str(tmp_path / "hyperv"))
    pools.open()
    assert all(_fds_open_on(tmp_path / "hyperv" / f".kvp_pool_{n}") for n in range(5))
    pools.close()
    assert not [n for n in range(5) if _fds_open_on(tmp_path / "hyperv" / f".kvp_pool_{n}")]


def test_poolset_that_cannot_create_its_directory_says_so_as_upstream(
    tmp_path: Path, logs: log.Capture
) -> None:
    (tmp_path / "file").write_bytes(b"")
    pools = PoolSet(str(tmp_path / "file" / "hyperv"))
    with pytest.raises(NotADirectoryError):
        pools.open()
    # kvp_file_init(): "Failed to create '%s'; error: %d %s", errno, strerror(errno).
    assert logs.messages(log.ERROR) == [
        f"Failed to create '{tmp_path}/file/hyperv'; error: 20 Not a directory"
    ]


def test_a_file_replaced_behind_our_back_is_locked_before_it_is_changed(
    pool: Pool, state: Path
) -> None:
    pool.set(b"a", b"1")
    other = state / "replacement"
    write_pool(other, [golden_record(b"b", b"2")])
    os.rename(other, state / ".kvp_pool_0")
    assert content(state) == golden_record(b"b", b"2")
    holder = _LockHolder(state / ".kvp_pool_0", "posix")  # on the new file
    _set_behind_a_lock(pool, state, holder, "POSIX", (b"c", b"3"))
    assert content(state) == golden_record(b"b", b"2") + golden_record(b"c", b"3")


def test_delete_first_salvages_a_partial_tail_even_of_one_byte(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    write_pool(state / ".kvp_pool_0", [golden_record(b"a", b"1")], tail=b"\x07")
    assert pool.items() == [(b"a", b"1")]
    assert pool.delete(b"a") is True
    pool.set(b"b", b"2")
    pool.set(b"c", b"3")
    pool.delete(b"c")
    assert logs.messages(log.WARNING) == [
        f"pool 0: {state}/.kvp_pool_0 is 2561 bytes, not a multiple of 2560;"
        " ignoring its last 1 bytes",
        f"pool 0: moved 1 trailing bytes (an incomplete record) to {state}/.kvp_salvage_0",
    ]
    assert (state / ".kvp_salvage_0").read_bytes() == b"\x07"
    assert content(state) == golden_record(b"b", b"2")


def test_a_partial_tail_after_many_records_is_seen(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    # 40 records: the file is read in more than one pread().
    records = [golden_record(b"k%d" % n, b"v%d" % n) for n in range(40)]
    write_pool(state / ".kvp_pool_0", records, tail=b"tail")
    assert [k for k, _ in pool.items()] == [b"k%d" % n for n in range(40)]
    pool.set(b"new", b"x")
    assert logs.messages(log.WARNING) == [
        f"pool 0: {state}/.kvp_pool_0 is 102404 bytes, not a multiple of 2560;"
        " ignoring its last 4 bytes",
        f"pool 0: moved 4 trailing bytes (an incomplete record) to {state}/.kvp_salvage_0",
    ]
    assert content(state) == b"".join(records) + golden_record(b"new", b"x")


def test_a_file_that_shrank_under_a_stale_stat_is_read_as_it_is(
    pool: Pool, state: Path, logs: log.Capture
) -> None:
    # A writer that takes no lock truncates between our stat and our read.
    records = [golden_record(b"k%d" % n, b"v") for n in range(40)]
    write_pool(state / ".kvp_pool_0", records)
    assert len(pool.items()) == 40
    for size in (3 * R, 3 * R + 100, 35 * R, 35 * R + 100):
        before = os.fstat(pool.fd)
        os.truncate(state / ".kvp_pool_0", size)
        logs.clear()
        pool._load(before)
        # Whole records were read: nothing of them counts as a partial tail.
        assert logs.messages(log.WARNING) == []
        # What this load made of it (a query would stat and load again).
        assert pool._keys == [b"k%d" % n for n in range(size // R)]
        assert pool.items() == [(b"k%d" % n, b"v") for n in range(size // R)]
        write_pool(state / ".kvp_pool_0", records)
        pool._load(os.fstat(pool.fd))


def test_a_set_on_a_trusted_pool_reads_nothing(pool: Pool) -> None:
    for i in range(100):
        pool.set(b"k%d" % i, b"v" * 100)
    before = _bytes_read()
    pool.set(b"k0", b"changed")
    pool.set(b"k1", b"changed")
    assert _bytes_read() - before < R


def test_debug_logs_are_upstreams_and_only_with_debug(
    state: Path, tmp_path: Path, logs: log.Capture
) -> None:
    quiet = Pool(str(state), 1)
    quiet.set(b"k", b"v")
    quiet.set(b"k", b"w")
    quiet.delete(b"k")
    quiet.delete(b"k")
    pools = PoolSet(str(tmp_path / "set"))
    pools.open()
    pools[2].set(b"k", b"v")
    assert logs.messages() == []
    quiet.close()
    pools.close()
    p = Pool(str(state), 3, debug=True)
    p.set(b"k", b"v")
    p.set(b"k", b"w")
    p.delete(b"k")
    p.delete(b"k")
    # tools/hv/hv_kvp_daemon.c kvp_key_add_or_modify() and kvp_key_delete().
    assert logs.messages() == [
        "kvp_key_add_or_modify: added: pool=3 key=k val=v",
        "kvp_key_add_or_modify: updated: pool=3 key=k val=w",
        "kvp_key_delete: deleting the KVP: pool=3 key=k val=w",
        "kvp_key_delete: could not delete KVP: pool=3 key=k. Record not found",
    ]
    p.close()


def test_split_pages_over_three_pages() -> None:
    data = bytes(range(256)) * 36  # 9216 bytes
    assert split_pages(100, data, 4096) == [
        (100, data[:3996]),
        (4096, data[3996:8092]),
        (8192, data[8092:]),
    ]
    assert split_pages(4096, data[:4096], 4096) == [(4096, data[:4096])]


@pytest.mark.parametrize("at", [0, 1, 7, 8, 9, 511, 512, 513, 1279, 1280, 1281, 2000, 2558, 2559])
def test_in_place_plan_writes_the_one_differing_byte(at: int) -> None:
    old = b"k" * 512 + b"v" * 2048
    new = old[:at] + b"X" + old[at + 1 :]
    assert in_place_plan(0, old, new, 4096) == [(at, b"X")]
    # Two differing bytes: everything from the first to the last.
    if at + 5 < R:
        two = new[: at + 5] + b"Y" + new[at + 6 :]
        assert in_place_plan(0, old, two, 4096) == [(at, b"X" + old[at + 1 : at + 5] + b"Y")]


def test_in_place_plan_checks_every_prefix_of_three_pieces() -> None:
    # Pages of 512: the key's stale bytes (harmless to zero), then two pieces of the
    # value, which reads neither old nor new after the middle one (forwards) or the
    # last one (backwards): no safe order.
    old = b"k\0" + b"J" * 510 + b"a" * 1100 + bytes(948)
    new = golden_record(b"k", b"b" * 1100)
    assert in_place_plan(0, old, new, 512) is None
    # The same with a value that grows: the tail first, then the middle, then the head.
    # Stale key bytes zeroed first, alone in their page: the record reads old until the
    # value's piece lands.
    stale = b"k\0" + b"J" * 510 + b"a" + bytes(2047)
    assert in_place_plan(0, stale, golden_record(b"k", b"b"), 512) == [
        (2, bytes(510)),
        (512, b"b"),
    ]
    grow = golden_record(b"k", b"a" * 100 + b"b" * 1400)
    assert in_place_plan(0, golden_record(b"k", b"a" * 100), grow, 512) == [
        (1536, b"b" * 476),
        (1024, b"b" * 512),
        (612, b"b" * 412),
    ]


# ramfs keeps coarse timestamps (tmpfs and ext4 give a fine-grained one to a
# change after a stat since Linux 6.13, which hides the same-tick problem):
# two writes within one clock tick leave the same mtime and ctime there.
_SAME_TICK = r"""
import fcntl, json, os, subprocess, sys
d = sys.argv[1]
subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0755", "hvtest", d], check=True)
from hvdaemons.kvp.pool import Pool
p = Pool(d, 0)
p.open()
path = os.path.join(d, ".kvp_pool_0")

def rewrite(value):
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"k" + bytes(511) + value + bytes(2048 - len(value)), 0)
    os.close(fd)

out = {"after_our_write": [], "within_a_tick": [], "same_mtime": 0}
for i in range(200):
    p.set(b"k", b"ours %03d" % i)
    rewrite(b"them %03d" % i)
    got = p.get(b"k")
    if got != b"them %03d" % i:
        out["after_our_write"].append(got.decode())
    # Two foreign writes: the second in the first's clock tick, as a rule.
    rewrite(b"a %03d" % i)
    got_a = p.get(b"k")
    m = os.stat(path).st_mtime_ns
    rewrite(b"b %03d" % i)
    out["same_mtime"] += os.stat(path).st_mtime_ns == m
    got_b = p.get(b"k")
    if (got_a, got_b) != (b"a %03d" % i, b"b %03d" % i):
        out["within_a_tick"].append([got_a.decode(), got_b.decode()])
print(json.dumps(out))
"""


def test_same_tick_foreign_writes_are_seen_on_coarse_timestamps(tmp_path: Path) -> None:
    out = _mounted_child(_SAME_TICK, tmp_path / "ramfs")
    assert out["after_our_write"] == [] and out["within_a_tick"] == []
    # The case happened (the file system is coarse): not a vacuous pass.
    assert out["same_mtime"] > 0


# RLIMIT_FSIZE makes a write past it fail (EFBIG, SIGXFSZ ignored) while one
# below it succeeds: the journal is written, then replaying it into the pool
# fails part way; or the journal itself cannot be written.
_JOURNAL_FAILS = r"""
import json, os, resource, signal, sys
from hvdaemons import log
from hvdaemons.kvp.pool import Pool
d = sys.argv[1]
R = 2560
os.umask(0o022)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
p = Pool(d, 0)
p.open()
for i in range(6):
    p.set(b"k%d" % i, b"v%d" % i)
pool_file, journal = os.path.join(d, ".kvp_pool_0"), os.path.join(d, ".kvp_journal_0")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

def fds_on(path):
    links = [os.readlink("/proc/self/fd/" + n) for n in os.listdir("/proc/self/fd")
             if os.path.exists("/proc/self/fd/" + n)]
    return [x for x in links if x in (path, path + " (deleted)")]

logs = log.capture(log.WARNING).__enter__()
out = {}
# Deleting k1 journals the 4 records after it (a 10292-byte journal).
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, hard))
try:
    p.delete(b"k1")
except OSError as e:
    out["journal_write"] = [type(e).__name__, e.errno]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
out["journal_left"] = os.path.exists(journal)
out["journal_fds"] = fds_on(journal)
out["after_journal_write"] = [k.decode() for k, _ in p.items()]
out["pool_intact"] = open(pool_file, "rb").read() == b"".join(
    (b"k%d" % i).ljust(512, b"\0") + (b"v%d" % i).ljust(2048, b"\0") for i in range(6))
# The journal fits; the shift into the pool (offset 2560..12800) does not.
resource.setrlimit(resource.RLIMIT_FSIZE, (11000, hard))
try:
    p.delete(b"k1")
except Exception as e:
    out["replay"] = [type(e).__name__, str(e)]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
out["journal_mode"] = oct(os.stat(journal).st_mode & 0o777)
# The next request replays it: the DELETE completes.
out["after_replay"] = [k.decode() for k, _ in p.items()]
out["journal_after_replay"] = os.path.exists(journal)
out["size"] = os.path.getsize(pool_file)
out["messages"] = [r.message for r in logs.records if r.name == "hvdaemons.kvp.pool"]
print(json.dumps(out))
"""


def test_a_journal_that_cannot_be_written_or_replayed(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", _JOURNAL_FAILS, str(tmp_path)],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # Not written: removed, closed, the pool untouched.
    assert out["journal_write"] == ["OSError", 27]  # EFBIG
    assert out["journal_left"] is False and out["journal_fds"] == []
    assert out["after_journal_write"] == ["k0", "k1", "k2", "k3", "k4", "k5"]
    assert out["pool_intact"] is True
    # Written (private: 0600) but not replayed: kept, and replayed by the next request.
    assert out["replay"] == ["PoolUnavailable", "journal replay failed: [Errno 27] File too large"]
    assert out["messages"] == [
        f"pool 0: replaying journal {tmp_path}/.kvp_journal_0 failed: [Errno 27] File too large"
    ]
    assert out["journal_mode"] == "0o600"
    assert out["after_replay"] == ["k0", "k2", "k3", "k4", "k5"]
    assert out["journal_after_replay"] is False
    assert out["size"] == 5 * R


def test_an_unreadable_journal_makes_the_pool_unavailable(state: Path) -> None:
    # Something that is not a file where the journal goes: it cannot be read.
    (state / ".kvp_journal_0").mkdir()
    p = Pool(str(state), 0)
    with pytest.raises(PoolUnavailable) as info:
        p.open()
    p.close()
    journal = f"{state}/.kvp_journal_0"
    assert str(info.value) == f"cannot read {journal}: [Errno 21] Is a directory: '{journal}'"


def test_a_journal_replayed_by_another_instance_while_we_waited_is_forgotten(
    state: Path,
) -> None:
    write_pool(state / ".kvp_pool_0", [golden_record(b"k", b"v")])
    (state / ".kvp_journal_0").write_bytes(b"not ours to replay any more")
    holder = _LockHolder(state / ".kvp_pool_0", "posix")
    p = Pool(str(state), 0)
    opened = threading.Event()

    def open_pool() -> None:
        p.open()
        opened.set()

    t = threading.Thread(target=open_pool)
    t.start()
    try:
        # open() saw the journal and queued for the lock; the lock holder is
        # done with the journal before it lets go.
        _wait_for_lock_waiter(state / ".kvp_pool_0", "POSIX")
        os.unlink(state / ".kvp_journal_0")
    finally:
        holder.release()
    t.join(30)
    try:
        assert opened.is_set()
        mtime = os.stat(p.path).st_mtime_ns
        while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= mtime:
            time.sleep(0.001)
        assert p.get(b"k") == b"v"
        # No journal pending any more: the cache is trusted again.
        _assert_get_takes_no_lock(p, state, b"k", b"v")
    finally:
        p.close()


class _Interrupted(Exception):
    pass


def _interrupt_when_waiting(path: Path, kind: str) -> threading.Thread:
    """A thread that, once this process waits for a kind lock on path, interrupts
    the main thread with a signal whose handler raises _Interrupted."""

    def interrupt() -> None:
        _wait_for_lock_waiter(path, kind)
        signal.pthread_kill(main, signal.SIGUSR1)

    def raise_interrupted(signum: int, frame: object) -> None:
        raise _Interrupted

    main = threading.main_thread().ident
    assert main == threading.get_ident()
    signal.signal(signal.SIGUSR1, raise_interrupted)
    t = threading.Thread(target=interrupt)
    t.start()
    return t


def _posix_lock_is_free(path: Path) -> bool:
    """True if another process can take the POSIX lock on path at once."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=30)
    return res.returncode == 0


def test_interrupted_while_waiting_for_the_flock_releases_the_posix_lock(
    pool: Pool, state: Path
) -> None:
    path = state / ".kvp_pool_0"
    pool.set(b"a", b"1")
    holder = _LockHolder(path, "flock")  # cloud-init's lock
    try:
        t = _interrupt_when_waiting(path, "FLOCK")
        try:
            with pytest.raises(_Interrupted):
                pool.set(b"b", b"2")
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            t.join(30)
        # We got the POSIX lock, then gave up on the flock: the POSIX lock is let go.
        assert _posix_lock_is_free(path)
    finally:
        holder.release()
    assert content(state) == golden_record(b"a", b"1")
    pool.set(b"b", b"2")
    assert content(state) == golden_record(b"a", b"1") + golden_record(b"b", b"2")


def test_interrupted_while_locking_a_replaced_file_closes_it(pool: Pool, state: Path) -> None:
    path = state / ".kvp_pool_0"
    pool.set(b"a", b"1")
    other = state / "replacement"
    write_pool(other, [golden_record(b"b", b"2")])
    os.rename(other, path)
    new_ino = os.stat(path).st_ino
    holder = _LockHolder(path, "flock")  # on the new file
    try:
        t = _interrupt_when_waiting(path, "FLOCK")
        try:
            with pytest.raises(_Interrupted):
                pool.set(b"c", b"3")
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            t.join(30)
        # The descriptor opened on the new file is closed again (no leak) ...
        assert new_ino not in _open_inodes()
        assert _posix_lock_is_free(path)
    finally:
        holder.release()
    # ... and the next change opens, locks and uses it.
    pool.set(b"c", b"3")
    assert os.fstat(pool.fd).st_ino == new_ino
    assert content(state) == golden_record(b"b", b"2") + golden_record(b"c", b"3")


def test_a_pool_that_cannot_be_read_says_so_as_upstream(logs: log.Capture) -> None:
    # The pool lives on an ext4 image in an FsBox (hvsim/fsbox.py, as test_eio
    # does), reached through the box's root from here: records are written,
    # changed by another writer (the cache is stale), then the file system is
    # shut down before the pool reads them again.
    with sandbox([FsSpec("x", "ext4")], sysfs=False) as box:
        d = f"/proc/{box.pid}/root/mnt/x/state"
        os.mkdir(d)
        p = Pool(d, 0)
        try:
            p.open()
            p.set(b"k", b"v1")
            fd = os.open(p.path, os.O_WRONLY)
            os.pwrite(fd, b"v2", 512)  # the same size: only the contents change
            os.close(fd)
            box.shutdown("/mnt/x")
            with pytest.raises(OSError) as info:
                p.items()
        finally:
            p.close()
    assert info.value.errno == 5  # EIO
    assert logs.messages(log.ERROR) == [
        "Failed to read file, pool: 0; error: 5 Input/output error"
    ]


# A read that fails with an errno of its own (not EIO): the pool file is a
# link to a sysfs attribute that refuses to be read.  In a new network
# namespace lo is down, and reading a down device's carrier fails with EINVAL
# (net/core/net-sysfs.c, carrier_show()); the attribute is writable, so the
# pool opens it read-write.
_EINVAL_READ = r"""
import json, os, subprocess, sys
from hvdaemons import log
from hvdaemons.kvp.pool import Pool
d = sys.argv[1]
os.mkdir(d + "/sys")
subprocess.run(["mount", "-t", "sysfs", "sysfs", d + "/sys"], check=True)
os.symlink(d + "/sys/class/net/lo/carrier", d + "/.kvp_pool_0")
logs = log.capture(log.WARNING).__enter__()
out = {}
p = Pool(d, 0)
p.open()
try:
    p.items()
except OSError as e:
    out["errno"] = e.errno
p.close()
out["messages"] = [r.message for r in logs.records if r.name == "hvdaemons.kvp.pool"]
print(json.dumps(out))
"""


def test_a_pool_read_failing_with_its_own_errno_logs_that_errno(tmp_path: Path) -> None:
    res = unshare_python(_EINVAL_READ, str(tmp_path), net=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["errno"] == 22  # EINVAL
    assert out["messages"] == ["Failed to read file, pool: 0; error: 22 Invalid argument"]
