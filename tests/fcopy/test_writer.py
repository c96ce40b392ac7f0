# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.fcopy.writer.FileCopier on real files and directories (runs as root)."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hvdaemons import log
from hvdaemons.fcopy import writer as W
from hvdaemons.fcopy.writer import FileCopier
from hvdaemons.protocol.fcopy import CREATE_PATH, OVER_WRITE, StartCopy
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from tests.support.fcopy import TEMP_NAME

ALREADY_EXISTS, E_FAIL, S_OK = HvStatus.ERROR_ALREADY_EXISTS, HvStatus.E_FAIL, HvStatus.S_OK

GiB = 1 << 30
NOBODY = 65534


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def entries(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def copy(c: FileCopier, path: Path | str, name: str, data: bytes, flags: int = 0) -> list[int]:
    got = [c.start(StartCopy(name, str(path), flags, len(data)))]
    if got[0] != S_OK:
        return got
    for off in range(0, len(data), 6144):
        got.append(c.write(off, data[off : off + 6144]))
    got.append(c.complete())
    return got


@pytest.fixture
def c() -> FileCopier:
    return FileCopier()


def test_copy_goes_through_a_temp_file_and_is_renamed_at_complete(
    c: FileCopier, tmp_path: Path
) -> None:
    data = os.urandom(20000)
    assert c.start(StartCopy("f.bin", str(tmp_path), 0, len(data))) == S_OK
    [temp] = entries(tmp_path)  # the data goes to a temporary file beside the target
    assert TEMP_NAME.fullmatch(os.fsencode(temp))
    assert c.write(6144, data[6144:]) == S_OK  # out of order is fine: pwrite
    assert c.write(0, data[:6144]) == S_OK
    assert entries(tmp_path) == [temp]  # nothing under the target name yet
    assert c.complete() == S_OK
    assert entries(tmp_path) == ["f.bin"]
    assert (tmp_path / "f.bin").read_bytes() == data
    st = (tmp_path / "f.bin").stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 & ~umask()
    assert not c.busy


@pytest.mark.parametrize(
    "name",
    [
        "Ελληνικά.txt",
        "русский файл",
        "中文.txt",
        "العربية",
        "😀🚀.bin",
        "e\u0301",
        "a\\b",
        " lead",
        "x" * 255,
    ],
)
def test_names_in_many_scripts_and_edge_names(c: FileCopier, tmp_path: Path, name: str) -> None:
    assert copy(c, tmp_path, name, b"data") == [S_OK, S_OK, S_OK]
    assert entries(tmp_path) == [name]
    assert (tmp_path / name).read_bytes() == b"data"


def test_temp_name_fits_name_max_and_keeps_utf8_whole() -> None:
    name = ("é" * 127 + "x").encode()  # 255 bytes
    temp = W.temp_name(name, 4194304)
    assert len(temp) <= 255
    temp.decode("utf-8")
    assert TEMP_NAME.fullmatch(temp)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "\udc80x", "x" * 256])
def test_bad_file_names_are_refused(c: FileCopier, tmp_path: Path, name: str) -> None:
    assert c.start(StartCopy(name, str(tmp_path), CREATE_PATH | OVER_WRITE)) == E_FAIL
    assert entries(tmp_path) == [] and not c.busy


@pytest.mark.parametrize("path", ["{t}/../{t}", "{t}/./sub", "{t}/sub/..", "{t}/..", "../{t}"])
def test_relative_components_are_refused(c: FileCopier, tmp_path: Path, path: str) -> None:
    assert c.start(StartCopy("f", path.format(t=tmp_path), CREATE_PATH)) == E_FAIL
    assert entries(tmp_path) == []


def test_missing_directories_need_create_path(c: FileCopier, tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    assert c.start(StartCopy("f", str(deep))) == E_FAIL
    assert entries(tmp_path) == []
    # Unlike the reference, the last component is created too (no trailing "/" needed).
    assert copy(c, str(deep), "f", b"1", CREATE_PATH) == [S_OK, S_OK, S_OK]
    assert (deep / "f").read_bytes() == b"1"
    for d in (tmp_path / "a", tmp_path / "a" / "b", deep):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755 & ~umask()
    # Repeated and trailing slashes are harmless.
    assert copy(c, f"//{tmp_path}//a/b//c//", "g", b"2") == [S_OK, S_OK, S_OK]
    assert (deep / "g").read_bytes() == b"2"


def test_a_file_in_the_path_fails(c: FileCopier, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert c.start(StartCopy("f", str(tmp_path / "file" / "sub"), CREATE_PATH)) == E_FAIL


def test_overwrite_off_and_on(c: FileCopier, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    assert copy(c, tmp_path, "f", b"new") == [ALREADY_EXISTS]
    assert (tmp_path / "f").read_bytes() == b"old"
    assert copy(c, tmp_path, "f", b"new", OVER_WRITE) == [S_OK, S_OK, S_OK]
    assert (tmp_path / "f").read_bytes() == b"new"
    assert entries(tmp_path) == ["f"]


def test_name_taken_during_the_copy_is_not_replaced(c: FileCopier, tmp_path: Path) -> None:
    assert c.start(StartCopy("f", str(tmp_path))) == S_OK
    assert c.write(0, b"host") == S_OK
    (tmp_path / "f").write_bytes(b"local")
    assert c.complete() == ALREADY_EXISTS
    assert (tmp_path / "f").read_bytes() == b"local"
    assert entries(tmp_path) == ["f"]


def test_target_directory_with_overwrite_fails(c: FileCopier, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    assert c.start(StartCopy("d", str(tmp_path), OVER_WRITE)) == E_FAIL
    assert entries(tmp_path) == ["d"]


def test_symlink_at_the_target_is_never_followed(c: FileCopier, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "f").symlink_to(victim)
    (tmp_path / "pub" / "dangling").symlink_to(tmp_path / "created-elsewhere")
    # The reference follows a dangling link and creates its target; here it counts as existing.
    assert copy(c, tmp_path / "pub", "dangling", b"evil") == [ALREADY_EXISTS]
    assert not (tmp_path / "created-elsewhere").exists()
    assert copy(c, tmp_path / "pub", "f", b"evil") == [ALREADY_EXISTS]
    # With OVER_WRITE the link itself is replaced; what it pointed to is untouched.
    assert copy(c, tmp_path / "pub", "f", b"host", OVER_WRITE) == [S_OK, S_OK, S_OK]
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "pub" / "f").is_symlink()
    assert (tmp_path / "pub" / "f").read_bytes() == b"host"


def test_symlink_planted_in_the_path_is_refused(c: FileCopier, tmp_path: Path) -> None:
    secret = tmp_path / "etc"
    secret.mkdir()
    pub = tmp_path / "pub"
    pub.mkdir()
    pub.chmod(0o1777)  # like /tmp: anyone may create entries
    (pub / "dir").symlink_to(secret)
    for flags in (0, CREATE_PATH, CREATE_PATH | OVER_WRITE):
        assert c.start(StartCopy("passwd", str(pub / "dir"), flags)) == E_FAIL
        assert c.start(StartCopy("passwd", str(pub / "dir" / "sub"), flags)) == E_FAIL
    assert entries(secret) == []
    # A link owned by someone else, even in a root-only directory, is refused too.
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    (safe / "byuser").symlink_to(secret)
    os.lchown(safe / "byuser", NOBODY, NOBODY)
    assert c.start(StartCopy("f", str(safe / "byuser"), CREATE_PATH)) == E_FAIL
    assert entries(secret) == []


def test_root_owned_symlink_in_a_root_only_directory_is_followed(
    c: FileCopier, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    safe = tmp_path / "var"
    safe.mkdir(mode=0o755)
    (safe / "run").symlink_to("../real")  # like /var/run -> ../run
    (safe / "abs").symlink_to(real / "sub")
    assert copy(c, safe / "run" / "x", "f", b"1", CREATE_PATH) == [S_OK, S_OK, S_OK]
    assert (real / "x" / "f").read_bytes() == b"1"
    (real / "sub").mkdir()
    assert copy(c, safe / "abs", "g", b"2") == [S_OK, S_OK, S_OK]
    assert (real / "sub" / "g").read_bytes() == b"2"
    # A trusted link that leads through an untrusted one is still refused.
    pub = tmp_path / "pub"
    pub.mkdir()
    pub.chmod(0o777)
    (pub / "hop").symlink_to(real)
    (safe / "via").symlink_to(pub / "hop")
    assert c.start(StartCopy("h", str(safe / "via"))) == E_FAIL
    # A loop ends.
    (safe / "loop").symlink_to("loop")
    assert c.start(StartCopy("h", str(safe / "loop"))) == E_FAIL


def test_zero_byte_file(c: FileCopier, tmp_path: Path) -> None:
    assert copy(c, tmp_path, "empty", b"") == [S_OK, S_OK]
    assert (tmp_path / "empty").read_bytes() == b""


def test_file_above_4_gib_sparse(c: FileCopier, tmp_path: Path) -> None:
    size = 5 * GiB + 10
    assert c.start(StartCopy("big", str(tmp_path), 0, size)) == S_OK
    assert c.write(0, b"head") == S_OK
    assert c.write(5 * GiB, b"0123456789") == S_OK
    assert c.write(4 * GiB + 1, b"4G") == S_OK
    assert c.complete() == S_OK
    p = tmp_path / "big"
    st = p.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20  # sparse: nothing but three fragments allocated
    with open(p, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(4 * GiB)
        assert f.read(3) == b"\x004G"
        f.seek(5 * GiB)
        assert f.read() == b"0123456789"


def test_offset_beyond_off_t_fails_the_copy(c: FileCopier, tmp_path: Path) -> None:
    assert c.start(StartCopy("f", str(tmp_path))) == S_OK
    assert c.write((1 << 64) - 1, b"x") == E_FAIL
    assert c.write(0, b"x") == E_FAIL  # the copy has failed
    assert c.complete() == E_FAIL
    assert entries(tmp_path) == []


def test_cancel_mid_copy_leaves_nothing(c: FileCopier, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    assert c.start(StartCopy("f", str(tmp_path), OVER_WRITE)) == S_OK
    assert c.write(0, b"partial") == S_OK
    assert c.cancel() == S_OK
    assert entries(tmp_path) == ["f"] and (tmp_path / "f").read_bytes() == b"old"
    assert c.cancel() == S_OK  # cancelling nothing succeeds, as in the reference
    assert c.start(StartCopy("g", str(tmp_path))) == S_OK
    c.abort()  # channel lost / daemon stopping
    assert entries(tmp_path) == ["f"] and not c.busy


def test_requests_without_a_copy(
    c: FileCopier, tmp_path: Path, logs: log.Capture
) -> None:
    assert [c.write(0, b"x") for _ in range(50)] == [E_FAIL] * 50
    assert len(logs.messages(log.ERROR)) == 1  # once, not 50 times
    assert c.complete() == E_FAIL


def test_second_start_discards_the_first_copy(c: FileCopier, tmp_path: Path) -> None:
    assert c.start(StartCopy("a", str(tmp_path))) == S_OK
    assert c.write(0, b"a") == S_OK
    assert copy(c, tmp_path, "b", b"b") == [S_OK, S_OK, S_OK]
    assert entries(tmp_path) == ["b"]


def test_rejected_request_fails_the_copy(c: FileCopier, tmp_path: Path) -> None:
    assert c.start(StartCopy("f", str(tmp_path))) == S_OK
    assert c.write(0, b"x") == S_OK
    assert c.reject(E_FAIL) == E_FAIL  # e.g. a WRITE whose size was a lie
    assert c.write(6144, b"y") == E_FAIL
    assert c.complete() == E_FAIL
    assert entries(tmp_path) == []


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_dead_daemons_are_removed_at_start(
    c: FileCopier, tmp_path: Path
) -> None:
    dead = dead_pid()
    stale = tmp_path / f".f.hvfcopy-{dead}-0123abcd"
    stale.write_bytes(b"partial")
    live = tmp_path / f".g.hvfcopy-{os.getppid()}-0123abcd"
    live.write_bytes(b"in use")
    other = tmp_path / f".h.hvfcopy-{dead}-xyz"  # not our pattern
    other.write_bytes(b"")
    foreign = tmp_path / f".i.hvfcopy-{dead}-89abcdef"
    foreign.write_bytes(b"")
    os.chown(foreign, NOBODY, NOBODY)  # not ours to delete
    linked = tmp_path / f".j.hvfcopy-{dead}-89abcdef"
    linked.symlink_to(tmp_path / "victim")
    assert copy(c, tmp_path, "new", b"1") == [S_OK, S_OK, S_OK]
    assert entries(tmp_path) == sorted(["new", live.name, other.name, foreign.name, linked.name])


def _disk_full_script(mnt: Path) -> str:
    # Runs inside `unshare -m`: a 1 MiB tmpfs is enough to fill, and the write
    # path is the same as on any filesystem.
    return f"""
import os, sys
from hvdaemons.fcopy.writer import FileCopier
from hvdaemons.protocol.fcopy import StartCopy
from hvdaemons.protocol.status import HvStatus
S_OK, DISK_FULL = HvStatus.S_OK, HvStatus.ERROR_DISK_FULL
c = FileCopier()
assert c.start(StartCopy("big", {str(mnt)!r}, 0, 4 << 20)) == S_OK
got = [c.write(off, b"x" * 6144) for off in range(0, 4 << 20, 6144)]
first = got.index(DISK_FULL)
assert all(s == S_OK for s in got[:first]) and all(s == DISK_FULL for s in got[first:]), got
assert c.complete() == DISK_FULL
assert os.listdir({str(mnt)!r}) == [], os.listdir({str(mnt)!r})
st = os.statvfs({str(mnt)!r})
assert st.f_bfree == st.f_blocks, "space freed at once"
print("ok", first)
"""


def test_disk_full_in_a_small_filesystem(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = _disk_full_script(mnt)
    res = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=1m hvtest {mnt} && exec {sys.executable} -c "$0"',
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=launch.NEUTRAL_CWD,
        env=launch.child_env(),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok ")
    assert entries(mnt) == []  # the mount was private to that process


@pytest.mark.parametrize(
    "name",
    [
        b".f.hvfcopy-12-0123abcd",
        b"..hvfcopy-1-00000000",
        b".hvfcopy-1-00000000",  # no name part
        b".a.hvfcopy-12345678901-0123abcd",  # pid of 11 digits
        b".a.hvfcopy--0123abcd",
        b".a.hvfcopy-1-0123ABCD",  # upper-case hex
        b".a.hvfcopy-1-0123abc",
        b".a.hvfcopy-1-0123abcde",
        b".a\n.hvfcopy-7-0123abcd",
        b".a.hvfcopy-1-0123abcd.hvfcopy-2-0123abcd",
        b".a.hvfcopy-1-0123abcd.x",
        b"a.hvfcopy-1-0123abcd",
        b".a.hvfcopy-\xd9\xa1-0123abcd",  # a non-ASCII digit
        b".a.hvfcopy-1 -0123abcd",
    ],
)
def test_temp_pid_reads_exactly_the_temp_names(name: bytes) -> None:
    m = TEMP_NAME.fullmatch(name)
    assert W.temp_pid(name) == (int(m.group(2)) if m else None)


def test_temp_pid_agrees_with_the_pattern_on_random_names() -> None:
    rng = random.Random(5)
    parts = [b".", b"a", b"hvfcopy", b"-", b"1", b"0123abcd", b"f", b"9" * 11, b"\xff"]
    for _ in range(20000):
        name = b"".join(rng.choice(parts) for _ in range(rng.randint(1, 9)))
        m = TEMP_NAME.fullmatch(name)
        assert W.temp_pid(name) == (int(m.group(2)) if m else None), name
