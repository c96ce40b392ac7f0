# SPDX-License-Identifier: GPL-2.0-only
"""One table of WRITE_TO_FILE messages through every WRITE validator.

A WRITE is checked in three places: the Python decoder behind both
transports' dispatch (hvdaemons.protocol.fcopy), the char device's C pump
(bindings/fcopy.c through _ffi.FcopyPump) and the uio ring's C fast path
(bindings/ring.c through _ffi.Ring.fcopy_writes).  Every message below goes
through all three, which must agree with each other and with the verdict
written next to it.  Messages and verdicts are written from the kernel's
layout (<linux/hyperv.h>), not by the code under test:

    struct hv_fcopy_hdr  { u32 operation; guid service_id0, service_id1; }  36 bytes
    struct hv_do_fcopy   { struct hv_fcopy_hdr hdr; u32 pad;
                           u64 offset;   at 40
                           u32 size;     at 48
                           u8 data[6144]; at 52 }                              6196 bytes
    WRITE_TO_FILE = 1, DATA_FRAGMENT = 6144; a file offset (loff_t) ends at 2**63 - 1.

On the ring a body follows the 16-byte packet descriptor and the 28 bytes of
IC headers (struct vmbuspipe_hdr + struct icmsg_hdr), and packets are padded
to 8 bytes: every body here is 4 (mod 8) bytes long, so no padding is added
and all three validators see the same bytes.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hvdaemons import _ffi
from hvdaemons.protocol import fcopy as P

OP_START, OP_WRITE, OP_COMPLETE = 0, 1, 2
FRAGMENT = 6144
DATA_AT = 52  # offsetof(struct hv_do_fcopy, data)
FULL = 6196  # sizeof(struct hv_do_fcopy)
LAST_OFFSET = (1 << 63) - 1
RING_HEADERS = 16 + 28  # vmpacket_descriptor + vmbuspipe_hdr + icmsg_hdr


def pattern(n: int, seed: int) -> bytes:
    """n distinct-looking non-zero bytes (a misplaced write cannot read as zeros)."""
    return bytes((seed + 7 * i) % 255 + 1 for i in range(n))


def write_msg(
    offset: int, size: int, data: bytes = b"", *, length: int = FULL, op: int = OP_WRITE
) -> bytes:
    """A struct hv_do_fcopy with these fields, data at 52, zero-filled or cut to length."""
    msg = struct.pack("<I32sIQI", op, bytes(32), 0, offset, size) + data
    return (msg + bytes(max(0, length - len(msg))))[:length]


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    # (offset, data) the WRITE must put in the file, or None: not a WRITE to serve.
    verdict: tuple[int, bytes] | None


def accept(name: str, offset: int, data: bytes, **kw: int) -> Case:
    return Case(name, write_msg(offset, len(data), data, **kw), (offset, data))


def refuse(name: str, body: bytes) -> Case:
    return Case(name, body, None)


CASES = [
    accept("a full fragment", 0, pattern(FRAGMENT, 1)),
    accept("a few bytes in a full-size message", 12345, b"hello"),
    accept("above 4 GiB", (1 << 32) + 7, pattern(100, 2)),
    accept("no data, the header alone", 0, b"", length=DATA_AT),
    accept("data filling a short message exactly", 8, pattern(96, 3), length=DATA_AT + 96),
    accept("the last byte at the largest file offset", LAST_OFFSET - 6, b"ending"),
    accept("no data at the largest file offset", LAST_OFFSET, b""),
    refuse("one byte beyond the largest file offset", write_msg(LAST_OFFSET - 5, 6, b"ending")),
    refuse("an offset of 2**63", write_msg(1 << 63, 1, b"x")),
    refuse("offset + size wrapping past 2**64", write_msg((1 << 64) - 1, 1, b"x")),
    refuse(
        "size one over the fragment, all of it present",
        write_msg(0, FRAGMENT + 1, pattern(FRAGMENT + 1, 4), length=DATA_AT + FRAGMENT + 8),
    ),
    refuse("size 0xffffffff", write_msg(0, 0xFFFFFFFF)),
    refuse("size one beyond what arrived", write_msg(8, 97, pattern(96, 5), length=DATA_AT + 96)),
    refuse("short: the size field cut off", write_msg(0, 0, length=44)),
    refuse("short: only the hv_fcopy_hdr", write_msg(0, 0, length=36)),
    refuse("short: only the operation", write_msg(0, 0, length=4)),
    refuse("COMPLETE_FCOPY laid out as a WRITE", write_msg(0, 5, b"hello", op=OP_COMPLETE)),
    refuse("START_FILE_COPY laid out as a WRITE", write_msg(0, 5, b"hello", op=OP_START)),
    refuse("WRITE_TO_FILE in the low byte only", write_msg(0, 5, b"hello", op=0x101)),
]


def test_every_body_reaches_the_ring_unpadded() -> None:
    assert all((RING_HEADERS + len(c.body)) % 8 == 0 for c in CASES)
    assert len({c.name for c in CASES}) == len(CASES)


# -- the three validators -------------------------------------------------------------

Verdict = object  # (offset, data) served, None not served, "served" for a surprise


def written(file_fd: int, expected: tuple[int, bytes] | None) -> Verdict:
    """What a served WRITE left in the (fresh) file, seen from where it was due."""
    if expected is None:
        return "served"
    offset, data = expected
    end = os.fstat(file_fd).st_size
    if data and end != offset + len(data):
        return ("file ends at", end)
    return offset, os.pread(file_fd, len(data), offset)


def python_decoder(case: Case, file_fd: int) -> Verdict:
    try:
        msg = P.decode_message(case.body, utf16=True)
    except P.FcopyDecodeError:
        return None
    return (msg.offset, msg.data) if isinstance(msg, P.WriteData) else None


COMPLETE = struct.pack("<I32s", OP_COMPLETE, bytes(32))  # never served by the pump


def chardev_pump(case: Case, file_fd: int) -> Verdict:
    dev, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    wake_r, wake_w = os.pipe()
    try:
        kernel.send(case.body)
        kernel.send(COMPLETE)  # the pump serves WRITEs until the first other message
        handed_back = _ffi.FcopyPump(16384).run(dev.fileno(), file_fd, wake_r)
        kernel.setblocking(False)
        replies = []
        while True:
            try:
                replies.append(kernel.recv(64))
            except BlockingIOError:
                break
        if handed_back == case.body:
            assert replies == []  # not answered: the daemon's Python does that
            return None
        assert handed_back == COMPLETE and replies == [struct.pack("<i", 0)]
        return written(file_fd, case.verdict)
    finally:
        for fd in (wake_r, wake_w):
            os.close(fd)
        dev.close()
        kernel.close()


def ic_request(body: bytes) -> bytes:
    """vmbuspipe_hdr (flags 1, msgsize) + icmsg_hdr (framework 3.0, FCOPY = 7, version 1.1,
    icmsgsize, status 0, transaction 9, TRANSACTION|REQUEST) + body, as Hyper-V sends it."""
    return (
        struct.pack("<IIHHHHHHIBBH", 1, len(body) + 20, 3, 0, 7, 1, 1, len(body), 0, 9, 3, 0) + body
    )


@pytest.fixture
def rings() -> Iterator[tuple[_ffi.Ring, _ffi.Ring]]:
    m = mmap.mmap(-1, 2 * 0x5000)
    tx = _ffi.Ring(m, 0, 0x5000, 4096)
    rx = _ffi.Ring(m, 0x5000, 0x5000, 4096)
    tx.reset()
    rx.reset(0x4000 - 64)  # the request wraps around the end of the ring
    yield tx, rx
    tx.close()
    rx.close()
    m.close()


def uio_ring(case: Case, file_fd: int, tx: _ffi.Ring, rx: _ffi.Ring) -> Verdict:
    irq_r, irq_w = os.pipe()
    try:
        request = ic_request(case.body)
        rx.send(request, 0x1234)
        served, state = rx.fcopy_writes(tx, irq_w, file_fd, 0)
        if served == 0:
            assert state == _ffi.FAST_OTHER
            assert tx.readable() == 0  # not answered: the daemon's Python does that
            return None
        assert (served, state) == (1, _ffi.FAST_IDLE)
        reply = tx.recv()
        assert reply is not None
        # The request echoed: trans_id; status 0, transaction id, icflags TRANSACTION|RESPONSE.
        assert struct.unpack_from("<Q", reply[0], 8)[0] == 0x1234
        assert struct.unpack_from("<IBB", reply[0], 16 + 20) == (0, 9, 5)
        return written(file_fd, case.verdict)
    finally:
        os.close(irq_r)
        os.close(irq_w)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_validator_gives_the_kernel_layouts_verdict(
    case: Case, rings: tuple[_ffi.Ring, _ffi.Ring]
) -> None:
    verdicts = {}
    for name, validator in [
        ("python decoder", python_decoder),
        ("chardev pump", chardev_pump),
        ("uio ring", lambda c, fd: uio_ring(c, fd, *rings)),
    ]:
        # A fresh file each: tmpfs, so a write that ends at 2**63 - 1 is possible.
        file_fd = os.memfd_create("write-target")
        try:
            verdicts[name] = validator(case, file_fd)
        finally:
            os.close(file_fd)
    expected = case.verdict
    assert verdicts == {name: expected for name in verdicts}
