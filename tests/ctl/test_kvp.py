# SPDX-License-Identifier: GPL-2.0-only
"""hvctl kvp list/get/set/delete on real pool files: format, locks, limits, errors."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.kvp import PKG_ROOT, build_c_writer, daemon_env
from tests.support.umockdev import hvctl

OTHER_UID = 4321


def record(key: bytes, value: bytes) -> bytes:
    """A pool record as the C daemon writes it: 512-byte key, 2048-byte value, zero-filled."""
    return key.ljust(512, b"\0") + value.ljust(2048, b"\0")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "hyperv"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    for n in range(5):
        (d / f".kvp_pool_{n}").write_bytes(b"")
    return d


def test_set_get_list_delete(state: Path) -> None:
    sd = ("--state-dir", str(state))
    cp = hvctl("kvp", "set", "AppVersion", "1.2.3", *sd)
    assert cp.returncode == 0 and cp.stdout == "pool 1 (guest): added AppVersion\n", cp.stderr
    assert hvctl("kvp", "set", "--pool", "guest", "Status", "Grün ✓", *sd).returncode == 0
    cp = hvctl("kvp", "set", "--pool", "1", "AppVersion", "1.3", *sd)
    assert cp.stdout == "pool 1 (guest): updated AppVersion\n"
    assert (state / ".kvp_pool_1").read_bytes() == record(b"AppVersion", b"1.3") + record(
        b"Status", "Grün ✓".encode()
    )
    cp = hvctl("kvp", "get", "Status", *sd)
    assert (cp.returncode, cp.stdout) == (0, "Grün ✓\n")
    cp = hvctl("kvp", "get", "--json", "--pool", "1", "AppVersion", *sd)
    assert json.loads(cp.stdout) == {
        "pool": 1,
        "key": "AppVersion",
        "found": True,
        "value": "1.3",
        "problems": [],
    }
    cp = hvctl("kvp", "list", "--pool", "1", *sd)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines()[1:] == [
        f"  {state}/.kvp_pool_1: 2 records",
        "  AppVersion = 1.3",
        "  Status = Grün ✓",
    ]
    assert hvctl("kvp", "delete", "AppVersion", *sd).returncode == 0
    assert (state / ".kvp_pool_1").read_bytes() == record(b"Status", "Grün ✓".encode())
    cp = hvctl("kvp", "delete", "AppVersion", *sd)
    assert cp.returncode == 1 and "no key 'AppVersion' in pool 1 (guest)" in cp.stderr
    cp = hvctl("kvp", "get", "AppVersion", *sd)
    assert cp.returncode == 1 and cp.stdout == ""


def test_list_every_pool_as_json(state: Path) -> None:
    (state / ".kvp_pool_3").write_bytes(
        record(b"VirtualMachineName", b"web-01") + record(b"PhysicalHostName", b"HV-7")
    )
    (state / ".kvp_pool_0").write_bytes(record(b"Owner", b"ops\xff"))  # not UTF-8: shown escaped
    cp = hvctl("kvp", "list", "--json", "--state-dir", str(state))
    assert cp.returncode == 0, cp.stderr
    pools = json.loads(cp.stdout)["pools"]
    assert [p["pool"] for p in pools] == [0, 1, 2, 3, 4]
    assert [p["name"] for p in pools] == ["external", "guest", "auto", "host", "internal"]
    assert pools[0]["records"] == [{"key": "Owner", "value": "ops\\xff"}]
    assert pools[3]["records"] == [
        {"key": "VirtualMachineName", "value": "web-01"},
        {"key": "PhysicalHostName", "value": "HV-7"},
    ]
    assert all(p["exists"] and p["problems"] == [] for p in pools)
    cp = hvctl("kvp", "get", "--pool", "host", "VirtualMachineName", "--state-dir", str(state))
    assert cp.stdout == "web-01\n"


def test_limits_are_refused_with_a_message_that_says_them(state: Path) -> None:
    sd = ("--state-dir", str(state))
    cp = hvctl("kvp", "set", "--pool", "4", "k" * 512, "v", *sd)
    assert cp.returncode == 2
    assert "the key is 512 UTF-8 bytes: too long" in cp.stderr
    assert "at most 511" in cp.stderr and "at most 2047" in cp.stderr
    cp = hvctl("kvp", "set", "--pool", "4", "k", "v" * 2048, *sd)
    assert cp.returncode == 2 and "the value is 2048 UTF-8 bytes" in cp.stderr
    # Pool 1 is what the host reads: its kernel passes on 254/1022 UTF-16 units.
    cp = hvctl("kvp", "set", "--pool", "1", "k" * 255, "v", *sd)
    assert cp.returncode == 2
    assert "255 UTF-16 code units" in cp.stderr and "at most 254" in cp.stderr
    cp = hvctl("kvp", "set", "--pool", "1", "k", "é" * 1023, *sd)
    assert cp.returncode == 2 and "1022" in cp.stderr
    assert (state / ".kvp_pool_1").read_bytes() == b""
    assert (state / ".kvp_pool_4").read_bytes() == b""
    # The largest that fit.
    assert hvctl("kvp", "set", "--pool", "4", "k" * 511, "v" * 2047, *sd).returncode == 0
    assert (state / ".kvp_pool_4").read_bytes() == record(b"k" * 511, b"v" * 2047)
    assert hvctl("kvp", "set", "--pool", "1", "k" * 254, "é" * 1022, *sd).returncode == 0
    cp = hvctl("kvp", "set", "", "v", *sd)
    assert cp.returncode == 2 and "the key is empty" in cp.stderr


def test_host_pools_need_force_and_pool_2_is_never_written(state: Path) -> None:
    sd = ("--state-dir", str(state))
    for pool in ("0", "3", "host"):
        cp = hvctl("kvp", "set", "--pool", pool, "K", "V", *sd)
        assert cp.returncode == 2
        assert "belongs to the host" in cp.stderr and "--force" in cp.stderr
    assert (state / ".kvp_pool_3").read_bytes() == b""
    assert hvctl("kvp", "set", "--pool", "3", "--force", "K", "V", *sd).returncode == 0
    assert (state / ".kvp_pool_3").read_bytes() == record(b"K", b"V")
    cp = hvctl("kvp", "delete", "--pool", "3", "K", *sd)
    assert cp.returncode == 2 and "--force" in cp.stderr
    assert hvctl("kvp", "delete", "--pool", "3", "--force", "K", *sd).returncode == 0
    cp = hvctl("kvp", "set", "--pool", "auto", "--force", "K", "V", *sd)
    assert cp.returncode == 2 and "never reads the file" in cp.stderr
    assert (state / ".kvp_pool_2").read_bytes() == b""


def test_missing_and_damaged_pools_are_reported(tmp_path: Path, state: Path) -> None:
    missing = tmp_path / "nowhere"
    cp = hvctl("kvp", "list", "--state-dir", str(missing))
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert f"{missing}/.kvp_pool_1 does not exist" in cp.stderr
    assert "has hv_kvp_daemon ever run here?" in cp.stderr
    cp = hvctl("kvp", "set", "K", "V", "--state-dir", str(missing))
    assert cp.returncode == 1 and f"{missing} does not exist" in cp.stderr
    assert not missing.exists()
    (state / ".kvp_pool_0").unlink()
    cp = hvctl("kvp", "get", "--pool", "0", "K", "--state-dir", str(state))
    assert cp.returncode == 1
    assert "hv_kvp_daemon creates it when it starts" in cp.stderr
    # A pool cut in the middle of its second record.
    (state / ".kvp_pool_1").write_bytes(record(b"Kept", b"yes") + record(b"Cut", b"x")[:100])
    cp = hvctl("kvp", "list", "--pool", "1", "--state-dir", str(state))
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert "  Kept = yes" in cp.stdout and "Cut" not in cp.stdout
    assert "is damaged: 2660 bytes is not a multiple of 2560" in cp.stderr
    # Writing salvages the partial record the daemon's way (nothing is lost).
    assert hvctl("kvp", "set", "New", "1", "--state-dir", str(state)).returncode == 0
    assert (state / ".kvp_pool_1").read_bytes() == record(b"Kept", b"yes") + record(b"New", b"1")
    assert (state / ".kvp_salvage_1").read_bytes() == record(b"Cut", b"x")[:100]


def test_without_permission(state: Path) -> None:
    """Files 0644 owned by someone else: readable, not writable."""
    (state / ".kvp_pool_1").write_bytes(record(b"K", b"V"))
    for f in [state, *state.iterdir()]:
        os.chown(f, OTHER_UID, OTHER_UID)
        os.chmod(f, 0o755 if f.is_dir() else 0o644)
    cp = hvctl("kvp", "get", "K", "--state-dir", str(state), unprivileged=True)
    assert (cp.returncode, cp.stdout) == (0, "V\n"), cp.stderr  # pools are world-readable
    cp = hvctl("kvp", "set", "K", "W", "--state-dir", str(state), unprivileged=True)
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert "permission denied" in cp.stderr and "run hvctl as root" in cp.stderr
    assert (state / ".kvp_pool_1").read_bytes() == record(b"K", b"V")


def _waiting_on(path: Path) -> bool:
    """Whether /proc/locks shows a process blocked on a lock of path's inode."""
    st = path.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any("->" in ln and ident in ln for ln in Path("/proc/locks").read_text().splitlines())


@pytest.mark.parametrize("lock", ["posix", "flock"])
def test_writes_wait_for_the_daemons_locks(state: Path, lock: str) -> None:
    """hvctl set blocks while another program holds either lock the daemon takes."""
    pool = state / ".kvp_pool_1"
    fd = os.open(pool, os.O_RDWR)
    try:
        (fcntl.lockf if lock == "posix" else fcntl.flock)(fd, fcntl.LOCK_EX)
        argv = [sys.executable, "-m", "hvdaemons.ctl.main", "kvp", "set", "K", "V"]
        proc = subprocess.Popen(
            [*argv, "--state-dir", str(state)],
            cwd=str(PKG_ROOT),
            env=daemon_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not _waiting_on(pool):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "hvctl never waited for the lock"
            time.sleep(0.01)
        assert pool.read_bytes() == b""
        (fcntl.lockf if lock == "posix" else fcntl.flock)(fd, fcntl.LOCK_UN)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        os.close(fd)
    assert pool.read_bytes() == record(b"K", b"V")


def test_reads_give_up_on_a_lock_held_for_good(state: Path) -> None:
    pool = state / ".kvp_pool_1"
    fd = os.open(pool, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        cp = hvctl("kvp", "get", "K", "--state-dir", str(state))
    finally:
        os.close(fd)
    assert cp.returncode == 1 and "locked (POSIX lock) by another program" in cp.stderr


def test_concurrent_writers_lose_no_update(tmp_path: Path, state: Path) -> None:
    """hvctl processes and a C writer taking the daemon's POSIX lock, all at once."""
    writer = build_c_writer(tmp_path)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\nfrom hvdaemons.ctl.main import main\n"
                "for i in range(5):\n"
                "    assert main(['kvp', 'set', f'w{n}-{i}', str(i), '--state-dir', sys.argv[1]]) == 0\n".replace(
                    "{n}", str(n)
                ),
                str(state),
            ],
            cwd=str(PKG_ROOT),
            env=daemon_env(),
        )
        for n in range(4)
    ]
    procs.append(subprocess.Popen([str(writer), str(state / ".kvp_pool_1"), "20", "c-"]))
    for p in procs:
        assert p.wait(timeout=120) == 0
    cp = hvctl("kvp", "list", "--pool", "1", "--json", "--state-dir", str(state))
    keys = [r["key"] for r in json.loads(cp.stdout)["pools"][0]["records"]]
    want = {f"w{n}-{i}" for n in range(4) for i in range(5)} | {f"c-{i}" for i in range(20)}
    assert sorted(keys) == sorted(want)
    assert (state / ".kvp_pool_1").stat().st_size == len(want) * 2560
