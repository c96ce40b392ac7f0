# SPDX-License-Identifier: GPL-2.0-only
"""Smoke tests of the reference-daemon harness (fetch.sh, hvshim.c, refdaemons).

Runs Debian's unmodified hv_kvp_daemon / hv_vss_daemon / hv_fcopy_daemon
through the LD_PRELOAD shim, with a SOCK_SEQPACKET listener in a temp dir
standing in for the kernel's hv_utils transport (drivers/hv/hv_utils_transport.c), inside a
private mount namespace.  Needs root and working `unshare --mount`; if those
are missing the tests fail rather than skip.
"""

from __future__ import annotations

import os
import pathlib
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from . import refdaemons
from .refdaemons import LogReader

KVP_MSG_SIZE = 7432  # sizeof(struct hv_kvp_msg)
KVP_OP_ENUMERATE = 3
KVP_OP_REGISTER1 = 100
KVP_POOL_AUTO = 2
KVP_KEY_OFFSET = 20  # hdr(4) + index(4) + value_type, key_size, value_size (12)
KVP_VALUE_OFFSET = KVP_KEY_OFFSET + 512
VSS_MSG_SIZE = 12
VSS_OP_HOT_BACKUP = 2
VSS_OP_REGISTER1 = 129
FCOPY_CURRENT_VERSION = 1

IO_TIMEOUT = 10.0

Spawn = Callable[..., "subprocess.Popen[bytes]"]


def _cstr(buf: bytes, offset: int) -> bytes:
    return buf[offset:buf.index(b"\0", offset)]


def _files_open_for_writing(pid: int) -> dict[str, int]:
    """Path (as the process sees it) -> st_dev of each regular file pid has open for writing."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            continue
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        if stat.S_ISREG(st.st_mode):
            out[os.readlink(f"/proc/{pid}/fd/{fd}")] = st.st_dev
    return out


@pytest.fixture(scope="module")
def shim() -> pathlib.Path:
    refdaemons.ensure_reference()
    return refdaemons.build_shim()


@pytest.fixture
def simdir(tmp_path: pathlib.Path) -> pathlib.Path:
    # sun_path is limited to 108 bytes; pytest's tmp_path is well below that.
    assert len(str(tmp_path / "hv_fcopy")) < 100
    return tmp_path


@pytest.fixture
def spawn(shim: pathlib.Path) -> Iterator[Spawn]:
    """spawn_reference() that kills and reaps every daemon it started."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = refdaemons.spawn_reference(*args, **kwargs)  # type: ignore[arg-type]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=IO_TIMEOUT)
        assert proc.stderr is not None
        proc.stderr.close()


def listen(simdir: pathlib.Path, dev: str) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(simdir / dev))
    srv.listen(1)
    return srv


def accept(srv: socket.socket, proc: subprocess.Popen[bytes], log: LogReader) -> socket.socket:
    """Wait for the daemon to connect; if it dies first, fail showing its stderr
    (e.g. unshare/mount refused) instead of a bare timeout."""
    srv.settimeout(0.2)
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            conn, _ = srv.accept()
            break
        except socket.timeout:
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr = "\n".join(log.drain(1.0))
                pytest.fail(f"daemon never connected (exit status {proc.poll()}); stderr:\n{stderr}")
    conn.settimeout(IO_TIMEOUT)
    return conn


def test_shim_exports_every_open_variant(shim: pathlib.Path) -> None:
    res = subprocess.run(["nm", "-D", "--defined-only", str(shim)],
                         stdout=subprocess.PIPE, text=True, check=True)
    exported = {line.split()[-1] for line in res.stdout.splitlines()}
    wanted = {"open", "open64", "openat", "openat64", "__open_2", "__open64_2",
              "__openat_2", "__openat64_2", "pread", "pread64", "pwrite", "pwrite64",
              "openlog", "syslog", "vsyslog", "__syslog_chk", "__vsyslog_chk"}
    assert wanted <= exported


@pytest.mark.parametrize("release", refdaemons.RELEASES)
def test_reference_imports_are_covered_by_shim(shim: pathlib.Path, release: str) -> None:
    """Every open/pread/syslog-family import of the binaries is one the shim defines."""
    res = subprocess.run(["nm", "-D", "--defined-only", str(shim)],
                         stdout=subprocess.PIPE, text=True, check=True)
    exported = {line.split()[-1] for line in res.stdout.splitlines()}
    for name in refdaemons.DAEMONS[release]:
        res = subprocess.run(["nm", "-D", "--undefined-only", str(refdaemons.ref_daemon(release, name))],
                             stdout=subprocess.PIPE, text=True, check=True)
        imported = {line.split()[-1].split("@")[0] for line in res.stdout.splitlines()}
        relevant = {s for s in imported
                    if s.startswith(("open", "__open", "pread", "pwrite"))
                    or "syslog" in s or s == "openlog"} - {"opendir"}
        assert "open" in relevant, (name, imported)
        assert relevant <= exported, (name, relevant - exported)


@pytest.mark.parametrize("release", refdaemons.RELEASES)
def test_kvp_register_and_enumerate(spawn: Spawn, simdir: pathlib.Path, release: str) -> None:
    srv = listen(simdir, "hv_kvp")
    proc = spawn(release, "hv_kvp_daemon", simdir)
    log = LogReader(proc)
    with srv, accept(srv, proc, log) as conn:
        # The shim execs through unshare and sh: the Popen pid is the daemon.
        assert os.readlink(f"/proc/{proc.pid}/exe") == os.path.realpath(
            refdaemons.ref_daemon(release, "hv_kvp_daemon")
        )

        reg = conn.recv(65536)
        assert len(reg) == KVP_MSG_SIZE
        assert reg[0] == KVP_OP_REGISTER1

        reply = bytearray(KVP_MSG_SIZE)
        reply[0] = KVP_OP_REGISTER1
        reply[4:8] = b"3.1\0"
        conn.send(bytes(reply))
        line = log.wait_for("KVP LIC Version: 3.1")
        assert line == "<6>KVP: KVP LIC Version: 3.1"

        req = bytearray(KVP_MSG_SIZE)
        req[0] = KVP_OP_ENUMERATE
        req[1] = KVP_POOL_AUTO
        struct.pack_into("<I", req, 4, 1)
        conn.send(bytes(req))
        ans = conn.recv(65536)
        assert len(ans) == KVP_MSG_SIZE
        assert struct.unpack_from("<i", ans, 0)[0] == 0
        assert _cstr(ans, KVP_KEY_OFFSET) == b"IntegrationServicesVersion"
        assert _cstr(ans, KVP_VALUE_OFFSET) == b"3.1"

        # The pool files went to the sandbox's own tmpfs: every file the
        # daemon holds open for writing lives on it.  Only the daemon's own
        # /proc entries are read, never the host's /var/lib/hyperv.
        mount = subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-m", "findmnt", "-no", "FSTYPE,SOURCE",
             "--mountpoint", "/var/lib/hyperv"],
            stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        assert mount == ["tmpfs", "hvsandbox"]
        state_dev = os.stat(f"/proc/{proc.pid}/root/var/lib/hyperv").st_dev
        written = _files_open_for_writing(proc.pid)
        assert sorted(written) == [f"/var/lib/hyperv/.kvp_pool_{n}" for n in range(5)]
        assert {dev for dev in written.values()} == {state_dev}
    assert any(line.startswith("<6>KVP: KVP starting") for line in log.lines)


def test_kvp_exits_when_device_missing(spawn: Spawn, simdir: pathlib.Path) -> None:
    """No listener: the shim's open fails with ENOENT and the daemon gives up."""
    proc = spawn("bookworm", "hv_kvp_daemon", simdir)
    log = LogReader(proc)
    line = log.wait_for("open /dev/vmbus/hv_kvp failed")
    assert line == "<3>KVP: open /dev/vmbus/hv_kvp failed; error: 2 No such file or directory"
    assert proc.wait(timeout=IO_TIMEOUT) != 0


def test_vss_register_and_hot_backup(spawn: Spawn, simdir: pathlib.Path) -> None:
    srv = listen(simdir, "hv_vss")
    proc = spawn("bookworm", "hv_vss_daemon", simdir)
    log = LogReader(proc)
    with srv, accept(srv, proc, log) as conn:
        reg = conn.recv(65536)
        assert len(reg) == VSS_MSG_SIZE
        assert reg[0] == VSS_OP_REGISTER1
        conn.send(struct.pack("<I", VSS_OP_REGISTER1))
        assert log.wait_for("kernel module version") == \
            "<6>Hyper-V VSS: VSS: kernel module version: 129"

        conn.send(bytes([VSS_OP_HOT_BACKUP]) + bytes(VSS_MSG_SIZE - 1))
        ans = conn.recv(65536)
        assert ans == bytes(VSS_MSG_SIZE)
        # The upstream format ends in "\n"; the shim drops it.
        assert log.wait_for("HOT BACKUP") == "<6>Hyper-V VSS: VSS: op=CHECK HOT BACKUP"


def test_fcopy_register(spawn: Spawn, simdir: pathlib.Path) -> None:
    srv = listen(simdir, "hv_fcopy")
    proc = spawn("bookworm", "hv_fcopy_daemon", simdir)
    log = LogReader(proc)
    with srv, accept(srv, proc, log) as conn:
        reg = conn.recv(65536)
        assert reg == struct.pack("<i", FCOPY_CURRENT_VERSION)
        conn.send(struct.pack("<I", FCOPY_CURRENT_VERSION))
        # Read by the daemon through pread(), which the shim maps to read().
        assert log.wait_for("kernel module version") == "<6>HV_FCOPY: kernel module version: 1"
        assert proc.poll() is None


def test_sandbox_tmpfs_options_and_binds(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "payload"
    src.write_text("hello\n")
    argv = refdaemons.sandbox_argv(
        ["sh", "-c", "cat /var/lib/hyperv/sub/payload; findmnt -no FSTYPE,OPTIONS /var/lib/hyperv"],
        tmpfs=["/var/lib/hyperv:size=64k"],
        binds={str(src): "/var/lib/hyperv/sub/payload"},
    )
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "hello"
    assert lines[1].startswith("tmpfs ") and "size=64k" in lines[1]
    # Nothing leaked into the host's mount table or filesystem.
    assert not os.path.exists("/var/lib/hyperv/sub")


def test_sandbox_refuses_mount_point_on_devtmpfs() -> None:
    with pytest.raises(ValueError, match="kernel-managed"):
        refdaemons.sandbox_argv(["true"], tmpfs=["/dev/vmbus-hvsandbox-test"])
