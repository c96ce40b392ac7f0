# SPDX-License-Identifier: GPL-2.0-only
"""hv_kvp_daemon end to end: the real daemon process against the simulated kernel."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvdaemons.protocol import kvp
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.kvp import KvpHost
from hvsim.launch import python_argv
from hvsim.protocol import kvp as sim_kvp
from hvsim.server import call
from tests.reference.refdaemons import LogReader
from tests.support.kvp import (
    NEUTRAL_CWD,
    R,
    daemon_argv,
    daemon_env,
    golden_record,
    spawn_daemon,
)

S_OK, S_CONT, E_FAIL = HvStatus.S_OK, HvStatus.S_CONT, HvStatus.E_FAIL


@dataclass
class Running:
    kernel: ChardevKernel
    host: KvpHost
    proc: subprocess.Popen[bytes]
    log: LogReader
    state: Path
    tmp: Path

    def restart(self, *extra: str) -> None:
        launch.stop(self.proc)
        # The simulator notices a closed daemon only at the next request; the
        # kernel's release() resets the transport at once.
        self.kernel.hangup()
        self.proc = spawn_daemon(self.kernel.path, str(self.state), *extra)
        self.log = LogReader(self.proc)
        assert self.kernel.wait_registered(30), "\n".join(self.log.drain(1))


def start(tmp: Path, *extra: str) -> Running:
    kernel = ChardevKernel(str(tmp / "hv_kvp"), "hv_kvp", timeout=10)
    state = tmp / "state"
    proc = spawn_daemon(kernel.path, str(state), *extra)
    log = LogReader(proc)
    assert kernel.wait_registered(30), "\n".join(log.drain(1))
    return Running(kernel, KvpHost(kernel), proc, log, state, tmp)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path)
    yield run
    launch.stop(run.proc)
    run.kernel.close()


def test_help_and_bad_options() -> None:
    res = subprocess.run(
        [*daemon_argv(), "-h"], cwd=NEUTRAL_CWD, env=daemon_env(), capture_output=True, text=True
    )
    assert res.returncode == 0
    for flag in ("-n, --no-daemon", "-d, --debug", "--device", "--state-dir", "--scripts-dir"):
        assert flag in res.stdout
    assert "hv_kvp_daemon" in res.stdout
    res = subprocess.run(
        [*daemon_argv(), "--bogus"],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "usage: hv_kvp_daemon" in res.stderr


def test_upstream_log_lines(daemon: Running) -> None:
    assert (
        daemon.log.wait_for("KVP starting; pid is:")
        == f"<6>KVP: KVP starting; pid is:{daemon.proc.pid}"
    )
    assert daemon.log.wait_for("KVP LIC Version") == "<6>KVP: KVP LIC Version: 3.1"


@pytest.mark.parametrize("pool", [0, 1, 3, 4])
def test_set_get_enumerate_delete(daemon: Running, pool: int) -> None:
    host = daemon.host
    assert host.set(pool, "Key", "Wert ✓").status == S_OK
    assert host.set(pool, "Other", "x").status == S_OK
    assert host.set(pool, "Key", "new").status == S_OK
    assert host.get(pool, "Key") == sim_kvp.HostReply(S_OK, value="new")
    assert host.get(pool, "Missing").status == S_CONT
    assert host.enumerate_all(pool) == ([("Key", "new"), ("Other", "x")], S_CONT)
    assert (daemon.state / f".kvp_pool_{pool}").read_bytes() == golden_record(
        b"Key", b"new"
    ) + golden_record(b"Other", b"x")
    assert host.delete(pool, "Key").status == S_OK
    assert host.delete(pool, "Key").status == S_CONT
    assert host.enumerate_all(pool) == ([("Other", "x")], S_CONT)
    others = [p for p in range(5) if p not in (pool, 2)]
    assert all(host.enumerate_all(p) == ([], S_CONT) for p in others)


# What the auto pool is made of, under the daemon's control: the host name
# (a private UTS namespace), /etc/hosts, nsswitch.conf and os-release (bind
# mounts in a private mount namespace) and the interfaces (a private network
# namespace: only lo, which the pool leaves out).  The expected values are
# written out, not taken from hvdaemons.kvp.osinfo.
_AUTO_FILES = {
    "hosts": "127.0.1.1 kvp-golden.example.org kvp-golden\n",
    "nsswitch.conf": "hosts: files\n",
    "os-release": 'NAME="Golden Linux"\nVERSION_ID="42.7"\nID=golden\n',
}
_AUTO_SCRIPT = """set -e
hostname kvp-golden
for f in hosts nsswitch.conf os-release; do mount --bind "$0/$f" "/etc/$f"; done
exec "$@"
"""


def test_auto_pool(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    for name, text in _AUTO_FILES.items():
        (etc / name).write_text(text)
    kernel = ChardevKernel(str(tmp_path / "hv_kvp"), "hv_kvp", timeout=10)
    argv = [*daemon_argv(), "-n", "--device", kernel.path, "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(
        [
            "unshare",
            "--uts",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _AUTO_SCRIPT,
            str(etc),
            *argv,
        ],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = LogReader(proc)
    try:
        assert kernel.wait_registered(30), "\n".join(log.drain(1))
        host = KvpHost(kernel)
        uname = os.uname()
        items, end = host.enumerate_all(2)
        assert end == S_CONT
        assert items == [
            ("FullyQualifiedDomainName", "kvp-golden.example.org"),
            ("IntegrationServicesVersion", "3.1"),
            ("NetworkAddressIPv4", ""),
            ("NetworkAddressIPv6", ""),
            ("OSBuildNumber", uname.release),
            ("OSName", "Golden Linux"),
            ("OSMajorVersion", "42.7"),
            ("OSMinorVersion", ""),
            ("OSVersion", uname.release.split("-")[0]),  # the C daemon cuts at the first '-'
            ("ProcessorArchitecture", uname.machine),
        ]
        # The auto pool's file is a plain pool for SET/GET, as upstream: ENUMERATE
        # stays synthesized.
        assert host.set(2, "stored", "in the file").status == S_OK
        assert host.get(2, "stored").value == "in the file"
        assert host.enumerate(2, 0).key == "FullyQualifiedDomainName"
        assert host.enumerate(2, 10).status == S_CONT
    finally:
        launch.stop(proc)
        kernel.close()


def test_value_types(daemon: Running) -> None:
    host = daemon.host
    host.set(0, "u32", 4_000_000_000, sim_kvp.RegType.U32)
    host.set(0, "u64", 2**64 - 1, sim_kvp.RegType.U64)
    host.set(0, "binary", "dropped by the kernel", 3)
    host.set(0, "ключ", "значение 😀")
    assert host.enumerate_all(0)[0] == [
        ("u32", "4000000000"),
        ("u64", "18446744073709551615"),
        ("binary", ""),
        ("ключ", "значение 😀"),
    ]


def test_get_reply_bytes(daemon: Running) -> None:
    daemon.host.set(3, "VirtualMachineName", "vm-01")
    msg = sim_kvp.encode_get_request(3, "VirtualMachineName")
    reply = daemon.host.exchange(msg)
    assert reply is not None
    # Status 0, value at 532 (where the kernel reads), 528-531 clear, the rest as sent.
    assert reply[:4] == bytes(4) and reply[4:528] == msg[4:528]
    assert reply[528:532] == bytes(4) and reply[532:538] == b"vm-01\0"
    assert reply[538:] == msg[538:]


def test_enumerate_reply_bytes(daemon: Running) -> None:
    daemon.host.set(0, "k", "v")
    msg = sim_kvp.encode_enumerate_request(0, 0)
    reply = daemon.host.exchange(msg)
    assert reply == bytes(4) + msg[4:20] + golden_record(b"k", b"v") + msg[20 + R :]


def _raw(run: Running, msg: bytes) -> bytes | None:
    return run.host.exchange(msg)


def _with(msg: bytes, off: int, data: bytes) -> bytes:
    b = bytearray(msg)
    b[off : off + len(data)] = data
    return bytes(b)


def test_malformed_messages_get_a_status_and_the_daemon_goes_on(daemon: Running) -> None:
    run = daemon
    run.host.set(0, "k", "v")
    u32 = struct.Struct("<I").pack
    cases = [
        (bytes(100), E_FAIL, "malformed request: 100 bytes"),
        (bytes(7431), E_FAIL, "malformed request: 7431 bytes"),
        (sim_kvp.encode_get_request(0, "k") + b"x", E_FAIL, "malformed request: 7433 bytes"),
        (sim_kvp.encode_get_request(5, "k"), E_FAIL, "GET: no pool 5"),
        (sim_kvp.encode_set_request(255, "k", "v"), E_FAIL, "SET: no pool 255"),
        (sim_kvp.encode_enumerate_request(9, 0), E_FAIL, "ENUMERATE: no pool 9"),
        (sim_kvp.encode_delete_request(7, "k"), E_FAIL, "DELETE: no pool 7"),
        (
            _with(sim_kvp.encode_get_request(0, "k"), 8, u32(0)),
            S_CONT,
            "GET: pool 0: bad key_size 0",
        ),
        (
            _with(sim_kvp.encode_get_request(0, "k"), 8, u32(513)),
            S_CONT,
            "GET: pool 0: bad key_size 513",
        ),
        (
            _with(sim_kvp.encode_set_request(0, "k", "v"), 8, u32(600)),
            S_CONT,
            "Too long key or value",
        ),
        (
            _with(sim_kvp.encode_set_request(0, "k", "v"), 12, u32(2049)),
            S_CONT,
            "Too long key or value",
        ),
        (
            _with(sim_kvp.encode_delete_request(0, "k"), 4, u32(100000)),
            S_CONT,
            "DELETE: pool 0: bad key_size 100000",
        ),
        (_with(sim_kvp.encode_enumerate_request(0, 0), 0, b"\x2a"), E_FAIL, "unknown operation 42"),
        (sim_kvp.encode_registration_reply(), E_FAIL, "unknown operation 100"),
    ]
    for msg, status, text in cases:
        reply = _raw(run, msg)
        assert reply is not None and len(reply) == kvp.KVP_MSG_SIZE, text
        assert sim_kvp.decode_status_reply(reply) == status, text
        assert text in run.log.wait_for(text)
    assert (
        sim_kvp.decode_status_reply(
            _raw(run, sim_kvp.encode_enumerate_request(0, 0xFFFFFFFF)) or b""
        )
        == S_CONT
    )
    assert (
        sim_kvp.decode_status_reply(
            _raw(run, sim_kvp.encode_enumerate_request(2, 0x80000000)) or b""
        )
        == S_CONT
    )
    # Still serving, nothing changed.
    assert run.host.enumerate_all(0) == ([("k", "v")], S_CONT)
    assert run.proc.poll() is None


def test_reopens_after_the_device_goes_away(daemon: Running) -> None:
    daemon.host.set(0, "before", "1")
    daemon.kernel.hangup()
    daemon.log.wait_for("reopening")
    assert daemon.kernel.wait_registered(30)
    assert daemon.host.get(0, "before").value == "1"
    assert daemon.host.set(0, "after", "2").status == S_OK
    assert daemon.log.wait_for("KVP LIC Version")


def test_restart_keeps_the_pools(daemon: Running) -> None:
    daemon.host.set(1, "persistent", "yes")
    daemon.restart()
    assert daemon.host.enumerate_all(1) == ([("persistent", "yes")], S_CONT)


def test_pool_changed_by_others_between_requests(daemon: Running) -> None:
    daemon.host.set(1, "ours", "1")
    path = daemon.state / ".kvp_pool_1"
    # cloud-init's reporting handler appends under flock.
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(golden_record(b"cloud-init", b"report"))
    assert daemon.host.enumerate_all(1) == ([("ours", "1"), ("cloud-init", "report")], S_CONT)
    # A same-size rewrite in place, right after our read.
    with open(path, "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.write(golden_record(b"ours", b"2"))
    assert daemon.host.get(1, "ours").value == "2"
    assert daemon.host.set(1, "third", "3").status == S_OK
    assert [k for k, _ in daemon.host.enumerate_all(1)[0]] == ["ours", "cloud-init", "third"]


def test_unusable_pool_file_fails_that_pool_only(daemon: Running) -> None:
    daemon.host.set(3, "k", "v")
    path = daemon.state / ".kvp_pool_3"
    path.unlink()
    path.mkdir()  # open() now fails with EISDIR
    assert daemon.host.set(3, "k", "w").status == E_FAIL
    assert daemon.host.get(3, "k").status == E_FAIL
    assert daemon.host.enumerate(3, 0).status == E_FAIL
    assert daemon.log.wait_for("pool 3")
    assert daemon.host.set(0, "fine", "yes").status == S_OK
    path.rmdir()
    assert daemon.host.set(3, "k", "back").status == S_OK
    assert daemon.host.enumerate_all(3) == ([("k", "back")], S_CONT)


def test_sigterm_ends_cleanly(daemon: Running) -> None:
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0


def test_debug_logging(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / ".kvp_pool_0").write_bytes(golden_record(b"seeded", b"value"))
    run = start(tmp_path, "-d")
    try:
        run.log.wait_for("Logging debug info in syslog(debug)")
        assert run.log.wait_for("===Start dumping the contents of pool 0 ===").startswith(
            "<7>KVP: "
        )
        run.log.wait_for("pool: 0, 1/1 key=seeded val=value")
        run.host.set(0, "a", "b")
        run.log.wait_for("kvp_key_add_or_modify: got a KVP: pool=0 key=a val=b")
        run.log.wait_for("kvp_key_add_or_modify: added: pool=0 key=a val=b")
        run.host.set(0, "a", "c")
        run.log.wait_for("kvp_key_add_or_modify: updated: pool=0 key=a val=c")
        run.host.delete(0, "a")
        run.log.wait_for("kvp_key_delete: deleting the KVP: pool=0 key=a val=c")
        run.host.delete(0, "a")
        run.log.wait_for("kvp_key_delete: could not delete KVP: pool=0 key=a. Record not found")
    finally:
        launch.stop(run.proc)
        run.kernel.close()


def test_state_dir_that_cannot_be_created_exits_1(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with ChardevKernel(str(tmp_path / "hv_kvp"), "hv_kvp") as kernel:
        proc = spawn_daemon(kernel.path, str(tmp_path / "file" / "state"))
        log = LogReader(proc)
        assert proc.wait(30) == 1
        assert "Failed to initialize the pools" in "\n".join(log.drain(2))


def test_full_disk(tmp_path: Path) -> None:
    kernel = ChardevKernel(str(tmp_path / "hv_kvp"), "hv_kvp", timeout=10)
    state = tmp_path / "small"
    state.mkdir()
    script = 'mount -t tmpfs -o size=48k hvtest "$0" && exec "$@"'
    argv = [*daemon_argv(), "-n", "--device", kernel.path, "--state-dir", str(state)]
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(state), *argv],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        stderr=subprocess.PIPE,
    )
    log = LogReader(proc)
    try:
        assert kernel.wait_registered(30), "\n".join(log.drain(1))
        host = KvpHost(kernel)
        statuses = [host.set(0, f"k{i}", "x" * 1000).status for i in range(40)]
        full = statuses.index(HvStatus.ERROR_DISK_FULL)
        assert full > 3 and set(statuses[:full]) == {S_OK}
        log.wait_for("Failed to write file, pool: 0; error: 28")
        items, _ = host.enumerate_all(0)
        assert [k for k, _ in items] == [f"k{i}" for i in range(full)]
        assert host.get(0, "k0").value == "x" * 1000
        assert host.delete(0, f"k{full - 1}").status == S_OK  # a truncate: frees room
        assert host.set(0, "fits", "again").status == S_OK
    finally:
        launch.stop(proc)
        kernel.close()


# -- hvsim: serve, the client, the demo ---------------------------------------------------------


def _hvsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*python_argv("hvsim.cli"), *args],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wait_for_socket(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def test_hvsim_serve_and_client(tmp_path: Path) -> None:
    d = tmp_path / "sim"
    serve = subprocess.Popen(
        [*python_argv("hvsim.cli"), "serve", "--dir", str(d), "--service", "kvp"],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        stdout=subprocess.PIPE,
    )
    daemon = None
    try:
        _wait_for_socket(d / "control")
        res = _hvsim("kvp", "--dir", str(d), "wait", "--timeout", "0.2")
        assert (res.returncode, res.stderr) == (
            1,
            "hvsim kvp: no daemon has registered within 0.2 s\n",
        )
        daemon = spawn_daemon(str(d / "hv_kvp"), str(tmp_path / "state"))
        res = _hvsim("kvp", "--dir", str(d), "wait")
        assert res.returncode == 0, res.stderr
        assert call(str(d), {"command": "kvp.status"})["registered"]
        res = _hvsim("kvp", "--dir", str(d), "set", "--pool", "0", "greeting", "hello")
        assert (res.returncode, res.stdout.strip()) == (0, "S_OK (0x00000000)")
        res = _hvsim("kvp", "--dir", str(d), "set", "--pool", "0", "--type", "u32", "number", "7")
        assert res.returncode == 0
        res = _hvsim("kvp", "--dir", str(d), "get", "--pool", "0", "greeting")
        assert (res.returncode, res.stdout) == (0, "hello\n")
        res = _hvsim("kvp", "--dir", str(d), "enumerate", "--pool", "0")
        assert res.stdout == "pool 0 (External): 2 items\n  greeting = hello\n  number = 7\n"
        res = _hvsim("kvp", "--dir", str(d), "enumerate")
        assert (
            res.returncode == 0
            and "ProcessorArchitecture = " in res.stdout
            and "pool 4" in res.stdout
        )
        res = _hvsim("kvp", "--dir", str(d), "delete", "--pool", "0", "greeting")
        assert res.returncode == 0
        res = _hvsim("kvp", "--dir", str(d), "get", "--pool", "0", "greeting")
        assert (res.returncode, res.stdout.strip()) == (1, "S_CONT (0x80070103)")
        res = _hvsim("kvp", "--dir", str(tmp_path / "nowhere"), "get", "k")
        assert res.returncode == 2 and "cannot reach the simulator" in res.stderr
        res = _hvsim("kvp", "--dir", str(tmp_path / "nowhere"), "wait", "--timeout", "0.2")
        assert res.returncode == 1 and "cannot reach the simulator" in res.stderr
    finally:
        if daemon is not None:
            launch.stop(daemon)
        serve.send_signal(signal.SIGTERM)
        serve.wait(10)


def test_demo() -> None:
    res = _hvsim("demo", "kvp", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-2:] == ["== summary", "  KVP                              ok"]
    assert "IntegrationServicesVersion   3.1" in res.stdout
    assert "FAILED" not in res.stdout
