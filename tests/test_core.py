# SPDX-License-Identifier: GPL-2.0-only
"""The shared core: channel, service loop, logging, sd_notify, CLI, ABI check."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons import _ffi, cli, log
from hvdaemons.errors import ProtocolError
from hvdaemons.notify import sd_notify
from hvdaemons.service import Missing, Service, Stopper, wait_for_device
from hvdaemons.transport import FdChannel, open_device
from hvsim.chardev import ChardevKernel
from hvsim.launch import NEUTRAL_CWD, child_env


class EchoVss:
    """A minimal VSS-shaped handler: registers with 129, answers status = op."""

    def __init__(self) -> None:
        self.resets = 0
        self.stopped = False
        self.replies_seen: list[bytes] = []

    def registration(self) -> bytes | None:
        return bytes([129]) + bytes(11)

    def registration_reply(self, msg: bytes) -> bool:
        self.replies_seen.append(msg)
        if len(msg) != 4:
            raise ProtocolError(f"{len(msg)} bytes")
        return True

    def handle(self, msg: bytes) -> bytes | None:
        if msg[0] == 0xEE:
            raise ValueError("boom")
        return struct.pack("<I", msg[0]) + bytes(8)

    def failure_reply(self, msg: bytes) -> bytes | None:
        return struct.pack("<I", _ffi.const("HV_E_FAIL")) + bytes(8)

    def reset(self) -> None:
        self.resets += 1

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[ChardevKernel]:
    with ChardevKernel(str(tmp_path / "hv_vss"), "hv_vss", timeout=5) as k:
        yield k


def run_service(service: Service) -> threading.Thread:
    t = threading.Thread(target=service.run, daemon=True)
    t.start()
    return t


def test_service_registers_answers_and_survives_bad_request(kernel: ChardevKernel) -> None:
    handler = EchoVss()
    notes: list[str] = []
    service = Service(
        FdChannel(path=kernel.path), handler, notify=lambda s: notes.append(s) or True
    )
    t = run_service(service)
    assert kernel.wait_registered(5)
    # The kernel has queued its reply; the daemon reads it on its own time.
    assert kernel.request(bytes([5]) + bytes(11)) == struct.pack("<I", 5) + bytes(8)
    assert handler.replies_seen == [struct.pack("<I", 129)]
    assert kernel.request(bytes([5]) + bytes(11)) == struct.pack("<I", 5) + bytes(8)
    # A handler exception becomes a failure reply, and the daemon keeps serving.
    reply = kernel.request(bytes([0xEE]) + bytes(11))
    assert reply is not None and struct.unpack_from("<I", reply)[0] == _ffi.const("HV_E_FAIL")
    assert kernel.request(bytes([6]) + bytes(11)) == struct.pack("<I", 6) + bytes(8)
    assert notes == ["READY=1"]
    service.stopper.request()
    t.join(5)
    assert not t.is_alive() and handler.stopped


def test_service_reopens_and_reregisters_after_hangup(kernel: ChardevKernel) -> None:
    handler = EchoVss()
    service = Service(FdChannel(path=kernel.path), handler, notify=lambda s: True)
    t = run_service(service)
    assert kernel.wait_registered(5)
    kernel.hangup()
    assert kernel.wait_registered(5)
    assert kernel.request(bytes([2]) + bytes(11)) == struct.pack("<I", 2) + bytes(8)
    assert handler.resets >= 1
    service.stopper.request()
    t.join(5)
    assert not t.is_alive()


def test_service_waits_for_a_missing_device(tmp_path: Path) -> None:
    path = str(tmp_path / "hv_vss")
    handler = EchoVss()
    service = Service(FdChannel(path=path), handler, notify=lambda s: True)
    t = run_service(service)
    # Starts before the device exists (early boot), registers once it appears.
    threading.Event().wait(0.3)
    with ChardevKernel(path, "hv_vss", timeout=5) as k:
        assert k.wait_registered(5)
        assert k.request(bytes([5]) + bytes(11)) == struct.pack("<I", 5) + bytes(8)
        service.stopper.request()
        t.join(5)
    assert not t.is_alive()


def test_kernel_drops_a_reply_of_the_wrong_size(kernel: ChardevKernel) -> None:
    fd = open_device(kernel.path)
    try:
        os.write(fd, bytes([129]) + bytes(11))
        assert os.read(fd, 64) == struct.pack("<I", 129)
        assert kernel.wait_registered(5)
        result: list[bytes | None] = []
        t = threading.Thread(target=lambda: result.append(kernel.request(bytes([5]) + bytes(11))))
        t.start()
        assert os.read(fd, 64)[0] == 5
        os.write(fd, b"\0" * 5)  # the kernel would fail this write with EINVAL
        t.join(5)
        assert result == [None]
        assert [e.what for e in kernel.events][-2:] == ["bad-reply-size", "close"]
        assert os.read(fd, 64) == b""  # the daemon sees the device go away
    finally:
        os.close(fd)


def test_channel_connects_to_a_seqpacket_socket_and_opens_files(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "dev"))
    listener.listen(1)
    ch = FdChannel.open(str(tmp_path / "dev"))
    peer, _ = listener.accept()
    peer.send(b"x" * 7432)
    assert ch.read() == b"x" * 7432  # one message per read, whole
    ch.write(b"abc")
    assert peer.recv(100) == b"abc"
    peer.close()
    with pytest.raises(Exception, match="end of file"):
        ch.read()
    ch.close()
    assert ch.closed
    listener.close()
    with pytest.raises(FileNotFoundError):
        FdChannel.open(str(tmp_path / "missing"))


def test_open_device_reports_the_device_it_opened_not_a_node_that_appeared_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulator's device comes back (plug) while the daemon opens it: here
    # right after open_device()'s first look at the path.  Found by the KVP
    # sequence fuzzer (Unplug then plug at once): the daemon logged
    # "error: 6 No such device or address" (open() of the new socket).
    path = str(tmp_path / "hv_kvp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    real_stat = os.stat

    def stat_then_plug(p: object, *args: object, **kwargs: object) -> os.stat_result:
        try:
            return real_stat(p, *args, **kwargs)  # type: ignore[arg-type]
        except FileNotFoundError:
            if p == path and listener.fileno() >= 0 and not os.path.lexists(path):
                listener.bind(path)
                listener.listen(1)
            raise

    monkeypatch.setattr(os, "stat", stat_then_plug)
    outcome: OSError | None = None
    fd = -1
    try:
        fd = open_device(path)
    except OSError as e:
        outcome = e
    finally:
        monkeypatch.undo()
    try:
        # Missing when looked at (ENOENT), or connected: never the socket's ENXIO.
        assert outcome is None or isinstance(outcome, FileNotFoundError), outcome
        if outcome is not None:  # the device is back (if not yet): the retry connects
            if not os.path.lexists(path):
                listener.bind(path)
                listener.listen(1)
            fd = open_device(path)
        peer, _ = listener.accept()
        peer.close()
    finally:
        if fd >= 0:
            os.close(fd)
        listener.close()


def test_sd_notify_sends_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    assert sd_notify("READY=1")
    assert sock.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")
    sock.close()


def test_log_priorities_and_hold(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, log_setup: None
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("KVP", foreground=True)
    logger = log.get("hvdaemons.test")
    logger.error("open failed; error: %d %s", 2, "No such file")
    log.hold()
    logger.info("while frozen")
    assert "while frozen" not in capfd.readouterr().err or False
    log.release()
    logger.debug("not shown without -d")
    err = capfd.readouterr().err
    assert "<6>KVP: while frozen" in err
    monkeypatch.setenv("JOURNAL_STREAM", "8:123")
    log.setup("KVP", foreground=True, debug=True)
    logger.warning("w")
    logger.debug("d")
    assert capfd.readouterr().err == "<4>w\n<7>d\n"


def test_a_line_break_in_a_message_cannot_forge_a_log_record(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, log_setup: None
) -> None:
    # Found by the KVP sequence fuzzer: a SET whose key holds "\n" logged
    # "Too long key or value: key=a" and a second line "b, val=..." without a
    # priority, which journald takes as a record of its own.
    monkeypatch.setenv("JOURNAL_STREAM", "8:123")
    log.setup("KVP", foreground=True)
    logger = log.get("hvdaemons.test")
    logger.error("Too long key or value: key=%s, val=%s", "a\n<2>forged", "v\r\n")
    assert capfd.readouterr().err == "<3>Too long key or value: key=a\\n<2>forged, val=v\\r\\n\n"


def test_capfd_sees_held_records_only_after_release(
    capfd: pytest.CaptureFixture[str], log_setup: None
) -> None:
    log.setup("Hyper-V VSS", foreground=True)
    logger = log.get("hvdaemons.test")
    log.hold()
    logger.error("FREEZE of %s failed", "/mnt")
    assert capfd.readouterr().err == ""
    log.release()
    assert capfd.readouterr().err == "<3>Hyper-V VSS: FREEZE of /mnt failed\n"


def test_a_release_landing_inside_a_held_emit_loses_no_record(
    capfd: pytest.CaptureFixture[str], log_setup: None
) -> None:
    """The VSS daemon releases held records from its SIGALRM handler, which Python runs
    between any two bytecodes of the main thread, so also inside a held
    record's emit: between its look at the held list and its append."""
    log.setup("Hyper-V VSS", foreground=True)
    logger = log.get("hvdaemons.test")
    log.hold()
    logger.info("held before")

    class ReleasedBeforeAppend(list):  # type: ignore[type-arg]
        def append(self, record: object) -> None:
            log.release()  # the signal lands here
            super().append(record)

    assert log._held is not None
    log._held = ReleasedBeforeAppend(log._held)
    logger.info("emitted as the release ran")
    logger.info("after")
    assert capfd.readouterr().err == (
        "<6>Hyper-V VSS: held before\n"
        "<6>Hyper-V VSS: emitted as the release ran\n"
        "<6>Hyper-V VSS: after\n"
    )


def test_a_message_that_does_not_format_is_logged_as_is(logs: log.Capture) -> None:
    logger = log.get("hvdaemons.test")
    logger.error("pool %d: %s", "zero")  # too few arguments, and the wrong type
    logger.warning("100% full")  # no arguments: no formatting, as logging does
    assert logs.messages() == ["pool %d: %s ('zero',)", "100% full"]


def test_a_record_below_the_level_is_not_formatted(logs: log.Capture) -> None:
    class Costly:
        def __str__(self) -> str:
            raise AssertionError("formatted")

    logger = log.get("hvdaemons.test")
    with log.capture(log.INFO) as info:
        assert not logger.isEnabledFor(log.DEBUG) and logger.isEnabledFor(log.INFO)
        logger.debug("%s", Costly())
    assert info.records == [] and logs.records == []


def test_exception_appends_the_traceback(logs: log.Capture) -> None:
    try:
        raise ValueError("bad pool")
    except ValueError:
        log.get("hvdaemons.test").exception("request of %d bytes failed", 12)
    [record] = logs.records
    assert record.level == log.ERROR
    first, *rest = record.message.split("\n")
    assert first == "request of 12 bytes failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad pool"


# Logging before setup(), then a stderr that fails in each way it can.
_STDERR_CHILD = r"""
import errno, os, sys
from hvdaemons import log
logger = log.get("hvdaemons.test")
logger.info("not before setup()")
logger.warning("before setup(): %s", "message only")
sys.stderr.flush()
log.setup("KVP", foreground=True)
logger.error("name %s", "a\udcffb")  # a lone surrogate, as a host-supplied name may carry
r, w = os.pipe()
os.close(r)
os.dup2(w, 2)
logger.error("to a pipe nobody reads")  # EPIPE
r, w = os.pipe2(os.O_NONBLOCK)
os.dup2(w, 2)
while True:
    try:
        os.write(w, bytes(65536))
    except BlockingIOError:
        break
logger.error("to a full pipe")  # EAGAIN
os.dup2(os.open("/dev/full", os.O_WRONLY), 2)
logger.error("to a full disk")  # ENOSPC
os.close(2)
logger.error("to a closed fd")  # EBADF
logger.exception("no exception being handled")
print("alive")
"""


def test_a_failing_stderr_loses_the_line_not_the_daemon() -> None:
    res = subprocess.run(
        [sys.executable, "-c", _STDERR_CHILD],
        cwd=NEUTRAL_CWD,
        env={k: v for k, v in child_env().items() if k != "JOURNAL_STREAM"},
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"alive\n"
    assert res.stderr == b"before setup(): message only\n<3>KVP: name a\\udcffb\n"


def test_cli_exit_codes_match_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    class Args(cli.Args):
        __slots__ = ("no_daemon", "device")

    p = cli.CommandLine("hv_vss_daemon", "d", cli.common_options("/dev/vmbus/hv_vss"))
    with pytest.raises(SystemExit) as e:
        p.parse(["-h"], Args)
    assert e.value.code == 0
    assert "--no-daemon" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        p.parse(["--bogus"], Args)
    assert e.value.code == 1
    assert capsys.readouterr().err.endswith("hv_vss_daemon: option --bogus not recognized\n")
    args = p.parse(["-n"], Args)
    assert args.no_daemon and args.device == "/dev/vmbus/hv_vss"


def test_stopper_wakes_a_waiting_loop() -> None:
    stopper = Stopper()
    waiting = threading.Thread(target=stopper.wait, args=(3600,))
    waiting.start()
    stopper.request()
    # The wait ends because of the request, long before its hour is up.
    waiting.join(30)  # a hang guard
    assert not waiting.is_alive(), "Stopper.wait ignored request()"
    assert stopper.requested
    stopper.wait(3600)  # once requested, a wait returns at once


def test_once_logs_each_kind_once_until_reset(logs: log.Capture) -> None:
    once = log.Once(log.get("hvdaemons.test"))
    for i in range(3):
        once(log.ERROR, "open %s failed: %s", "/dev/x", f"error {i}")  # kind: the format
        once(log.WARNING, "%s is bound to %s", "dev", "hv_utils", key="dev")
        once(log.WARNING, "%s is bound to %s", "other", "hv_utils", key="other")
    assert once(log.ERROR, "open %s failed: %s", "/dev/x", "again") is False
    once.reset()
    assert once(log.ERROR, "open %s failed: %s", "/dev/x", "after reset") is True
    assert [(r.name, r.level, r.message) for r in logs.records] == [
        ("hvdaemons.test", log.ERROR, "open /dev/x failed: error 0"),
        ("hvdaemons.test", log.WARNING, "dev is bound to hv_utils"),
        ("hvdaemons.test", log.WARNING, "other is bound to hv_utils"),
        ("hvdaemons.test", log.ERROR, "open /dev/x failed: after reset"),
    ]


class PipeEvents:
    """A device-event source on a real pipe, as a udev monitor is one on a netlink socket."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.drained = 0

    def wake_fd(self) -> int | None:
        return self.r

    def drain_events(self) -> None:
        self.drained += len(os.read(self.r, 64))

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_wait_for_device_says_the_first_reason_once_and_wakes_on_events(
    logs: log.Capture,
) -> None:
    events = PipeEvents()
    looks: list[int] = []
    reasons = ["no device", "no driver", "no driver"]

    def look() -> str | Missing:
        looks.append(len(looks))
        if len(looks) > len(reasons):
            return "the device"
        # A long retry: only a device event can end these sleeps in time.
        return Missing(log.INFO, "waiting: %s", (reasons[len(looks) - 1],), retry=60)

    def announce_devices() -> None:
        deadline = time.monotonic() + 30  # a hang guard
        for i in range(len(reasons)):
            os.write(events.w, b"e")
            while events.drained <= i:  # taken: the next event wakes the next sleep
                assert time.monotonic() < deadline, "the wait never took the event"
                threading.Event().wait(0.01)

    stopper = Stopper()
    found: list[str | None] = []
    t = threading.Thread(target=lambda: found.append(wait_for_device(look, stopper, wake=events)))
    try:
        t.start()
        announce_devices()
        t.join(30)  # a hang guard, far beyond the test's run time
        assert not t.is_alive()
        assert found == ["the device"] and len(looks) == 4
        assert logs.messages() == ["waiting: no device"]
    finally:
        stopper.request()
        t.join(30)
        events.close()


def test_wait_for_device_ends_on_a_stop_request() -> None:
    stopper = Stopper()
    looks: list[bool] = []

    def look() -> str | Missing:
        looks.append(True)
        return Missing(log.INFO, "waiting", retry=60)

    threading.Timer(0.2, stopper.request).start()
    assert wait_for_device(look, stopper) is None
    assert looks  # it looked before it slept


def test_process_name_is_set() -> None:
    before = Path("/proc/self/comm").read_text()
    try:
        _ffi.set_process_name("hv_kvp_daemon_long_name")
        assert Path("/proc/self/comm").read_text() == "hv_kvp_daemon_l\n"
    finally:
        _ffi.set_process_name(before.strip())


def test_c_errors_become_oserror() -> None:
    with pytest.raises(OSError) as e:
        _ffi.check_neg_errno(-2, "x")
    assert e.value.errno == 2
    assert _ffi.check_neg_errno(7) == 7


# In a private mount namespace with a tmpfs /dev, the child owns /dev/log.
_SYSLOG_CHILD = r"""
import os, socket, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "hvtest", "/dev"], check=True)
from hvdaemons import log
logger = log.get("hvdaemons.test")
# No syslog daemon: dropped, as syslog(3) drops it.
log.setup(sys.argv[1], foreground=False)
logger.error("lost")
server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
server.bind("/dev/log")
server.settimeout(30)
log.setup(sys.argv[1], foreground=False)
logger.error("to syslog")
logger.info("info %s", "too")
logger.warning("name %s", "a\udcff\0b")  # a lone surrogate and a NUL from a host
logger.debug("not without -d")
logger.error("end")
for _ in range(4):
    sys.stdout.buffer.write(server.recv(4096) + b"\n")
"""


def test_daemonized_logging_goes_to_syslog() -> None:
    # Without -n the C daemons syslog(): openlog(ident, 0, LOG_USER), so
    # LOG_USER|LOG_ERR = <11> and LOG_USER|LOG_INFO = <14>, a timestamp from
    # glibc's syslog(), then "ident: message"; nothing on stderr, and without
    # a syslog daemon the lines are dropped.
    res = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-c",
            _SYSLOG_CHILD,
            "Hyper-V VSS",
        ],
        cwd=NEUTRAL_CWD,
        env=child_env(),
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""
    # RFC 3164 as glibc writes it: "<PRI>Mmm dd hh:mm:ss ident: message".
    stamp = rb"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    lines = res.stdout.splitlines()
    assert [re.sub(stamp, b"TIME", line, count=1) for line in lines] == [
        b"<11>TIME Hyper-V VSS: to syslog",
        b"<14>TIME Hyper-V VSS: info too",
        b"<12>TIME Hyper-V VSS: name a\\udcff\\x00b",
        b"<11>TIME Hyper-V VSS: end",
    ]


def test_a_stale_compiled_module_refuses_to_import(tmp_path: Path) -> None:
    # A package whose Python side is newer than its compiled _hv: as after an
    # upgrade that left an old extension behind.
    import shutil
    import subprocess
    import sys

    import hvdaemons

    pkg = Path(hvdaemons.__file__).parent
    copy = tmp_path / "hvdaemons"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text().replace(hvdaemons.__version__, "99.0.0"))
    proc = subprocess.run(
        [sys.executable, "-c", "import hvdaemons._ffi"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert f"built for version {hvdaemons.__version__}, but the package is 99.0.0" in proc.stderr


def test_wait_for_device_says_each_kind_of_trouble_once(logs: log.Capture) -> None:
    # The uio transport's shape: the device missing, then failures to open it.
    reasons = [
        Missing(log.INFO, "no device", retry=0),
        Missing(log.ERROR, "open failed: %s", ("EBUSY",), retry=0, key=("open", "EBUSY")),
        Missing(log.ERROR, "open failed: %s", ("EBUSY",), retry=0, key=("open", "EBUSY")),
        Missing(log.INFO, "no device", retry=0),
        Missing(log.ERROR, "open failed: %s", ("EIO",), retry=0, key=("open", "EIO")),
    ]
    looks = iter([*reasons, "the device"])
    assert wait_for_device(lambda: next(looks), Stopper()) == "the device"
    assert logs.messages() == [
        "no device",
        "open failed: EBUSY",
        "open failed: EIO",
    ]
