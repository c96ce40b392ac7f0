# SPDX-License-Identifier: GPL-2.0-only
"""The uio transport (hvdaemons.fcopy.uio) end to end: the unmodified daemon process
against the simulated uio device and host.

The daemon (`python -m hvdaemons.fcopy.daemon -n --sysfs-root --dev-root`)
finds the device by class in the simulator's sysfs tree, binds it through
new_id where the kernel variant needs that, maps the rings the simulator
shares with it and serves the host, which runs in this process and writes
the rings concurrently.  Every kernel variant the daemon must support is
covered (ring size, page size, interrupt-mask owner, bind by default).  One
test runs it with no options, the trees mounted on /sys and /dev, as a guest
runs it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvdaemons.protocol import fcopy as fm
from hvdaemons.protocol import icmsg
from hvsim import _ffi as sim_ffi
from hvsim import uio as sim_uio
from hvsim.protocol import fcopy as sim_fcopy
from hvsim.protocol import icmsg as sim_icmsg
from tests.support.fcopy import wait_listening
from tests.support.inotify import DirOpens
from tests.support.process import uevent_sockets

S_OK = 0
E_FAIL = 0x80004005
ALREADY_EXISTS = 0x80070050

VARIANT_NAMES = list(sim_uio.VARIANTS)


@dataclass
class Guest:
    sim: sim_uio.UioSim
    host: sim_uio.UioHost
    log: Path
    dest: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def start_guest(root: Path, variant: str) -> Iterator[Guest]:
    """The daemon on a fresh simulated device, bound, connected and negotiated."""
    sim = sim_uio.UioSim(str(root / "sim"), variant)
    log = root / "daemon.log"
    try:
        sim.offer()
        with sim_uio.running_daemon(str(root / "sim"), log_path=str(log)) as proc:
            host = sim_uio.UioHost(sim, timeout=20)
            try:
                sim_uio._wait_bound(sim, 20)
                host.connect(20)
                status, _ = host.negotiate()
                assert status == S_OK, log.read_text()
                yield Guest(sim, host, log, root / "dest")
            except Exception:
                # A daemon that died shows up only as a connect timeout: say why.
                print(log.read_text(errors="replace"))
                raise
            assert proc.poll() is None, "the daemon died:\n" + log.read_text()
    finally:
        sim.close()


@pytest.fixture(scope="module", params=VARIANT_NAMES)
def guest(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    with start_guest(tmp_path_factory.mktemp(f"uio-{request.param}"), request.param) as g:
        yield g


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".hvfcopy-" in p.name]


def test_negotiated_versions_and_binding(guest: Guest) -> None:
    assert guest.host.negotiated == ((3, 0), (1, 1))
    if guest.sim.variant.binds_by_default:
        assert guest.sim.new_id_writes == []
    else:
        assert guest.sim.new_id_writes == [sim_uio.FCOPY_CLASS_ID]  # exactly once
    text = guest.log_text()
    assert "HV_UIO_FCOPY" in text
    assert (
        f"ring {guest.sim.variant.ring_size} bytes per direction, header {guest.sim.variant.page_size}"
        in text
    )


def test_negotiate_again_and_failing_negotiation(guest: Guest) -> None:
    status, body = guest.host.negotiate([(1, 0)], [(1, 1)])
    assert status == E_FAIL
    assert struct.unpack_from("<HH", body) == (0, 0)
    status, body = guest.host.negotiate([(2, 0), (3, 0)], [(1, 1), (9, 9)])
    assert status == S_OK
    assert struct.unpack_from("<HHIHHHH", body) == (1, 1, 0, 3, 0, 1, 1)


NAMES = [
    "plain.txt",
    "café crème.txt",  # Latin-1 range
    "Ελληνικά.dat",  # Greek
    "файл.bin",  # Cyrillic
    "日本語のファイル.txt",  # CJK
    "ملف.txt",  # Arabic
    "emoji-😀-𝄞.txt",  # outside the BMP: surrogate pairs on the wire
    "x" * 200,
]


def test_names_in_several_scripts(guest: Guest) -> None:
    for i, name in enumerate(NAMES):
        data = f"{i}:{name}\n".encode() * (i * 997 + 1)
        result = guest.host.copy_file(data, str(guest.dest / "names"), name)
        assert result.ok, (name, result, guest.log_text())
        assert (guest.dest / "names" / name).read_bytes() == data
    assert sorted(os.listdir(guest.dest / "names")) == sorted(NAMES)


def test_lone_surrogate_is_refused(guest: Guest) -> None:
    status = guest.host.start("bad-\ud800.txt", str(guest.dest), fm.CREATE_PATH)
    assert status == E_FAIL
    assert guest.host.write(0, b"data") == E_FAIL
    assert guest.host.complete() == E_FAIL


def test_nested_paths(guest: Guest) -> None:
    nested = guest.dest / "a" / "b c" / "δ" / "e"
    data = os.urandom(50_000)
    assert guest.host.copy_file(data, str(nested), "deep.bin").ok
    assert (nested / "deep.bin").read_bytes() == data
    # Without CREATE_PATH a missing directory is an error.
    status = guest.host.start("x.bin", str(guest.dest / "missing" / "dir"), 0)
    assert status == E_FAIL
    assert not (guest.dest / "missing").exists()


def test_overwrite_on_and_off(guest: Guest) -> None:
    d = guest.dest / "ow"
    assert guest.host.copy_file(b"first", str(d), "f.txt").ok
    result = guest.host.copy_file(b"second", str(d), "f.txt", flags=fm.CREATE_PATH)
    assert result.start == ALREADY_EXISTS
    assert (d / "f.txt").read_bytes() == b"first"
    result = guest.host.copy_file(b"third", str(d), "f.txt", flags=fm.CREATE_PATH | fm.OVER_WRITE)
    assert result.ok
    assert (d / "f.txt").read_bytes() == b"third"
    assert no_temp_files(d)


def test_zero_byte_file(guest: Guest) -> None:
    result = guest.host.copy_file(b"", str(guest.dest / "empty"), "zero")
    assert result.ok and result.writes == []
    target = guest.dest / "empty" / "zero"
    assert target.is_file() and target.stat().st_size == 0


def test_sparse_file_beyond_4gib(guest: Guest) -> None:
    d = guest.dest / "big"
    offset = 5 * 1024**3 + 12345
    assert guest.host.start("sparse.img", str(d), fm.CREATE_PATH, offset + 6) == S_OK
    assert guest.host.write(0, b"head") == S_OK
    assert guest.host.write(offset, b"tail!!") == S_OK
    assert guest.host.complete() == S_OK
    target = d / "sparse.img"
    st = target.stat()
    assert st.st_size == offset + 6
    assert st.st_blocks * 512 < 1024 * 1024  # still sparse
    with target.open("rb") as f:
        assert f.read(4) == b"head"
        f.seek(offset)
        assert f.read() == b"tail!!"
    target.unlink()


def test_cancel_mid_copy(guest: Guest) -> None:
    d = guest.dest / "cancel"
    result = guest.host.copy_file(os.urandom(100_000), str(d), "partial.bin", cancel_after=5)
    assert result.cancelled and result.finish == S_OK
    assert len(result.writes) == 5
    assert not (d / "partial.bin").exists()
    assert no_temp_files(d)
    # The channel goes on.
    assert guest.host.copy_file(b"next", str(d), "after.bin").ok


def test_planted_symlink_is_not_followed(guest: Guest) -> None:
    d = guest.dest / "trap"
    d.mkdir(parents=True, exist_ok=True)
    victim = guest.dest / "victim.txt"
    victim.write_bytes(b"precious")
    link = d / "innocent.txt"
    link.symlink_to(victim)
    dangling = d / "dangling.txt"
    dangling.symlink_to(guest.dest / "nonexistent-target")

    result = guest.host.copy_file(b"evil", str(d), "innocent.txt")
    assert result.start == ALREADY_EXISTS
    result = guest.host.copy_file(b"evil", str(d), "dangling.txt")
    assert result.start == ALREADY_EXISTS  # a dangling link counts as existing
    assert not (guest.dest / "nonexistent-target").exists()

    result = guest.host.copy_file(
        b"new", str(d), "innocent.txt", flags=fm.CREATE_PATH | fm.OVER_WRITE
    )
    assert result.ok
    assert victim.read_bytes() == b"precious"
    assert not link.is_symlink() and link.read_bytes() == b"new"

    # A symlinked directory a local user planted is refused too.
    (guest.dest / "elsewhere").mkdir(exist_ok=True)
    planted = d / "subdir"
    planted.symlink_to(guest.dest / "elsewhere")
    os.chown(planted, 1000, 1000, follow_symlinks=False)
    result = guest.host.copy_file(b"x", str(planted), "f.txt")
    assert result.start == E_FAIL
    assert not (guest.dest / "elsewhere" / "f.txt").exists()


def test_write_without_start_and_oversized_write(guest: Guest) -> None:
    assert guest.host.write(0, b"orphan") == E_FAIL
    d = guest.dest / "lies"
    assert guest.host.start("liar.bin", str(d), fm.CREATE_PATH) == S_OK
    # size claims more than the 6144-byte fragment: refused, nothing past the message is written
    assert guest.host.write(0, b"abc", size=fm.DATA_FRAGMENT + 1) == E_FAIL
    # The copy has lost data: it fails as a whole, and leaves nothing behind.
    assert guest.host.write(6144, b"def") == E_FAIL
    assert guest.host.complete() == E_FAIL
    assert not (d / "liar.bin").exists()
    assert no_temp_files(d)


def test_malformed_packets_do_not_wedge_the_channel(guest: Guest) -> None:
    host = guest.host
    # A packet type file copy never uses: dropped, not answered.
    host.post(sim_icmsg.encode_request(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_complete()), ptype=7)
    host.wait_consumed()
    # An in-band packet too short for the IC headers: dropped.
    host.post(b"short")
    host.wait_consumed()
    # An IC message of a type file copy does not speak: answered HV_E_FAIL.
    reply = host.request(sim_icmsg.encode_request(icmsg.ICMSGTYPE_HEARTBEAT, bytes(8)))
    assert icmsg.decode_header(reply).status == E_FAIL
    # An unknown fcopy operation and a truncated START: HV_E_FAIL each.
    assert host.fcopy(struct.pack("<I", 77) + bytes(32)) == E_FAIL
    assert host.fcopy(sim_fcopy.encode_start("x", "/tmp", 0, utf16=True)[:600]) == E_FAIL
    # A corrupt descriptor (len8 past the published bytes): the ring is resynchronised.
    host.post_raw(struct.pack("<HHHHQ", 6, 2, 500, 1, 42) + bytes(16))
    host.wait_consumed()
    # Everything still works, and the bad packets cost at most one log line each.
    data = os.urandom(20_000)
    assert host.copy_file(data, str(guest.dest / "after-junk"), "ok.bin").ok
    assert (guest.dest / "after-junk" / "ok.bin").read_bytes() == data
    assert "corrupt packet in the receive ring" in guest.log_text()


def test_signals_only_when_needed(guest: Guest) -> None:
    """Strict host: responses come with a signal (it never looks without one), no extra ones."""
    before_signals = guest.sim.guest_signals
    before_requests = guest.host.requests
    assert guest.host.copy_file(os.urandom(6144 * 40), str(guest.dest / "sig"), "s.bin").ok
    requests = guest.host.requests - before_requests
    guest.sim.pump(0.2)
    # One per response at most; one fewer only when the host took a response
    # before the guest looked at its read index (the kernel's rule too).
    assert 0 < guest.sim.guest_signals - before_signals <= requests
    assert guest.sim.bad_irqcontrol == 0


def test_many_back_to_back_copies(guest: Guest) -> None:
    d = guest.dest / "many"
    for i in range(30):
        data = os.urandom(i * 1531)
        assert guest.host.copy_file(data, str(d), f"f{i}").ok
        assert (d / f"f{i}").read_bytes() == data


# -- lifecycle: device appearing late, rescind, restart -------------------------------


@pytest.mark.parametrize("variant", ["6.15", "7.2"])
def test_waits_quietly_for_the_device_then_binds(tmp_path: Path, variant: str) -> None:
    sim = sim_uio.UioSim(str(tmp_path / "sim"), variant)
    log = tmp_path / "daemon.log"
    try:
        devices = Path(sim.sysfs) / "bus" / "vmbus" / "devices"
        with (
            DirOpens(devices) as scans,
            sim_uio.running_daemon(str(tmp_path / "sim"), log_path=str(log)),
        ):
            # The host has Guest Services disabled: no device.  The events: the
            # daemon's scans of the VMBus devices, three of them.
            scans.wait(3)
            waiting = [line for line in log.read_text().splitlines() if "waiting" in line]
            assert len(waiting) == 1, log.read_text()
            sim.offer()
            sim_uio._wait_bound(sim, 20)
            host = sim_uio.UioHost(sim, timeout=20)
            host.connect(20)
            assert host.negotiate()[0] == S_OK
            assert host.copy_file(b"late", str(tmp_path / "d"), "late.txt").ok
            assert len(sim.new_id_writes) == (0 if sim.variant.binds_by_default else 1)
            assert len(log.read_text().splitlines()) < 15, log.read_text()
    finally:
        sim.close()


@pytest.mark.parametrize("variant", ["6.10", "64k-pages"])
def test_rescind_mid_copy_and_reoffer(tmp_path: Path, variant: str) -> None:
    with start_guest(tmp_path, variant) as g:
        sim, host, dest = g.sim, g.host, g.dest
        assert host.start("cut.bin", str(dest), fm.CREATE_PATH) == S_OK
        assert host.write(0, b"x" * 6144) == S_OK
        sim.rescind()  # the host withdraws Guest Services mid-copy
        deadline = time.monotonic() + 10
        while not no_temp_files(dest) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert no_temp_files(dest), "the partial file was kept"
        assert not (dest / "cut.bin").exists()
        sim.offer()  # and offers it again
        sim_uio._wait_bound(sim, 20)
        host.connect(20)
        assert host.negotiate()[0] == S_OK
        assert host.copy_file(b"again", str(dest), "again.bin").ok
        assert sim.opens == 2


@pytest.mark.parametrize("variant", ["6.15", "6.18"])
def test_corrupt_read_index_mid_copy_is_resynchronised(tmp_path: Path, variant: str) -> None:
    """The host scribbles over RX read_index while a copy runs (its WRITEs go to the C
    fast path): the daemon drops what it cannot trust and resynchronises, as it does
    when no copy runs, instead of resetting the channel and abandoning the copy.

    Found by tests/fuzz/uio.py: a misaligned or out-of-range read index met by the
    fast path or the spin escaped the corruption handling.
    """
    with start_guest(tmp_path, variant) as g:
        sim, host, dest = g.sim, g.host, g.dest
        assert host.start("kept.bin", str(dest), fm.CREATE_PATH) == S_OK
        first, second = os.urandom(6144), os.urandom(3000)
        assert host.write(0, first) == S_OK
        rx = sim.rx
        assert rx is not None
        read_index, write_index = sim_ffi.RING_READ_INDEX, sim_ffi.RING_WRITE_INDEX
        rx.store(read_index, rx.load(read_index) + 4)  # misaligned
        sim.signal_guest()
        deadline = time.monotonic() + 20
        while rx.load(read_index) != rx.load(write_index):
            # Raises Rescinded if the daemon closed the channel instead.
            sim.pump(0.01)
            assert time.monotonic() < deadline, "the daemon neither resynchronised nor reset"
        assert host.write(6144, second) == S_OK
        assert host.complete() == S_OK
        assert (dest / "kept.bin").read_bytes() == first + second
        assert sim.opens == 1
        assert "corrupt packet in the receive ring" in g.log_text()


def test_daemon_restart_reopens_and_renegotiates(tmp_path: Path) -> None:
    sim = sim_uio.UioSim(str(tmp_path / "sim"), "6.18")
    try:
        sim.offer()
        for round_ in range(2):
            with sim_uio.running_daemon(str(tmp_path / "sim"), log_path=str(tmp_path / "log")):
                host = sim_uio.UioHost(sim, timeout=20)
                sim_uio._wait_bound(sim, 20)
                host.connect(20)
                assert host.negotiate()[0] == S_OK
                assert host.copy_file(b"r%d" % round_, str(tmp_path / "d"), f"r{round_}").ok
            assert sim.wait_closed(10)
        # One new_id write per daemon start at most; the second found the device bound.
        assert sim.new_id_writes == [sim_uio.FCOPY_CLASS_ID]
    finally:
        sim.close()


@pytest.mark.parametrize("variant", ["6.15", "7.2"])
def test_as_on_a_guest_with_no_options(tmp_path: Path, variant: str) -> None:
    """The daemon as a guest runs it: no options, the simulator's trees on /sys and /dev.

    It finds the device in /sys, listens to the kernel's uevents while it
    waits (Guest Services off, then a rescind), and not while it serves.
    """
    sim = sim_uio.UioSim(str(tmp_path / "sim"), variant)
    log = tmp_path / "daemon.log"
    dest = tmp_path / "dest"
    try:
        with sim_uio.running_daemon(
            str(tmp_path / "sim"), log_path=str(log), guest_paths=True
        ) as proc:
            assert wait_listening(proc), log.read_text()  # waiting: Guest Services off
            for round_ in range(2):
                sim.offer()
                sim_uio._wait_bound(sim, 20)
                host = sim_uio.UioHost(sim, timeout=20)
                host.connect(20)
                assert host.negotiate()[0] == S_OK
                assert host.copy_file(b"r%d" % round_, str(dest), f"r{round_}.txt").ok
                assert uevent_sockets(proc.pid) == 0  # serving: nothing to wait for
                sim.rescind()
                assert wait_listening(proc), log.read_text()  # waiting again
            assert [(dest / f"r{i}.txt").read_bytes() for i in range(2)] == [b"r0", b"r1"]
            assert sim.opens == 2
            assert len(sim.new_id_writes) == (0 if sim.variant.binds_by_default else 1)
        # The daemon took a guest's paths: /dev/uio1 is the node it opened.
        assert "/dev/uio1: ring" in log.read_text(), log.read_text()
    finally:
        sim.close()


def test_streaming_host_and_the_daemon_fast_path(guest: Guest, tmp_path: Path) -> None:
    """The benchmark's path: WRITEs streamed from C, the daemon serving them in C.

    Whatever the timing (spins that time out fall back to interrupts on both
    sides), every byte arrives in order and the statuses add up.
    """
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 77))
    fast = sim_uio.UioHost(guest.sim, timeout=20, spin_ns=100_000)
    fast._trans_id = guest.host._trans_id + 1_000_000  # a fresh range of ids
    result = fast.copy_file(str(src), str(guest.dest / "stream"), "s.bin", fast=True)
    assert result.ok, result.finish
    assert len(result.writes) == -(-src.stat().st_size // fm.DATA_FRAGMENT)
    assert (guest.dest / "stream" / "s.bin").read_bytes() == src.read_bytes()
    # The strict host still gets its signals afterwards.
    assert guest.host.copy_file(b"after", str(guest.dest / "stream"), "after.bin").ok
