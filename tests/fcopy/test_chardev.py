# SPDX-License-Identifier: GPL-2.0-only
"""The char-device transport (hvdaemons.fcopy.chardev): its handler, and end to end
the unmodified hv_fcopy_daemon process on a simulated /dev/vmbus/hv_fcopy.

The host sends what Copy-VMFile sends, the simulated hv_fcopy.c turns it into
exactly the bytes the kernel hands the daemon (UTF-8 names, 6196-byte WRITEs,
COMPLETE/CANCEL with stale trailing bytes), and we look at the files.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.errors import ProtocolError
from hvdaemons.fcopy.chardev import FcopyHandler
from hvdaemons.fcopy.writer import FileCopier
from hvdaemons.protocol import fcopy as P
from hvdaemons.protocol.fcopy import CREATE_PATH, OVER_WRITE
from hvdaemons.protocol.status import HvStatus
from hvsim.launch import NEUTRAL_CWD, python_argv
from hvsim.protocol import fcopy as sim_fcopy
from tests.support.fcopy import TEMP_NAME, LegacyRig, daemon_argv, daemon_env, wait_for
from tests.support.notify import NotifySocket

ALREADY_EXISTS, DISK_FULL, E_FAIL, S_OK = HvStatus.ERROR_ALREADY_EXISTS, HvStatus.ERROR_DISK_FULL, HvStatus.E_FAIL, HvStatus.S_OK

GiB = 1 << 30


def test_handler_registers_and_answers_with_an_int_status(tmp_path: Path) -> None:
    h = FcopyHandler(FileCopier())
    assert h.registration() == struct.pack("<i", 1)  # FCOPY_CURRENT_VERSION
    assert h.registration_reply(struct.pack("<I", 1)) is True
    with pytest.raises(ProtocolError):
        h.registration_reply(bytes(8))
    start = sim_fcopy.encode_start("f", str(tmp_path), 0, 3, utf16=False)
    assert h.handle(start) == P.encode_status_reply(HvStatus.S_OK)
    assert h.handle(sim_fcopy.encode_write(0, b"abc")) == P.encode_status_reply(HvStatus.S_OK)
    assert h.handle(sim_fcopy.encode_complete() + bytes(28)) == P.encode_status_reply(HvStatus.S_OK)
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert h.handle(b"\x09\0\0\0" + bytes(32)) == P.encode_status_reply(HvStatus.E_FAIL)
    assert h.handle(b"\0") == P.encode_status_reply(HvStatus.E_FAIL)
    assert h.handle(b"") is None  # the pump woke up with nothing pending
    # A request that raised in the service loop: HV_E_FAIL, and the copy in progress fails.
    assert h.handle(sim_fcopy.encode_start("g", str(tmp_path), 0, 3, utf16=False)) == P.encode_status_reply(
        HvStatus.S_OK
    )
    assert h.failure_reply(start) == P.encode_status_reply(HvStatus.E_FAIL)
    assert h.handle(sim_fcopy.encode_complete()) == P.encode_status_reply(HvStatus.E_FAIL)
    assert os.listdir(tmp_path) == ["f"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyRig]:
    with LegacyRig(tmp_path_factory.mktemp("dev")) as r:
        yield r


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    g = tmp_path / "guest"
    g.mkdir()
    return g


def ok(n_writes: int) -> list[int]:
    return [S_OK] * (n_writes + 2)


def fragments(data: bytes) -> int:
    return -(-len(data) // P.DATA_FRAGMENT)


NAMES = [
    "Grüße.txt",
    "русский.txt",
    "中文 名字.txt",
    "العربية",
    "हिन्दी",
    "😀🚀-\U0001d518\U0001d52b.bin",
    "x" * 200,
]


def test_names_in_several_scripts(rig: LegacyRig, guest: Path) -> None:
    for i, name in enumerate(NAMES):
        data = name.encode() * 50
        # The directory in the same script, as far as the 259-byte path field allows.
        sub = guest / name[:20] / str(i)
        assert rig.host.copy_file(data, str(sub), name, CREATE_PATH) == ok(fragments(data))
        assert os.listdir(sub) == [name]
        assert (sub / name).read_bytes() == data
    assert sorted(os.listdir(guest)) == sorted({n[:20] for n in NAMES})


def test_nested_paths_with_and_without_create_path(rig: LegacyRig, guest: Path) -> None:
    nested = guest / "a" / "b" / "c"
    assert rig.host.copy_file(b"1", str(nested), "f", 0) == [E_FAIL]
    assert os.listdir(guest) == []
    assert rig.host.copy_file(b"1", str(nested), "f", CREATE_PATH) == ok(1)
    assert (nested / "f").read_bytes() == b"1"
    assert rig.host.copy_file(b"2", str(nested) + "/", "g", 0) == ok(1)
    assert (nested / "g").read_bytes() == b"2"


def test_overwrite_off_and_on(rig: LegacyRig, guest: Path) -> None:
    data = os.urandom(50_000)
    assert rig.host.copy_file(data, str(guest), "f", 0) == ok(9)
    assert rig.host.copy_file(b"other", str(guest), "f", 0) == [ALREADY_EXISTS]
    assert (guest / "f").read_bytes() == data
    assert rig.host.copy_file(b"other", str(guest), "f", OVER_WRITE) == ok(1)
    assert (guest / "f").read_bytes() == b"other"
    assert os.listdir(guest) == ["f"]


def test_zero_byte_file(rig: LegacyRig, guest: Path) -> None:
    assert rig.host.copy_file(b"", str(guest), "empty", 0) == [S_OK, S_OK]
    assert (guest / "empty").read_bytes() == b""


def test_sparse_file_above_4_gib(rig: LegacyRig, guest: Path, tmp_path: Path) -> None:
    src = tmp_path / "sparse.src"
    size = 4 * GiB + 6144 * 3 + 5
    with open(src, "wb") as f:
        f.write(b"head")
        f.seek(4 * GiB + 100)
        f.write(b"beyond 4 GiB")
        f.truncate(size)
    got = rig.host.copy_file(str(src), str(guest), "big", 0, sparse=True)
    assert got[0] == S_OK and set(got) == {S_OK} and len(got) <= 6
    out = guest / "big"
    assert out.stat().st_size == size
    with open(out, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(4 * GiB + 100)
        assert f.read(12) == b"beyond 4 GiB"
        f.seek(size - 5)
        assert f.read() == bytes(5)


def test_cancel_mid_copy_leaves_nothing(rig: LegacyRig, guest: Path) -> None:
    data = os.urandom(6144 * 10)
    got = rig.host.copy_file(data, str(guest), "f", 0, cancel_after=4)
    assert got == ok(4)  # START, 4 WRITEs, CANCEL
    assert os.listdir(guest) == []
    (guest / "keep").write_bytes(b"old")
    assert rig.host.copy_file(data, str(guest), "keep", OVER_WRITE, cancel_after=4) == ok(4)
    assert os.listdir(guest) == ["keep"] and (guest / "keep").read_bytes() == b"old"


def test_planted_symlink(rig: LegacyRig, guest: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_bytes(b"root:x")
    guest.chmod(0o1777)  # like /tmp
    (guest / "dir").symlink_to(secret)
    (guest / "shadow").symlink_to(secret / "shadow")
    assert rig.host.copy_file(b"evil", str(guest / "dir"), "shadow", OVER_WRITE) == [E_FAIL]
    assert rig.host.copy_file(b"evil", str(guest), "shadow", 0) == [ALREADY_EXISTS]
    assert (secret / "shadow").read_bytes() == b"root:x"
    # Overwriting replaces the link, not what it points to.
    assert rig.host.copy_file(b"host", str(guest), "shadow", OVER_WRITE) == ok(1)
    assert (secret / "shadow").read_bytes() == b"root:x"
    assert not (guest / "shadow").is_symlink() and (guest / "shadow").read_bytes() == b"host"


def test_relative_components_and_bad_names_are_refused(rig: LegacyRig, guest: Path) -> None:
    assert rig.host.copy_file(b"x", f"{guest}/../{guest.name}", "f", CREATE_PATH) == [E_FAIL]
    assert rig.host.copy_file(b"x", str(guest), "..", OVER_WRITE) == [E_FAIL]
    assert rig.host.copy_file(b"x", str(guest), "", OVER_WRITE) == [E_FAIL]
    assert os.listdir(guest) == []


def test_invalid_write_fails_the_copy_and_logs_once(rig: LegacyRig, guest: Path) -> None:
    host = rig.host
    assert host.start("f", str(guest), 0, 100) == S_OK
    assert host.write(0, b"a" * 10) == S_OK
    # A size beyond the fragment: the reference would write stack memory into the file.
    for i in range(5):
        assert host.write(10 + i, b"b", size=6145 + i) == E_FAIL
    assert host.write(20, b"c") == E_FAIL  # the copy is dead now
    assert host.complete() == E_FAIL
    assert os.listdir(guest) == []
    rig.logs.wait_for("exceeds the 6144-byte fragment")
    assert rig.host.copy_file(b"fine", str(guest), "g", 0) == ok(1)  # and the daemon serves on
    assert sum("exceeds the 6144-byte fragment" in line for line in rig.logs.lines) == 1


def test_unknown_operation_gets_e_fail(rig: LegacyRig) -> None:
    assert rig.host.send(sim_fcopy.encode_header(7)) == E_FAIL
    rig.logs.wait_for("Unknown operation: 7")


def test_hibernation_cancel_removes_the_partial_file(rig: LegacyRig, guest: Path) -> None:
    assert rig.host.start("f", str(guest), 0, 10) == S_OK
    assert rig.host.write(0, b"12345") == S_OK
    rig.host.hibernate()  # fake CANCEL; the kernel refuses the reply, the daemon reopens
    assert rig.kernel.wait_registered(10)
    assert wait_for(lambda: os.listdir(guest) == [], 5)
    assert rig.host.copy_file(b"after", str(guest), "g", 0) == ok(1)


def test_device_closed_mid_copy_removes_the_partial_file(rig: LegacyRig, guest: Path) -> None:
    assert rig.host.start("f", str(guest), 0, 10) == S_OK
    assert rig.host.write(0, b"12345") == S_OK
    assert len(os.listdir(guest)) == 1
    rig.kernel.hangup()
    assert wait_for(lambda: os.listdir(guest) == [], 5)
    assert rig.kernel.wait_registered(10)


# -- daemons of their own ---------------------------------------------------------------


def test_sigterm_mid_copy_removes_the_partial_file(tmp_path: Path, guest: Path) -> None:
    with LegacyRig(tmp_path / "dev") as r:
        assert r.host.start("f", str(guest), 0, 10) == S_OK
        assert r.host.write(0, b"12345") == S_OK
        assert r.stop(signal.SIGTERM) == 0
        assert os.listdir(guest) == []


def test_crash_leaves_no_file_under_the_target_name(tmp_path: Path, guest: Path) -> None:
    with LegacyRig(tmp_path / "dev") as r:
        assert r.host.start("f", str(guest), 0, 6144 * 4) == S_OK
        assert r.host.write(0, b"x" * 6144) == S_OK
        r.stop(signal.SIGKILL)
        left = os.listdir(guest)
        assert len(left) == 1 and TEMP_NAME.fullmatch(os.fsencode(left[0])), left
        assert f"-{r.pid}-" in left[0]
    # The next daemon's next copy into that directory removes the leftover.
    with LegacyRig(tmp_path / "dev2") as r:
        assert r.host.copy_file(b"new", str(guest), "g", 0) == ok(1)
        assert os.listdir(guest) == ["g"]
        r.logs.wait_for("left by an interrupted copy")


def test_disk_full_on_a_small_loop_mounted_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "small.img"
    with open(image, "wb") as f:
        f.truncate(2 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with LegacyRig(tmp_path / "dev", sandbox=True, tmpfs=()) as r:
        # Mount the image inside the daemon's private mount namespace only.
        subprocess.run(
            ["nsenter", "-t", str(r.pid), "-m", "mount", "-o", "loop", str(image), str(mnt)],
            check=True,
        )
        inside = r.view(mnt)
        assert wait_for(lambda: (inside / "lost+found").exists(), 5)
        data = os.urandom(4 << 20)
        got = r.host.copy_file(data, str(mnt), "big", 0)
        assert got[0] == S_OK and got[-2] == DISK_FULL and got[-1] == S_OK  # ..., WRITE, CANCEL
        assert all(s == S_OK for s in got[1:-2])
        assert sorted(os.listdir(inside)) == ["lost+found"]
        # Without the CANCEL the COMPLETE reports the failure (the reference says success).
        got = r.host.copy_file(data[: 6144 * 2], str(mnt), "small", 0)
        assert got == ok(2)  # space was freed at once
        st = os.statvfs(inside)
        assert r.host.start("big2", str(mnt), 0, len(data)) == S_OK
        statuses = [r.host.write(off, data[off : off + 6144]) for off in range(0, len(data), 6144)]
        assert DISK_FULL in statuses
        assert r.host.complete() == DISK_FULL
        assert sorted(os.listdir(inside)) == ["lost+found", "small"]
        assert os.statvfs(inside).f_bfree == st.f_bfree
        r.logs.wait_for("No space left")
        r.logs.wait_for("No space left")
        r.logs.drain(0.3)
        lines = [line for line in r.logs.lines if "No space left" in line]
        assert len(lines) == 2, r.logs.lines  # one per failed copy, not one per WRITE
        subprocess.run(["nsenter", "-t", str(r.pid), "-m", "umount", str(mnt)], check=True)


def test_host_without_the_service_does_not_flood_the_log(tmp_path: Path) -> None:
    # With a watchdog of 0.4 s the daemon pings every 0.2 s, from the retry
    # loop too (it looks for the device at that pace then): each WATCHDOG=1
    # after the device went away marks a failed look.
    notify = NotifySocket(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    try:
        with LegacyRig(tmp_path / "dev", env=env) as r:
            r.close_kernel()
            notify.wait_for("^STATUS=.*waiting for")
            for _ in range(10):
                notify.wait_for("^WATCHDOG=1$")
            # Lines are written before the next look's ping: all are in the pipe.
            errors = [line for line in r.logs.read_available() if line.startswith("<3>")]
            # One line for the loss, one for the first failed open: none per retry.
            assert len(errors) == 2, errors
            assert errors[0].endswith(": end of file on the device; reopening"), errors
            assert errors[1].endswith("failed; error: 2 No such file or directory; retrying")
            assert r.proc.poll() is None  # still waiting for the device
    finally:
        notify.close()


def test_hvsim_serve_and_client_copy(tmp_path: Path, guest: Path) -> None:
    d = tmp_path / "sim"
    env = daemon_env()
    sim = subprocess.Popen(
        [*python_argv("hvsim.cli"), "serve", "--dir", str(d), "--service", "fcopy"],
        cwd=NEUTRAL_CWD,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    daemon = None
    try:
        assert sim.stdout is not None
        assert b"serving hv_fcopy" in sim.stdout.readline()
        daemon = subprocess.Popen(
            [*daemon_argv(), "-n", "--device", str(d / "hv_fcopy")],
            cwd=NEUTRAL_CWD,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        src = tmp_path / "src.txt"
        src.write_bytes(b"hello\n" * 2000)

        def client(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [*python_argv("hvsim.cli"), "fcopy", "--dir", str(d), "copy"]
            return subprocess.run(
                [*argv, *args], cwd=NEUTRAL_CWD, env=env, capture_output=True, text=True
            )

        assert wait_for(lambda: client(str(src), f"{guest}/probe").returncode == 0, 20)
        res = client(str(src), f"{guest}/new/", "--create-path")
        assert res.returncode == 0 and "END: S_OK" in res.stdout, res
        assert (guest / "new" / "src.txt").read_bytes() == src.read_bytes()
        res = client(str(src), f"{guest}/new/src.txt")
        assert res.returncode == 2 and "START: ERROR_ALREADY_EXISTS" in res.stdout, res
        res = client(str(src), f"{guest}/c.txt", "--cancel-after", "1")
        assert res.returncode == 0 and "CANCEL: S_OK" in res.stdout, res
        assert not (guest / "c.txt").exists()
    finally:
        for p in (daemon, sim):
            if p is not None:
                p.terminate()
                p.wait(10)
        if sim.stdout is not None:
            sim.stdout.close()
