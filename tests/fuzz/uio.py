# SPDX-License-Identifier: GPL-2.0-only
"""The sequence fuzzer of the uio file-copy daemon: the real executable on the simulated ring.

Mirrors nothing upstream: test harness.  Every example starts a fresh
hv_fcopy_daemon (the installed module, unmodified, as tests/fcopy/test_uio.py
starts it) on its own hvsim.uio.UioSim, in one of the kernel variants
(hvsim.uio.VARIANTS: ring sizes, 64 KiB pages, who masks the interrupt,
binding by default).  The host is this module's own: it writes and reads
the two rings in Python with the rules of the kernel's ring buffer
(drivers/hv/ring_buffer.c: hv_ringbuffer_write(), hv_pkt_iter_close()),
independently of bindings/ring.c, which the daemon and hvsim's UioHost
share.  That lets it build what Hyper-V never sends: descriptors with a
larger offset8 or slack after the payload, garbage trailers, packets split
at any point of the ring's end, corrupt descriptors and indices.

Steps, in any order: file-copy messages (START with good and bad names and
paths, `..`, planted symlinks, both flags; WRITEs in and out of order,
overlapping, sparse, beyond the announced size or the largest file offset,
with lying size fields or cut short; COMPLETE; CANCEL; unknown operations;
short bodies), other IC messages, negotiation, packets the daemon must drop;
ring faults (bad offset8/len8, a short descriptor, read or write indices out
of range or misaligned, in RX and TX); the host polling with its TX
interrupt masked or sleeping on interrupts, spurious interrupts,
pending_send_sz set for nothing; a host that stops reading TX until the
guest waits for room; a local user planting the target name; rescind (also
while the guest waits for room) and re-offer; SIGTERM or SIGKILL and a new
daemon.

A model (the file copier's rules from hvdaemons/fcopy/writer.py's docstring
and the dispatch of hvdaemons/fcopy/uio.py, restated here) predicts each
reply byte for byte, and after every step, with the daemon idle:

* the whole example tree but the simulator's own sysfs/dev (destination,
  and a directory outside it the daemon must never touch): every directory,
  symlink and file, file contents equal to what the host wrote, a target
  only after its COMPLETE, exactly one temporary file (with the data so far)
  while a copy runs, none after CANCEL, a failure, a rescind or SIGTERM;
  one left by SIGKILL until the next START into that directory;
* the daemon alive, its descriptors those at start plus the running copy's
  directory and temporary file, no traceback in its log;
* both rings consumed (nothing unread, nothing unsolicited), the device
  opened exactly as often as the model says (once per start, once per
  rescind or ring fault the daemon must reset the channel for), new_id
  written only by a daemon that found the device unbound, irqcontrol
  always a 4-byte write.

uio_hv_generic keeps no timer on requests (the host does): "answered in
time" is checked by events: each request answered before the host sends
anything else, with the signal the ring rules require (a host sleeping on
interrupts never looks at TX without one, so a lost wake-up fails), and
GUARD seconds only as a hang guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Callable

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from hvdaemons.protocol import fcopy as fm
from hvdaemons.protocol import icmsg
from hvdaemons.protocol.status import HvStatus
from hvsim import _ffi as sim_ffi
from hvsim import launch
from hvsim import uio as sim_uio
from hvsim.protocol import fcopy as sim_fcopy
from hvsim.protocol import icmsg as sim_icmsg
from tests.fuzz.runner import Restart, weighted
from tests.support.fcopy import TEMP_NAME

# A hang guard for anything the daemon must do by itself (a loaded 2-core
# machine); never a measurement.
GUARD = 60.0

S_OK = int(HvStatus.S_OK)
E_FAIL = int(HvStatus.E_FAIL)
EXISTS = int(HvStatus.ERROR_ALREADY_EXISTS)

DESC = struct.Struct("<HHHHQ")
INBAND = icmsg.VM_PKT_DATA_INBAND
OTHER_TYPE = 7  # VM_PKT_DATA_USING_XFER_PAGES: file copy never uses it; dropped
COMPLETION = sim_icmsg.VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED
HDR = icmsg.ICMSG_HDR_SIZE
RESPONSE_FLAGS = icmsg.ICMSGHDRFLAG_TRANSACTION | icmsg.ICMSGHDRFLAG_RESPONSE
# What the uio daemon negotiates (tools/hv/hv_fcopy_uio_daemon.c: fw_versions,
# fcopy_versions): exactly these, or HV_E_FAIL.
FW, SVC = (3, 0), (1, 1)

# The writer's temporary files (hvdaemons/fcopy/writer.py docstring).
TEMP_RE = TEMP_NAME
NAME_MAX = 255
MAX_FILE_OFFSET = (1 << 63) - 1
# Files up to this size are compared whole; beyond, size and every written range.
WHOLE = 1 << 20

W, R = sim_ffi.RING_WRITE_INDEX, sim_ffi.RING_READ_INDEX
MASK, PENDING = sim_ffi.RING_INTERRUPT_MASK, sim_ffi.RING_PENDING_SEND_SZ


class Violation(AssertionError):
    """The daemon (or the simulator) did something the model does not allow."""


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# -- steps -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Frame:
    """How a packet is laid into RX: descriptor and ring position variations, all valid."""

    extra_offset8: int = 0  # payload starts this many 8-byte units later
    slack8: int = 0  # len8 covers this many more zero units after the payload
    wrap: int | None = None  # the packet straddles the ring end this many bytes in
    trailer: int | None = None  # a garbage trailer instead of the previous write index
    flags: int = COMPLETION
    force_signal: bool = False  # signal although the ring rules say no (spurious)


@dataclasses.dataclass(frozen=True)
class Start:
    name: str | bytes  # bytes: the raw 520-byte field content
    path: str  # under the example root; "\ud800" marks a lone surrogate
    form: str  # abs, rel, dbl, trail
    flags: int
    size: int


@dataclasses.dataclass(frozen=True)
class Write:
    where: str  # next, abs, overlap, far, invalid
    value: int
    length: int
    seed: int
    size_field: int | None = None  # a lying size field
    cut: int | None = None  # the body cut to this many bytes


@dataclasses.dataclass(frozen=True)
class Complete:
    pass


@dataclasses.dataclass(frozen=True)
class Cancel:
    pass


@dataclasses.dataclass(frozen=True)
class BadFcopy:
    """An unknown operation, a body too short for one, or a truncated START."""

    body: bytes


@dataclasses.dataclass(frozen=True)
class OtherIc:
    msgtype: int


@dataclasses.dataclass(frozen=True)
class Negotiate:
    fw: tuple[tuple[int, int], ...]
    svc: tuple[tuple[int, int], ...]
    fw_count: int | None = None  # a lying count


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A packet the daemon drops unanswered: other type, IC response, too short for IC headers."""

    kind: str


@dataclasses.dataclass(frozen=True)
class Msg:
    """One host request in a frame."""

    what: object
    frame: Frame = Frame()


@dataclasses.dataclass(frozen=True)
class Transfer:
    """A whole copy as Hyper-V sends it (START, WRITEs, COMPLETE or CANCEL or nothing),
    each message framed its own way and checked on its own."""

    msgs: tuple[Msg, ...]


@dataclasses.dataclass(frozen=True)
class BadDescriptor:
    """A descriptor the guest cannot trust; everything published is dropped, nothing answered."""

    kind: str  # offset8, len8-short, len8-long, len8-zero, stub
    seed: int


@dataclasses.dataclass(frozen=True)
class BadIndex:
    """A ring index out of range or misaligned, written by the host."""

    ring: str  # rx-write, rx-read, tx-read, tx-write
    value: str  # dsize, beyond, misaligned, huge
    then: object  # the request that makes the guest touch TX (tx-*)


@dataclasses.dataclass(frozen=True)
class HostPolls:
    on: bool  # TX interrupt_mask = 1: the host polls TX and wants no signals


@dataclasses.dataclass(frozen=True)
class Spurious:
    count: int


@dataclasses.dataclass(frozen=True)
class PendingGame:
    value: int  # RX pending_send_sz, as if the host waited for room it does not need


@dataclasses.dataclass(frozen=True)
class TxStall:
    """The host stops reading TX while it sends these requests, until the guest waits for room."""

    writes: tuple[Write, ...]


@dataclasses.dataclass(frozen=True)
class Plant:
    """A local user creates the running copy's target name (or a name beside it)."""

    at_target: bool


@dataclasses.dataclass(frozen=True)
class Rescind:
    blocked: bool  # first let the guest wait for TX room


NAMES: tuple[str | bytes, ...] = (
    "f0",
    "f1",
    "f2",
    "existing.txt",
    "dir",
    "link",
    "ü-ñ.txt",
    "😀 𝄞.bin",
    "n" * 255,
    # refused: empty, dot names, a slash, too long in bytes, a lone surrogate
    "",
    ".",
    "..",
    "a/b",
    "x" * 256,
    "é" * 128,
    "bad\ud800",
    b"A\0" * 260,  # the whole field, no terminator: 260 units
)
PATHS = (
    "dest",
    "dest",
    "dest/a",
    "dest/a/b",
    "dest/new/deeper",
    "dest/plain",  # a regular file as a directory
    "dest/plain/x",
    "dest/ulink",  # a directory symlink a local user planted
    "dest/link/x",  # a file symlink as a directory
    "dest/../outside",
    "dest/./a",
    "dest/" + "n" * 256,
    "dest/bad\ud800",
)
PATH_FORMS = ("abs", "abs", "rel", "dbl", "trail")
FLAGS = (
    fm.CREATE_PATH,
    fm.CREATE_PATH,
    fm.CREATE_PATH | fm.OVER_WRITE,
    fm.OVER_WRITE,
    0,
    0xFFFFFFFF,
)

_frames = weighted(
    (12, st.just(Frame())),
    (
        8,
        st.builds(
            Frame,
            extra_offset8=st.integers(0, 3),
            slack8=st.integers(0, 3),
            wrap=st.one_of(st.none(), st.integers(1, 800).map(lambda n: 8 * n)),
            trailer=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
            flags=st.sampled_from([COMPLETION, 0, 0xFFFF]),
            force_signal=st.booleans(),
        ),
    ),
)
_start = st.builds(
    Start,
    name=st.sampled_from(NAMES),
    path=st.sampled_from(PATHS),
    form=st.sampled_from(PATH_FORMS),
    flags=st.sampled_from(FLAGS),
    size=st.one_of(st.integers(0, 200_000), st.just(2**64 - 1)),
)
_good_start = st.builds(
    Start,
    name=st.sampled_from(NAMES[:8]),
    path=st.sampled_from(PATHS[:5]),
    form=st.sampled_from(PATH_FORMS),
    flags=st.sampled_from(FLAGS[:3]),
    size=st.integers(0, 200_000),
)
_fresh_start = st.builds(
    Start,
    name=st.sampled_from(NAMES[:9]),
    path=st.sampled_from(PATHS[:5]),
    form=st.sampled_from(PATH_FORMS),
    flags=st.sampled_from(FLAGS[2:3] * 4 + FLAGS[:1]),
    size=st.integers(0, 200_000),
)
_length = weighted(
    (6, st.just(fm.DATA_FRAGMENT)),
    (3, st.integers(0, fm.DATA_FRAGMENT)),
    (1, st.sampled_from([0, 1, 7, 8, 6143])),
)
_write = weighted(
    (
        30,
        st.builds(
            Write,
            where=st.just("next"),
            value=st.just(0),
            length=_length,
            seed=st.integers(0, 2**32),
        ),
    ),
    (
        8,
        st.builds(
            Write,
            where=st.sampled_from(["abs", "overlap", "abs"]),
            value=st.integers(0, 300_000),
            length=_length,
            seed=st.integers(0, 2**32),
        ),
    ),
    (
        1,
        st.builds(
            Write,
            where=st.sampled_from(["far", "invalid"]),
            value=st.integers(0, 5000),
            length=_length,
            seed=st.integers(0, 2**32),
        ),
    ),
    (
        2,
        st.builds(
            Write,
            where=st.just("next"),
            value=st.just(0),
            length=_length,
            seed=st.integers(0, 2**32),
            size_field=st.sampled_from([0, 1, 100, 6144, 6145, 0xFFFFFFFF]),
        ),
    ),
    (
        1,
        st.builds(
            Write,
            where=st.just("next"),
            value=st.just(0),
            length=_length,
            seed=st.integers(0, 2**32),
            cut=st.integers(0, fm.WRITE_SIZE - 1),
        ),
    ),
)
_bad_fcopy = st.one_of(
    st.builds(
        lambda op, n: struct.pack("<I", op) + bytes(n),
        st.integers(4, 2**32 - 1),
        st.integers(0, 1100),
    ),
    st.binary(max_size=3),
    # A START cut short; at most 1050 bytes, so that padding and slack (up to 3
    # units) never make it whole again (seen_body()), and pointing nowhere.
    st.integers(4, 1050).map(
        lambda n: sim_fcopy.encode_start("cut", "/nonexistent-uiofuzz/x", 0, utf16=True)[:n]
    ),
).map(BadFcopy)
_versions = st.sampled_from([(1, 0), (2, 0), (3, 0), (4, 0), (1, 1), (9, 9)])
_negotiate = st.builds(
    Negotiate,
    fw=st.lists(_versions, min_size=0, max_size=3).map(tuple),
    svc=st.lists(_versions, min_size=0, max_size=3).map(tuple),
    fw_count=st.one_of(st.none(), st.none(), st.sampled_from([101, 200, 0xFFFF])),
)
_any_request = st.one_of(_write, st.just(Complete()), st.just(Cancel()), _good_start, _negotiate)


def _transfer(frames: st.SearchStrategy[Frame]) -> st.SearchStrategy[Transfer]:
    plain = st.builds(
        Write,
        where=st.just("next"),
        value=st.just(0),
        length=st.just(fm.DATA_FRAGMENT),
        seed=st.integers(0, 2**32),
    )
    writes = st.lists(weighted((8, plain), (1, _write)), min_size=0, max_size=24)
    end = weighted((8, st.just(Complete())), (2, st.just(Cancel())), (1, st.none()))

    def build(start: Start, ws: list[Write], e: object, fr: list[Frame]) -> Transfer:
        whats = [start, *ws] + ([e] if e is not None else [])
        return Transfer(tuple(Msg(w, fr[i % len(fr)]) for i, w in enumerate(whats)))

    return st.builds(build, _fresh_start, writes, end, st.lists(frames, min_size=1, max_size=4))


def steps(lifecycle: int = 4) -> st.SearchStrategy[object]:
    """Steps, per mille; the simplest first (shrinking tends towards it).

    Lifecycle steps (rescind, restart, TX-side index faults, a corrupt
    RX write index) cost a channel reset, the daemon's one-second wait for
    the old node to go, or a daemon start: rare in a long run, several in
    each example.
    """
    return weighted(
        (60, _transfer(_frames)),
        (200, st.builds(Msg, _write, _frames)),
        (80, st.builds(Msg, _good_start, _frames)),
        (25, st.builds(Msg, _start, _frames)),
        (60, st.builds(Msg, st.just(Complete()), _frames)),
        (30, st.builds(Msg, st.just(Cancel()), _frames)),
        (25, st.builds(Msg, _bad_fcopy, _frames)),
        (10, st.builds(Msg, st.builds(OtherIc, st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0xFFFF])))),
        (15, st.builds(Msg, _negotiate, _frames)),
        (20, st.builds(Msg, st.builds(Dropped, st.sampled_from(["type", "response", "short"])))),
        (
            50 - lifecycle,
            st.builds(
                BadDescriptor,
                st.sampled_from(["offset8", "len8-short", "len8-long", "len8-zero", "stub"]),
                st.integers(0, 2**32),
            ),
        ),
        (
            6,
            st.builds(
                BadIndex,
                st.just("rx-read"),
                st.sampled_from(["dsize", "beyond", "misaligned", "huge"]),
                st.none(),
            ),
        ),
        (
            lifecycle,
            st.builds(
                BadIndex,
                st.sampled_from(["rx-write", "tx-read", "tx-write"]),
                st.sampled_from(["dsize", "beyond", "misaligned", "huge"]),
                _any_request,
            ),
        ),
        (40, st.builds(HostPolls, st.booleans())),
        (30, st.builds(Spurious, st.integers(1, 3))),
        (20, st.builds(PendingGame, st.integers(1, 70_000))),
        (
            60,
            st.builds(
                TxStall,
                st.lists(_write, min_size=2, max_size=14).map(tuple),
            ),
        ),
        (15, st.builds(Plant, st.booleans())),
        (lifecycle, st.builds(Rescind, st.booleans())),
        (lifecycle, st.builds(Restart, st.sampled_from([signal.SIGTERM, signal.SIGKILL]))),
    )


# -- the host: both rings, in Python, by the kernel's rules ------------------------------


class Closed(Exception):
    """The daemon closed the channel (the simulator saw end of file)."""


class RingHost:
    """Hyper-V's end of the two rings, one request at a time unless told otherwise."""

    def __init__(self, sim: sim_uio.UioSim) -> None:
        self.sim = sim
        self.polling = False
        self.trans_id = 0x5000
        self.ic_tid = 0
        self.signals_sent = 0
        self.fillers = 0

    @property
    def rx(self) -> sim_ffi.HostRing:
        if self.sim.rx is None:
            raise Violation("no channel")
        return self.sim.rx

    @property
    def tx(self) -> sim_ffi.HostRing:
        if self.sim.tx is None:
            raise Violation("no channel")
        return self.sim.tx

    def signal(self) -> None:
        self.signals_sent += 1
        self.sim.signal_guest()

    def pump(self, timeout: float) -> int:
        try:
            return self.sim.pump(timeout)
        except sim_uio.Rescinded:
            raise Closed() from None

    # RX: we are the producer (hv_ringbuffer_write).

    def put(self, pkt: bytes, *, trailer: int | None = None, force_signal: bool = False) -> bool:
        """Append pkt (descriptor included, 8-aligned) and its trailer; False if RX is full."""
        rx = self.rx
        d = rx.data_size
        w, r = rx.load(W), rx.load(R)
        need = len(pkt) + 8
        if d - (w - r) % d <= need:
            # Ask the guest to signal when there is room, then look again.
            rx.store(PENDING, need)
            r = rx.load(R)
            if d - (w - r) % d <= need:
                return False
        if rx.load(PENDING):
            rx.store(PENDING, 0)
        rx.write_data(w, pkt + struct.pack("<Q", (w << 32) if trailer is None else trailer))
        rx.store(W, (w + need) % d)
        # hv_ringbuffer_write -> hv_signal_on_write: the guest unmasked, and
        # the ring was empty before this packet.
        if force_signal or (rx.load(MASK) == 0 and rx.load(R) == w):
            self.signal()
        return True

    def put_wait(self, pkt: bytes, **kw: object) -> None:
        deadline = time.monotonic() + GUARD
        while not self.put(pkt, **kw):  # type: ignore[arg-type]
            if time.monotonic() > deadline:
                raise Violation("the guest does not drain RX")
            self.pump(0.05)

    def consumed(self) -> bool:
        rx = self.rx
        return rx.load(R) == rx.load(W)

    def wait_consumed(self, what: str) -> None:
        deadline = time.monotonic() + GUARD
        while not self.consumed():
            if time.monotonic() > deadline:
                raise Violation(f"the guest does not read RX ({what})")
            self.pump(0.002)

    def advance_to(self, target: int) -> None:
        """Move RX's write index to target with packets the daemon drops (type 7)."""
        rx = self.rx
        d = rx.data_size
        biggest = (d // 2) & ~7
        while True:
            dist = (target - rx.load(W)) % d
            if not dist:
                return
            if 24 <= dist <= biggest:
                n = dist
            elif dist < 24:
                n = biggest
            else:
                n = biggest if dist - biggest >= 24 else dist - 24
            self.put_wait(packet(bytes(n - 24), ptype=OTHER_TYPE, trans_id=0))
            self.fillers += 1
            self.wait_consumed("filler")

    # TX: we are the consumer (hv_pkt_iter_close).

    def get(self) -> tuple[int, bytes] | None:
        """The next packet in TX as (trans_id, payload), checked as Hyper-V would; None if empty."""
        tx = self.tx
        d = tx.data_size
        r, w = tx.load(R), tx.load(W)
        if r == w:
            return None
        if r % 8 or w % 8 or r >= d or w >= d:
            raise Violation(f"TX indices read {r} write {w} of {d}")
        used = (w - r) % d
        ptype, off8, len8, _flags, tid = DESC.unpack(tx.read_data(r, DESC.size))
        n = len8 * 8
        if ptype != INBAND or off8 != 2 or n < 16 or n + 8 > used:
            raise Violation(f"guest packet type {ptype} offset8 {off8} len8 {len8}, {used} used")
        raw = tx.read_data(r, n + 8)
        if struct.unpack_from("<Q", raw, n)[0] != r << 32:
            raise Violation(f"guest trailer {raw[n:].hex()} at read index {r}")
        tx.store(R, (r + n + 8) % d)
        pending = tx.load(PENDING)
        if pending:
            before = d - used
            if before <= pending < before + n + 8:
                self.signal()  # the guest waits for this much room
        return tid, raw[16:n]

    def reply(self, trans_id: int) -> bytes:
        """Wait for the response to trans_id; a host sleeping on interrupts needs a signal."""
        deadline = time.monotonic() + GUARD
        while True:
            got = self.get()
            if got is not None:
                tid, payload = got
                if tid != trans_id:
                    raise Violation(f"response trans_id {tid:#x}, request {trans_id:#x}")
                return payload
            left = deadline - time.monotonic()
            if left <= 0:
                tx = self.tx
                if tx.load(R) != tx.load(W):
                    raise Violation(f"lost wake-up: response to {trans_id:#x} without a signal")
                raise Violation(f"no response to {trans_id:#x} in {GUARD:.0f} s")
            if self.polling:
                self.pump(0.0005)
            else:
                # TX was empty when we looked: only a signal makes us look again.
                while self.pump(left) == 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break

    def set_polling(self, on: bool) -> None:
        self.polling = on
        self.tx.store(MASK, 1 if on else 0)

    def next_tid(self) -> int:
        self.trans_id += 1
        return self.trans_id

    def ic(self, msgtype: int, body: bytes, **kw: object) -> bytes:
        self.ic_tid = (self.ic_tid + 1) & 0xFF
        return sim_icmsg.encode_request(msgtype, body, transaction_id=self.ic_tid, **kw)  # type: ignore[arg-type]


def packet(
    payload: bytes,
    *,
    ptype: int = INBAND,
    trans_id: int,
    flags: int = COMPLETION,
    extra_offset8: int = 0,
    slack8: int = 0,
) -> bytes:
    """A whole packet: descriptor, gap, payload padded to 8, slack."""
    off8 = 2 + extra_offset8
    body = bytes(8 * extra_offset8) + payload + bytes(_pad8(len(payload)) - len(payload))
    body += bytes(8 * slack8)
    len8 = 2 + len(body) // 8
    return DESC.pack(ptype, off8, len8, flags, trans_id) + body


# -- the model ----------------------------------------------------------------------------


class Data:
    """A file's content as the host wrote it: size and the writes, in order."""

    def __init__(self) -> None:
        self.size = 0
        self.writes: list[tuple[int, bytes]] = []

    def write(self, offset: int, data: bytes) -> None:
        if data:
            self.writes.append((offset, data))
            self.size = max(self.size, offset + len(data))

    def span(self, start: int, n: int) -> bytes:
        out = bytearray(n)
        for off, data in self.writes:
            lo, hi = max(off, start), min(off + len(data), start + n)
            if lo < hi:
                out[lo - start : hi - start] = data[lo - off : hi - off]
        return bytes(out)

    @staticmethod
    def of(content: bytes) -> Data:
        d = Data()
        d.write(0, content)
        return d


@dataclasses.dataclass
class Entry:
    kind: str  # d, f, l
    data: Data | None = None
    target: str = ""


@dataclasses.dataclass
class Copy:
    dir: str
    name: bytes
    overwrite: bool
    data: Data
    failed: int = 0


@dataclasses.dataclass
class Stale:
    dir: str
    name: bytes
    pid: int
    data: Data


class NotUnicode(Exception):
    """A name with a lone surrogate: the daemon's decoder refuses the whole message."""


class Model:
    """The destination tree and the copier, as the host and a local user should see them."""

    def __init__(self, stats: Counter[str]) -> None:
        self.tree: dict[str, Entry] = {}
        self.copy: Copy | None = None
        self.stale: list[Stale] = []
        self.stats = stats  # what the run got to see

    # helpers

    def _fail_copy(self, status: int) -> int:
        if self.copy is not None and not self.copy.failed:
            self.copy.failed = status
        return status

    def abort(self) -> None:
        self.copy = None

    # the messages

    def start(self, name: str | None, comps: list[str] | None, flags: int) -> int:
        """name/comps None: undecodable (lone surrogate)."""
        if name is None or comps is None:
            return self._fail_copy(E_FAIL)
        self.copy = None  # a new START discards a running copy
        raw = name.encode("utf-8")
        if not name or name in (".", "..") or "/" in name or len(raw) > NAME_MAX:
            return E_FAIL
        if any(c in (".", "..") for c in comps):
            return E_FAIL
        create, overwrite = bool(flags & fm.CREATE_PATH), bool(flags & fm.OVER_WRITE)
        cur = ""
        for comp in comps:
            here = f"{cur}/{comp}" if cur else comp
            if len(comp.encode()) > NAME_MAX:
                return E_FAIL  # ENAMETOOLONG
            e = self.tree.get(here)
            if e is None:
                if not create:
                    return E_FAIL
                self.tree[here] = Entry("d")
            elif e.kind != "d":
                return E_FAIL  # a file, or a symlink nobody but root may have planted
            cur = here
        target = f"{cur}/{name}"
        e = self.tree.get(target)
        if e is not None:
            if not overwrite:
                return EXISTS
            if e.kind == "d":
                return E_FAIL
        self.stale = [s for s in self.stale if s.dir != cur]
        self.copy = Copy(cur, raw, overwrite, Data())
        return S_OK

    def write(self, offset: int, data: bytes | None) -> int:
        """data None: the message was refused by the decoder."""
        c = self.copy
        if data is None:
            return self._fail_copy(E_FAIL)
        if c is None:
            return E_FAIL
        if c.failed:
            return c.failed
        c.data.write(offset, data)
        return S_OK

    def complete(self) -> int:
        c = self.copy
        if c is None:
            return E_FAIL
        self.copy = None
        if c.failed:
            return c.failed
        target = f"{c.dir}/{c.name.decode()}"
        if not c.overwrite and target in self.tree:
            return EXISTS
        self.tree[target] = Entry("f", c.data)
        self.stats["files copied"] += 1
        return S_OK

    def cancel(self) -> int:
        if self.copy is not None:
            self.stats["copies cancelled"] += 1
        self.copy = None
        return S_OK

    def reject(self) -> int:
        return self._fail_copy(E_FAIL)


def seen_body(body: bytes, slack8: int = 0) -> bytes:
    """A message body as the daemon sees it: the packet carries no length finer than
    8 bytes (len8), so the zero padding after the IC header and body, and any slack
    the host put after it, are part of the message."""
    return body + bytes(_pad8(HDR + len(body)) - HDR - len(body) + 8 * slack8)


def write_message(w: Write, next_offset: int, slack8: int = 0) -> tuple[bytes, int, bytes | None]:
    """(body, offset, the bytes the daemon must write or None if it must refuse it)."""
    data = random.Random(w.seed).randbytes(w.length)
    size = w.length if w.size_field is None else w.size_field
    if w.where == "next":
        offset = next_offset
    elif w.where == "overlap":
        offset = max(0, next_offset - w.value)
    elif w.where == "far":
        offset = 2**32 + w.value
    elif w.where == "invalid":
        offset = MAX_FILE_OFFSET - min(size, fm.DATA_FRAGMENT) + 1 + w.value
    else:
        offset = w.value
    offset &= 2**64 - 1
    body = bytearray(sim_fcopy.encode_write(offset, data))
    struct.pack_into("<I", body, fm.OFF_W_SIZE, size & 0xFFFFFFFF)
    if w.cut is not None:
        body = body[: w.cut]
    view = seen_body(bytes(body), slack8)
    seen = len(view)
    if seen < fm.OFF_W_DATA:
        return bytes(body), offset, None
    # A cut body may have lost its offset and size fields to the padding.
    offset, size = struct.unpack_from("<QI", view, fm.OFF_W_OFFSET)
    if size > fm.DATA_FRAGMENT or fm.OFF_W_DATA + size > seen:
        return bytes(body), offset, None
    if offset > MAX_FILE_OFFSET - size:
        return bytes(body), offset, None
    return bytes(body), offset, view[fm.OFF_W_DATA : fm.OFF_W_DATA + size]


# -- one example -------------------------------------------------------------------------


class UioRig:
    """What the examples of one uio fuzz run share: a directory, and the counts."""

    name = "hv_fcopy_daemon (uio)"

    def __init__(self, top: str) -> None:
        self.top = top
        self.messages = 0
        self.examples = 0
        self.stats: Counter[str] = Counter()


class DaemonLog:
    """A daemon's stderr, in a file beside the example tree, read back in lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []
        self._pos = 0
        self._partial = b""

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        self._pos += len(chunk)
        *done, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend(x.decode(errors="replace") for x in done)

    def count(self, needle: str) -> int:
        return sum(needle in x for x in self.lines)

    def wait_count(self, needle: str, n: int, timeout: float) -> bool:
        """Wait until n lines contain needle; False at the hang guard."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if self.count(needle) >= n:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


class Daemon:
    def __init__(self, sim_root: str, log_path: str) -> None:
        with open(log_path, "ab") as out:
            self.proc = launch.popen(
                sim_uio.daemon_command(sim_root),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        self.pid = self.proc.pid
        self.log = DaemonLog(log_path)

    def fds(self) -> list[str]:
        out = []
        base = f"/proc/{self.pid}/fd"
        for name in os.listdir(base):
            with contextlib.suppress(FileNotFoundError):
                out.append(os.readlink(f"{base}/{name}"))
        return sorted(out)

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.poll()


def _channel_fd(target: str) -> bool:
    return target.startswith("socket:") or target.startswith("/memfd:")


def _kinds(fds: list[str]) -> tuple[int, int]:
    """(sockets, memfds): the device connection and the ring memory (mmap keeps a dup)."""
    return sum(t.startswith("socket:") for t in fds), sum(t.startswith("/memfd:") for t in fds)


class UioFuzz(RuleBasedStateMachine):
    """One example: a kernel variant, a fresh daemon, steps; the model checked after each."""

    def __init__(self, rig: UioRig, variant: str | None = None) -> None:
        super().__init__()
        self.rig = rig
        self.variant = variant  # None: each example draws one
        self.root = ""
        self.sim: sim_uio.UioSim | None = None
        self.host: RingHost | None = None
        self.daemon: Daemon | None = None
        self.model = Model(rig.stats)
        self.opens = 0
        self.baseline: list[str] = []
        self.channel = (0, 0)
        self.history: list[str] = []
        self.t0 = time.monotonic()
        self.daemons = 0
        self._verified: dict[str, tuple[int, ...]] = {}

    # -- set-up and tear-down ------------------------------------------------------

    @initialize(variant=st.sampled_from(sorted(sim_uio.VARIANTS)))
    def start(self, variant: str) -> None:
        variant = self.variant or variant
        rig = self.rig
        rig.examples += 1
        rig.stats[f"variant {variant}"] += 1
        self.root = os.path.join(rig.top, f"x{rig.examples}")
        self._populate()
        self.sim = sim_uio.UioSim(os.path.join(self.root, "sim"), variant)
        self.sim.offer()
        self.host = RingHost(self.sim)
        self.history.append(f"start({variant})")
        self._spawn()
        self.check()

    def _populate(self) -> None:
        r = self.root
        m = self.model.tree
        for d in ("dest", "dest/dir", "outside", "outside/sub"):
            os.makedirs(os.path.join(r, d))
            m[d] = Entry("d")
        for f, content in (
            ("dest/existing.txt", b"old\n"),
            ("dest/plain", b"a file\n"),
            ("outside/victim", b"precious\n"),
            ("outside/sub/f0", b"also precious\n"),
        ):
            with open(os.path.join(r, f), "wb") as fh:
                fh.write(content)
            m[f] = Entry("f", Data.of(content))
        for link, target in (("dest/link", "../outside/victim"), ("dest/ulink", "../outside/sub")):
            os.symlink(target, os.path.join(r, link))
            # A local user's: a symlink someone other than root placed is never followed.
            os.chown(os.path.join(r, link), 1000, 1000, follow_symlinks=False)
            m[link] = Entry("l", target=target)

    def _spawn(self) -> None:
        sim, host = self.sim, self.host
        assert sim is not None and host is not None
        first = not sim.bound
        log = os.path.join(self.rig.top, f"x{self.rig.examples}-daemon{self.daemons + 1}.log")
        self.daemon = Daemon(sim.root, log)
        self.daemons += 1
        self.rig.stats["daemons"] += 1
        self._reconnected("start")
        if first:
            # The first daemon binds the device through new_id, once, unless
            # the kernel binds the class by itself (>= 7.2).
            want = [] if sim.variant.binds_by_default else [sim_uio.FCOPY_CLASS_ID]
            self._expect(sim.new_id_writes == want, f"new_id writes {sim.new_id_writes}")

    def _reconnected(self, why: str) -> None:
        """The daemon opens the device (again); the host negotiates as Hyper-V does."""
        sim, host = self.sim, self.host
        assert sim is not None and host is not None and self.daemon is not None
        deadline = time.monotonic() + GUARD
        while not sim.bound:
            if self.daemon.proc.poll() is not None or time.monotonic() > deadline:
                raise Violation(f"{why}: the device was not bound" + self._context())
            time.sleep(0.01)
        try:
            sim.accept(GUARD)
        except sim_uio.HostError as e:
            raise Violation(f"{why}: {e}" + self._context()) from None
        self.opens += 1
        self.model.abort()
        host.polling = False
        self._negotiate(Negotiate((FW,), ((1, 0), SVC)), Frame(), count=False)
        fds = self.daemon.fds()
        self.baseline = [t for t in fds if not _channel_fd(t)]
        self.channel = _kinds(fds)

    def teardown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self.daemon.proc.terminate()
                try:
                    rc = self.daemon.proc.wait(GUARD)
                except subprocess.TimeoutExpired:
                    rc = None
                if rc != 0:
                    raise Violation(f"SIGTERM: exit status {rc}" + self._context())
                self.model.abort()
                self._check_tree()
                self._check_log()
        finally:
            if self.daemon is not None:
                self.daemon.reap()
            if self.sim is not None:
                self.sim.close()
            if self.root:
                shutil.rmtree(self.root, ignore_errors=True)
                prefix = os.path.basename(self.root) + "-daemon"
                for name in os.listdir(self.rig.top):
                    if name.startswith(prefix):
                        os.unlink(os.path.join(self.rig.top, name))

    # -- steps ---------------------------------------------------------------------

    @rule(step=steps())
    def step(self, step: object) -> None:
        self.run_step(step)

    def run_step(self, step: object) -> None:
        rig = self.rig
        kind = type(step.what).__name__ if isinstance(step, Msg) else type(step).__name__
        rig.stats[kind] += 1
        self.history.append(f"{time.monotonic() - self.t0:8.3f} {step!r}")
        try:
            if isinstance(step, Msg):
                self._request(step.what, step.frame)
            elif isinstance(step, Transfer):
                for msg in step.msgs:
                    self._request(msg.what, msg.frame)
                    self.check()
                    rig.stats[type(msg.what).__name__] += 1
            elif isinstance(step, BadDescriptor):
                self._bad_descriptor(step)
            elif isinstance(step, BadIndex):
                self._bad_index(step)
            elif isinstance(step, HostPolls):
                assert self.host is not None
                self.host.set_polling(step.on)
            elif isinstance(step, Spurious):
                assert self.host is not None
                for _ in range(step.count):
                    self.host.signal()
            elif isinstance(step, PendingGame):
                assert self.host is not None
                self.host.rx.store(PENDING, step.value)
            elif isinstance(step, TxStall):
                self._tx_stall(step)
            elif isinstance(step, Plant):
                self._plant(step)
            elif isinstance(step, Rescind):
                self._rescind(step)
            elif isinstance(step, Restart):
                self._restart(step.signum)
            else:
                raise AssertionError(f"unknown step {step!r}")
        except Closed:
            raise Violation(
                f"the daemon closed the channel on {step!r}" + self._context()
            ) from None
        self.check()

    # -- requests ------------------------------------------------------------------

    def _encode(self, what: object, slack8: int = 0) -> tuple[bytes, Callable[[bytes], None]]:
        """The IC payload of a request and the check of its reply (which updates the model)."""
        host, m = self.host, self.model
        assert host is not None
        if isinstance(what, Start):
            name, comps, body = self._start_body(what)
            return host.ic(icmsg.ICMSGTYPE_FCOPY, body), self._status(
                lambda: m.start(name, comps, what.flags)
            )
        if isinstance(what, Write):
            c = m.copy
            nxt = c.data.size if c is not None else 0
            body, offset, data = write_message(what, nxt, slack8)
            if data is None:
                self.rig.stats["write-refused"] += 1
            return host.ic(icmsg.ICMSGTYPE_FCOPY, body), self._status(lambda: m.write(offset, data))
        if isinstance(what, Complete):
            return host.ic(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_complete()), self._status(
                m.complete
            )
        if isinstance(what, Cancel):
            return host.ic(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_cancel()), self._status(m.cancel)
        if isinstance(what, BadFcopy):
            # Too short for its operation once padded (see _bad_fcopy), so
            # refused; a body of less than 4 bytes takes its op from the padding.
            op = struct.unpack_from("<I", seen_body(what.body, slack8))[0]
            model = {fm.FcopyOp.COMPLETE: m.complete, fm.FcopyOp.CANCEL: m.cancel}.get(op, m.reject)
            return host.ic(icmsg.ICMSGTYPE_FCOPY, what.body), self._status(model)
        if isinstance(what, OtherIc):
            return host.ic(what.msgtype, bytes(16)), self._status(lambda: E_FAIL)
        if isinstance(what, Negotiate):
            req = bytearray(sim_icmsg.encode_negotiate_request(list(what.fw), list(what.svc)))
            if what.fw_count is not None:
                struct.pack_into("<H", req, HDR, what.fw_count)
            ok = what.fw_count is None and FW in what.fw and SVC in what.svc
            return bytes(req), self._negotiated(ok)
        raise AssertionError(f"not a request: {what!r}")

    def _start_body(self, s: Start) -> tuple[str | None, list[str] | None, bytes]:
        rel = os.path.relpath(self.root, "/")
        full = f"{rel}/{s.path}"
        if s.form == "abs":
            text = "/" + full
        elif s.form == "dbl":
            text = "//" + full.replace("/", "//")
        elif s.form == "trail":
            text = "/" + full + "/"
        else:
            text = full
        # A path longer than the field is sent cut, without a terminator: the
        # daemon takes the whole field.
        raw = text.encode("utf-16-le", "surrogatepass")[: fm.NAME_FIELD_SIZE]
        comps: list[str] | None = None
        if "\ud800" not in s.path:
            every = [c for c in raw.decode("utf-16-le").split("/") if c]
            top = [c for c in rel.split("/") if c]
            assert every[: len(top)] == top, (every, top)
            # The model's paths are relative to the example root, which exists.
            comps = every[len(top) :]
        if isinstance(s.name, bytes):
            name: str | None = s.name.decode("utf-16-le")
        else:
            name = None if "\ud800" in s.name else s.name
        body = sim_fcopy.encode_start(s.name, raw, s.flags, s.size, utf16=True)
        return name, comps, body

    def _status(self, model: Callable[[], int]) -> Callable[[bytes], None]:
        def check(reply: bytes) -> None:
            self._reply_payload = reply
            status = model()
            got = struct.unpack_from("<I", reply, icmsg.STATUS_OFFSET)[0]
            self.rig.stats[f"status {status:#x}"] += 1
            self._expect(got == status, f"status {got:#x}, model {status:#x}")

        return check

    def _negotiated(self, ok: bool) -> Callable[[bytes], None]:
        def check(reply: bytes) -> None:
            status = struct.unpack_from("<I", reply, icmsg.STATUS_OFFSET)[0]
            self._expect(status == (S_OK if ok else E_FAIL), f"negotiate status {status:#x}")
            counts = struct.unpack_from("<HH", reply, HDR)
            if ok:
                got = struct.unpack_from("<HHHH", reply, HDR + 8)
                self._expect(counts == (1, 1) and got == (*FW, *SVC), f"negotiated {counts} {got}")
            else:
                self._expect(counts == (0, 0), f"failed negotiation counts {counts}")

        return check

    def _frame(self, payload: bytes, frame: Frame, trans_id: int) -> bytes:
        return packet(
            payload,
            trans_id=trans_id,
            flags=frame.flags,
            extra_offset8=frame.extra_offset8,
            slack8=frame.slack8,
        )

    def _post(self, payload: bytes, frame: Frame, *, ptype: int = INBAND) -> tuple[int, bytes]:
        """Put a request into RX as frame says; (trans_id, the payload as the guest sees it)."""
        host = self.host
        assert host is not None
        tid = host.next_tid()
        pkt = self._frame(payload, frame, tid)
        if ptype != INBAND:
            pkt = struct.pack("<H", ptype) + pkt[2:]
        if frame.wrap is not None:
            d = host.rx.data_size
            split = min(frame.wrap, len(pkt)) & ~7
            host.advance_to((d - split) % d)
            self.rig.stats["wrapped"] += 1
        host.put_wait(pkt, trailer=frame.trailer, force_signal=frame.force_signal)
        self.rig.messages += 1
        seen = pkt[16 + 8 * frame.extra_offset8 :]
        return tid, seen

    def _request(self, what: object, frame: Frame) -> None:
        host = self.host
        assert host is not None
        if isinstance(what, Dropped):
            self._dropped(what)
            return
        payload, check = self._encode(what, frame.slack8)
        t0 = time.monotonic()
        tid, seen = self._post(payload, frame)
        reply = host.reply(tid)
        self._latency(t0)
        self._expect_echo(seen, reply, isinstance(what, Negotiate))
        check(reply)

    def _negotiate(self, n: Negotiate, frame: Frame, *, count: bool = True) -> None:
        host = self.host
        assert host is not None
        payload, check = self._encode(n)
        tid, seen = self._post(payload, frame)
        if not count:
            self.rig.messages -= 1
        reply = host.reply(tid)
        self._expect_echo(seen, reply, True)
        check(reply)

    def _expect_echo(self, seen: bytes, reply: bytes, negotiate: bool) -> None:
        """The reply is the request as the guest saw it, status and flags set (and a
        negotiation's version fields)."""
        self._expect(len(reply) == len(seen), f"reply of {len(reply)} bytes to {len(seen)}")
        want = bytearray(seen)
        got = bytearray(reply)
        for buf in (want, got):
            buf[icmsg.STATUS_OFFSET : icmsg.STATUS_OFFSET + 4] = bytes(4)
            if negotiate:
                buf[icmsg.ICMSGSIZE_OFFSET : icmsg.ICMSGSIZE_OFFSET + 2] = bytes(2)
                buf[HDR : HDR + 4] = bytes(4)
                buf[HDR + 8 : HDR + 16] = bytes(8)
        self._expect(reply[icmsg.ICFLAGS_OFFSET] == RESPONSE_FLAGS, "reply icflags")
        got[icmsg.ICFLAGS_OFFSET] = want[icmsg.ICFLAGS_OFFSET]
        self._expect(got == want, "the reply does not echo the request")

    def _latency(self, t0: float) -> None:
        ms = round((time.monotonic() - t0) * 1000)
        self.rig.stats["max_reply_ms"] = max(self.rig.stats["max_reply_ms"], ms)

    def _dropped(self, d: Dropped) -> None:
        host = self.host
        assert host is not None
        req = host.ic(icmsg.ICMSGTYPE_FCOPY, sim_fcopy.encode_complete())
        if d.kind == "type":
            self._post(req, Frame(), ptype=OTHER_TYPE)
        elif d.kind == "response":
            flagged = bytearray(req)
            flagged[icmsg.ICFLAGS_OFFSET] = RESPONSE_FLAGS
            self._post(bytes(flagged), Frame())
        else:
            self._post(b"short", Frame())
        host.wait_consumed(repr(d))

    # -- ring faults ---------------------------------------------------------------

    def _bad_descriptor(self, b: BadDescriptor) -> None:
        host = self.host
        assert host is not None
        rng = random.Random(b.seed)
        junk = rng.randbytes(8 * rng.randint(1, 30))
        if b.kind == "offset8":
            blob = DESC.pack(INBAND, rng.randint(0, 1), 4, 0, 1) + bytes(16)
        elif b.kind == "len8-short":
            blob = DESC.pack(INBAND, 4, rng.randint(1, 3), 0, 1) + bytes(24)
        elif b.kind == "len8-zero":
            blob = DESC.pack(INBAND, 2, 0, 0, 1) + bytes(8)
        elif b.kind == "len8-long":
            blob = DESC.pack(INBAND, 2, 3 + len(junk) // 8 + rng.randint(1, 0xFF00), 0, 1)
            blob += junk + bytes(8)
        else:
            blob = rng.randbytes(8 * rng.randint(1, 2))  # shorter than descriptor + trailer
        rx = host.rx
        d = rx.data_size
        w = rx.load(W)
        rx.write_data(w, blob)
        rx.store(W, (w + len(blob)) % d)
        self.rig.messages += 1
        host.signal()
        host.wait_consumed(repr(b))
        self.rig.stats["corrupt-dropped"] += 1

    def _bad_value(self, value: str, d: int, current: int) -> int:
        return {
            "dsize": d,
            "beyond": d + 8 * (1 + current % 5),
            "misaligned": (current + 4) % d,
            "huge": 0xFFFFFFF8,
        }[value]

    def _bad_index(self, b: BadIndex) -> None:
        host, sim = self.host, self.sim
        assert host is not None and sim is not None
        ring = host.rx if b.ring.startswith("rx") else host.tx
        field = W if b.ring.endswith("write") else R
        ring.store(field, self._bad_value(b.value, ring.data_size, ring.load(field)))
        self.rig.messages += 1
        if b.ring == "rx-read":
            # The guest's own index: it drops what is readable and resynchronises
            # (hvr_discard), wherever it meets the index (waiting, spinning, in
            # the WRITE fast path); the channel and a running copy go on.
            host.signal()
            deadline = time.monotonic() + GUARD
            while ring.load(R) != ring.load(W):
                try:
                    host.pump(0.002)
                except Closed:
                    raise Violation(
                        f"{b!r}: the daemon reset the channel" + self._context()
                    ) from None
                if time.monotonic() > deadline:
                    raise Violation(f"{b!r}: not resynchronised" + self._context())
            self.rig.stats["rx-read resync"] += 1
            return
        if b.ring == "rx-write":
            host.signal()
        else:
            # The guest meets a corrupt TX index when it answers: this request.
            payload, check = self._encode(b.then)
            _tid, _seen = self._post(payload, Frame())
            # The daemon carries the request out before its answer fails.
            self._apply_unanswered(b.then, check, payload)
        deadline = time.monotonic() + GUARD
        while True:
            try:
                host.pump(0.01)
            except Closed:
                break
            if time.monotonic() > deadline:
                raise Violation(f"{b!r}: the channel was not reset" + self._context())
        self.rig.stats["index resets"] += 1
        self._reset_by_daemon(b)

    def _apply_unanswered(
        self, what: object, check: Callable[[bytes], None], payload: bytes
    ) -> None:
        """Update the model for a request whose reply never arrives."""
        m = self.model
        if isinstance(what, Write) and m.copy is not None and not m.copy.failed:
            return  # the copy is abandoned anyway (its WRITE may not even be done)
        if isinstance(what, Negotiate):
            return
        try:
            check(payload)  # only for the model's side effect; the status is not ours
        except Violation:
            pass

    def _reset_by_daemon(self, why: object) -> None:
        """The daemon closed the channel: it abandons the copy and opens the device again."""
        self._reconnected(repr(why))

    # -- flow control ----------------------------------------------------------------

    def _tx_stall(self, s: TxStall) -> None:
        """Post every request before reading any response; read only when the guest waits."""
        host = self.host
        assert host is not None
        tx = host.tx
        pending: list[tuple[int, bytes, Callable[[bytes], None]]] = []
        todo = list(s.writes)
        got = 0
        blocked = False
        encoded: tuple[int, bytes, Callable[[bytes], None]] | None = None
        deadline = time.monotonic() + GUARD
        while todo or pending:
            if time.monotonic() > deadline:
                raise Violation(f"TX stall: stuck with {len(todo)} to send" + self._context())
            if todo:
                if encoded is None:
                    payload, check = self._encode(todo[0])
                    tid = host.next_tid()
                    encoded = (tid, packet(payload, trans_id=tid), check)
                if host.put(encoded[1]):
                    todo.pop(0)
                    self.rig.messages += 1
                    pending.append((encoded[0], encoded[1][16:], encoded[2]))
                    encoded = None
                    continue
            # Nothing more fits (or nothing left): has the guest stopped for room?
            if not blocked:
                waiting = tx.load(PENDING) != 0 and tx.load(R) != tx.load(W)
                answered_all = (
                    not todo
                    and host.consumed()
                    and self._tx_bytes() >= sum(len(p) + 24 for _, p, _ in pending)
                )
                if not (waiting or answered_all):
                    host.pump(0.002)
                    continue
                blocked = waiting
                if waiting:
                    self.rig.stats["tx-full waits"] += 1
            tid, seen, check = pending.pop(0)
            reply = host.reply(tid)
            got += 1
            self._expect_echo(seen, reply, False)
            check(reply)
            blocked = False
        self.rig.stats["tx-stall replies"] += got

    def _tx_bytes(self) -> int:
        assert self.host is not None
        tx = self.host.tx
        return (tx.load(W) - tx.load(R)) % tx.data_size

    # -- the guest's side ------------------------------------------------------------

    def _plant(self, p: Plant) -> None:
        c = self.model.copy
        if c is None:
            rel = "dest/planted"
        elif p.at_target:
            rel = f"{c.dir}/{c.name.decode()}"
        else:
            rel = f"{c.dir}/beside-{len(self.model.tree)}"
        if rel in self.model.tree:
            return
        with open(os.path.join(self.root, rel), "xb") as f:
            f.write(b"local\n")
        self.model.tree[rel] = Entry("f", Data.of(b"local\n"))

    # -- lifecycle -------------------------------------------------------------------

    def _rescind(self, r: Rescind) -> None:
        sim, host, daemon = self.sim, self.host, self.daemon
        assert sim is not None and host is not None and daemon is not None
        if r.blocked:
            self._until_blocked()
        daemon.log.poll()
        before = daemon.log.count("waiting for the device")
        sim.rescind()
        self.rig.messages += 1
        self._expect(
            daemon.log.wait_count("waiting for the device", before + 1, GUARD),
            "rescind: the daemon did not notice",
        )
        sim.offer()
        self._reconnected("re-offer")

    def _until_blocked(self) -> None:
        """WRITEs without reading TX until the guest waits for room (pending_send_sz)."""
        host = self.host
        assert host is not None
        tx = host.tx
        deadline = time.monotonic() + GUARD
        n = 0
        while tx.load(PENDING) == 0 or tx.load(R) == tx.load(W):
            if time.monotonic() > deadline:
                raise Violation("the guest never waited for TX room" + self._context())
            c = self.model.copy
            body, _offset, _data = write_message(
                Write("next", 0, fm.DATA_FRAGMENT, n), c.data.size if c else 0
            )
            n += 1
            if host.put(packet(host.ic(icmsg.ICMSGTYPE_FCOPY, body), trans_id=host.next_tid())):
                self.rig.messages += 1
                # Answered or not, the copy ends with the rescind.
            host.pump(0.002)
        self.rig.stats["rescind while waiting"] += 1

    def _restart(self, signum: int) -> None:
        daemon = self.daemon
        assert daemon is not None
        daemon.proc.send_signal(signum)
        try:
            rc = daemon.proc.wait(GUARD)
        except subprocess.TimeoutExpired:
            rc = None
        daemon.reap()
        if signum == signal.SIGKILL:
            c = self.model.copy
            if c is not None and not c.failed:
                self.model.stale.append(Stale(c.dir, c.name, daemon.pid, c.data))
        else:
            self._expect(rc == 0, f"{signal.Signals(signum).name}: exit status {rc}")
            self._check_log()
        self.model.abort()
        self._spawn()

    # -- checks ----------------------------------------------------------------------

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise Violation(what + self._context())

    def _context(self) -> str:
        lines = self.daemon.log.lines[-25:] if self.daemon is not None else []
        c = self.model.copy
        copy = (
            "none" if c is None else f"{c.dir}/{c.name!r} size {c.data.size} failed {c.failed:#x}"
        )
        return (
            f"\n  model: copy {copy}, opens {self.opens}, stale {len(self.model.stale)}"
            f", variant {self.sim.variant.name if self.sim else '-'}"
            "\n  steps (last):\n    "
            + "\n    ".join(self.history[-20:])
            + "\n  daemon log (last lines):\n    "
            + "\n    ".join(lines)
        )

    def check(self) -> None:
        sim, host, daemon = self.sim, self.host, self.daemon
        assert sim is not None and host is not None and daemon is not None
        self._expect(daemon.proc.poll() is None, f"the daemon exited: {daemon.proc.returncode}")
        host.wait_consumed("check")
        self._expect(self._tx_bytes() == 0, f"{self._tx_bytes()} unsolicited bytes in TX")
        self._expect(
            sim.opens == self.opens, f"device opened {sim.opens} times, model {self.opens}"
        )
        self._expect(sim.bad_irqcontrol == 0, f"{sim.bad_irqcontrol} bad irqcontrol writes")
        # Each daemon writes new_id at most once, and only the file-copy class;
        # one that meets a re-offered device before it is bound may write it.
        self._expect(
            len(sim.new_id_writes) <= self.daemons
            and all(g == sim_uio.FCOPY_CLASS_ID for g in sim.new_id_writes),
            f"new_id writes {sim.new_id_writes} by {self.daemons} daemons",
        )
        self._check_tree()
        self._check_fds()
        self._check_log()

    def _check_log(self) -> None:
        assert self.daemon is not None
        log = self.daemon.log
        log.poll()
        for line in log.lines:
            if "Traceback" in line or "request failed" in line or line[:3] in ("<0>", "<1>", "<2>"):
                raise Violation(f"log line {line!r}" + self._context())

    def _check_fds(self) -> None:
        daemon, c = self.daemon, self.model.copy
        assert daemon is not None
        fds = daemon.fds()
        kinds = _kinds(fds)
        self._expect(kinds == self.channel, f"channel descriptors {kinds}, at open {self.channel}")
        others = [t for t in fds if not _channel_fd(t)]
        want = list(self.baseline)
        if c is not None and not c.failed:
            temps = [t for t in others if TEMP_RE.fullmatch(os.fsencode(os.path.basename(t)))]
            want += [os.path.join(self.root, c.dir), *temps]
            self._expect(len(temps) == 1, f"temporary file descriptors {temps}")
        self._expect(sorted(others) == sorted(want), f"descriptors {others}, model {want}")

    def _check_tree(self) -> None:
        """Every entry of the example tree but sim/ against the model."""
        m = self.model
        seen: dict[str, os.stat_result] = {}
        temps: list[tuple[str, bytes, os.stat_result]] = []
        stack = [""]
        while stack:
            rel = stack.pop()
            with os.scandir(os.path.join(self.root, rel)) as it:
                for e in it:
                    sub = f"{rel}/{e.name}" if rel else e.name
                    if sub == "sim":
                        continue
                    st_ = e.stat(follow_symlinks=False)
                    if TEMP_RE.fullmatch(os.fsencode(e.name)) and stat.S_ISREG(st_.st_mode):
                        temps.append((rel, os.fsencode(e.name), st_))
                        continue
                    seen[sub] = st_
                    if stat.S_ISDIR(st_.st_mode):
                        stack.append(sub)
        extra = sorted(set(seen) - set(m.tree))
        missing = sorted(set(m.tree) - set(seen))
        self._expect(not extra and not missing, f"tree: extra {extra[:5]}, missing {missing[:5]}")
        for rel, entry in m.tree.items():
            st_ = seen[rel]
            path = os.path.join(self.root, rel)
            if entry.kind == "d":
                self._expect(stat.S_ISDIR(st_.st_mode), f"{rel} is not a directory")
            elif entry.kind == "l":
                self._expect(
                    stat.S_ISLNK(st_.st_mode) and os.readlink(path) == entry.target,
                    f"{rel} is not the symlink to {entry.target}",
                )
            else:
                self._expect(stat.S_ISREG(st_.st_mode), f"{rel} is not a regular file")
                assert entry.data is not None
                self._check_content(rel, path, st_, entry.data)
        # Temporary files: the running copy's, and those of killed daemons.
        want: list[tuple[str, bytes, int, Data]] = [(s.dir, s.name, s.pid, s.data) for s in m.stale]
        c = m.copy
        if c is not None and not c.failed:
            assert self.daemon is not None
            want.append((c.dir, c.name, self.daemon.pid, c.data))
        self._expect(
            len(temps) == len(want),
            f"temporary files {[(d, n) for d, n, _ in temps]}, model {[(d, n) for d, n, _, _ in want]}",
        )
        for d, n, pid, data in want:
            match = [
                t
                for t in temps
                if t[0] == d
                and int(TEMP_RE.fullmatch(t[1]).group(2)) == pid  # type: ignore[union-attr]
                and n.startswith(TEMP_RE.fullmatch(t[1]).group(1)[:100])  # type: ignore[union-attr]
            ]
            self._expect(len(match) == 1, f"temporary file of {d}/{n!r} (pid {pid}): {match}")
            rel = f"{d}/{match[0][1].decode(errors='surrogateescape')}"
            self._check_content(
                rel, os.path.join(self.root, d, os.fsdecode(match[0][1])), match[0][2], data
            )

    def _check_content(self, rel: str, path: str, st_: os.stat_result, data: Data) -> None:
        # Unchanged file, unchanged model: no need to read it again.
        key = (st_.st_ino, st_.st_size, st_.st_ctime_ns, id(data), len(data.writes))
        self._expect(st_.st_size == data.size, f"{rel}: {st_.st_size} bytes, model {data.size}")
        if self._verified.get(path) == key:
            return
        with open(path, "rb") as f:
            if data.size <= WHOLE:
                same = f.read() == data.span(0, data.size)
            else:
                same = True
                for off, chunk in data.writes:
                    f.seek(off)
                    same = same and f.read(len(chunk)) == data.span(off, len(chunk))
        self._expect(same, f"{rel}: content differs from what the host wrote")
        self._verified[path] = key
        self.rig.stats["content checks"] += 1


class EventfulUioFuzz(UioFuzz):
    """UioFuzz with rescinds, restarts and channel resets five times as often."""

    @rule(step=steps(lifecycle=20))
    def step(self, step: object) -> None:
        self.run_step(step)


@contextlib.contextmanager
def rig() -> Iterator[UioRig]:
    top = tempfile.mkdtemp(prefix="uiofuzz-")
    try:
        yield UioRig(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)
