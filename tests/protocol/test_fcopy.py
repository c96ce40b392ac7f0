# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.protocol.fcopy and the simulated kernel's message building: golden bytes."""

from __future__ import annotations

import struct

import pytest

from hvdaemons.errors import ProtocolError
from hvdaemons.protocol import fcopy as P
from hvdaemons.protocol.status import HvStatus
from hvsim.fcopy import FcopyKernel, kernel_start, utf16s_to_utf8s
from hvsim.protocol import fcopy as sim_fcopy


def field(raw: bytes) -> bytes:
    return raw + bytes(520 - len(raw))


def golden_start(file_field: bytes, path_field: bytes, flags: int, size: int) -> bytes:
    # struct hv_start_fcopy (include/uapi/linux/hyperv.h): hdr 0..36, file_name 36, path_name 556, copy_flags 1076, file_size 1080
    return (
        struct.pack("<I", 0)
        + bytes(32)
        + field(file_field)
        + field(path_field)
        + struct.pack("<IQ", flags, size)
    )


def test_layout_and_constants_match_the_kernel_header() -> None:
    assert (P.START_SIZE, P.WRITE_SIZE, P.HDR_SIZE) == (1088, 6196, 36)
    assert (P.W_MAX_PATH, P.DATA_FRAGMENT) == (260, 6144)
    assert (P.OVER_WRITE, P.CREATE_PATH) == (1, 2)
    assert [int(op) for op in P.FcopyOp] == [0, 1, 2, 3]
    # The statuses a file copy reports (hv_fcopy_daemon.c: hv_start_fcopy() and friends).
    statuses = (
        HvStatus.S_OK,
        HvStatus.E_FAIL,
        HvStatus.ERROR_ALREADY_EXISTS,
        HvStatus.ERROR_DISK_FULL,
    )
    assert statuses == (0, 0x80004005, 0x80070050, 0x80070070)
    assert P.FCOPY_CURRENT_VERSION == 1


def test_kernel_start_golden_bytes_decode() -> None:
    msg = golden_start("Grüße.txt".encode(), b"/tmp/in", 3, 0x1_0000_0002)
    assert sim_fcopy.encode_start("Grüße.txt", "/tmp/in", 3, 0x1_0000_0002, utf16=False) == msg
    req = P.decode_message(msg, utf16=False)
    assert req == P.StartCopy("Grüße.txt", "/tmp/in", 3, 0x1_0000_0002)
    assert isinstance(req, P.StartCopy) and req.overwrite and req.create_path


def test_host_start_golden_bytes_decode() -> None:
    msg = golden_start("日本.txt".encode("utf-16-le"), "/home/ü".encode("utf-16-le"), 0, 5)
    assert sim_fcopy.encode_start("日本.txt", "/home/ü", 0, 5, utf16=True) == msg
    req = P.decode_message(msg, utf16=True)
    assert req == P.StartCopy("日本.txt", "/home/ü", 0, 5)
    assert isinstance(req, P.StartCopy) and not req.overwrite and not req.create_path


NAMES = [
    "plain.txt",
    "Ελληνικά.txt",
    "русский файл.doc",
    "中文文件名.txt",
    "العربية.pdf",
    "עברית",
    "हिन्दी.txt",
    "e\u0301-combining",
    "😀 emoji 🚀.bin",  # astral plane: UTF-16 surrogate pairs
    "\U0001d518\U0001d52b\U0001d526-𠜎",  # Fraktur, CJK ext. B,
]


@pytest.mark.parametrize("name", NAMES)
def test_names_in_many_scripts_decode_in_both_forms(name: str) -> None:
    # The expected bytes: the struct layout filled by the codecs, not by the
    # code under test (the host writes UTF-16LE, the legacy kernel UTF-8).
    path = "/dir/" + name
    host = golden_start(name.encode("utf-16-le"), path.encode("utf-16-le"), 0, 0)
    kernel = golden_start(name.encode(), path.encode(), 0, 0)
    assert sim_fcopy.encode_start(name, path, 0, 0, utf16=True) == host
    assert sim_fcopy.encode_start(name, path, 0, 0, utf16=False) == kernel
    assert P.decode_message(host, utf16=True) == P.StartCopy(name, path)
    assert P.decode_message(kernel, utf16=False) == P.StartCopy(name, path)
    # What the legacy kernel makes of the host's message is the UTF-8 form.
    assert kernel_start(host) == kernel


def test_name_units_written_out() -> None:
    # "e" U+0301 and U+1F680 (surrogates D83D DE80) in both forms, byte by byte.
    host = golden_start(bytes.fromhex("6500 0103 3dd8 80de"), b"/\0", 1, 9)
    kernel = golden_start(bytes.fromhex("65 cc81 f09f9a80"), b"/", 1, 9)
    assert P.decode_message(host, utf16=True) == P.StartCopy("e\u0301\U0001f680", "/", 1, 9)
    assert P.decode_message(kernel, utf16=False) == P.StartCopy("e\u0301\U0001f680", "/", 1, 9)
    assert kernel_start(host) == kernel


def test_surrogate_pair_bytes() -> None:
    raw = b"\x3d\xd8\x00\xde" + "!".encode("utf-16-le")  # U+1F600 as D83D DE00
    assert P.decode_utf16_name(field(raw), "file_name") == "\U0001f600!"


@pytest.mark.parametrize(
    "units",
    [
        [0xD83D, ord("a")],  # high surrogate followed by a normal unit
        [ord("a"), 0xDE00],  # low surrogate alone
        [0xDE00, 0xD83D],  # pair in the wrong order
        [ord("a"), 0xD83D],  # high surrogate at the end
    ],
)
def test_lone_surrogates_are_refused(units: list[int]) -> None:
    raw = struct.pack(f"<{len(units)}H", *units)
    msg = sim_fcopy.encode_start(raw, "/tmp", utf16=True)
    with pytest.raises(P.FcopyDecodeError, match="file_name is not valid UTF-16"):
        P.decode_message(msg, utf16=True)
    msg = sim_fcopy.encode_start("ok", raw, utf16=True)
    with pytest.raises(P.FcopyDecodeError, match="path_name is not valid UTF-16"):
        P.decode_message(msg, utf16=True)


def test_invalid_utf8_from_the_kernel_form_is_refused() -> None:
    msg = sim_fcopy.encode_start(b"\xff\xfe.txt", b"/tmp", utf16=False)
    with pytest.raises(P.FcopyDecodeError, match="file_name is not valid UTF-8"):
        P.decode_message(msg, utf16=False)


def test_names_stop_at_nul_and_unterminated_fields_are_taken_whole() -> None:
    assert P.decode_utf8_name(b"abc\0junk\xff", "x") == "abc"
    assert P.decode_utf16_name("ab".encode("utf-16-le") + b"\0\0" + b"\x00\xd8", "x") == "ab"
    full = ("x" * 260).encode("utf-16-le")
    assert P.decode_utf16_name(full, "x") == "x" * 260


def test_write_golden_bytes_and_validation() -> None:
    data = bytes(range(256)) * 3
    msg = sim_fcopy.encode_write(0x1_2345_6789, data)
    golden = (
        struct.pack("<I", 1)
        + bytes(32)
        + bytes(4)
        + struct.pack("<QI", 0x1_2345_6789, 768)
        + data
        + bytes(6144 - 768)
    )
    assert msg == golden and len(msg) == 6196
    assert P.decode_message(msg, utf16=False) == P.WriteData(0x1_2345_6789, data)
    # uio: the body may be shorter than 6196 if the host sends only what is used.
    assert P.decode_message(msg[: 52 + 768], utf16=True) == P.WriteData(0x1_2345_6789, data)
    with pytest.raises(P.FcopyDecodeError, match="exceeds the 6144-byte fragment"):
        P.decode_message(sim_fcopy.encode_write(0, b"x", size=6145), utf16=False)
    with pytest.raises(P.FcopyDecodeError, match="only 10 arrived"):
        P.decode_message(sim_fcopy.encode_write(0, b"x" * 100)[: 52 + 10], utf16=True)
    with pytest.raises(P.FcopyDecodeError, match="need at least 52"):
        P.decode_message(sim_fcopy.encode_write(0, b"")[:51], utf16=True)


def test_complete_cancel_unknown_and_short() -> None:
    assert sim_fcopy.encode_complete() == struct.pack("<I", 2) + bytes(32)
    assert sim_fcopy.encode_cancel() == struct.pack("<I", 3) + bytes(32)
    # The legacy kernel appends 28 stale bytes; only the op matters.
    assert (
        P.decode_message(sim_fcopy.encode_complete() + b"\xaa" * 28, utf16=False)
        == P.CompleteCopy()
    )
    assert P.decode_message(sim_fcopy.encode_cancel(), utf16=False) == P.CancelCopy()
    with pytest.raises(P.UnknownOperation, match="Unknown operation: 9") as e:
        P.decode_message(struct.pack("<I", 9) + bytes(32), utf16=False)
    assert e.value.op == 9
    with pytest.raises(P.FcopyDecodeError, match="no operation"):
        P.decode_message(b"\0\0", utf16=False)
    with pytest.raises(P.FcopyDecodeError, match="START_FILE_COPY of 100 bytes"):
        P.decode_message(sim_fcopy.encode_start("a", "/", utf16=False)[:100], utf16=False)


def test_status_replies() -> None:
    assert P.encode_status_reply(HvStatus.ERROR_DISK_FULL) == b"\x70\x00\x07\x80"
    assert sim_fcopy.decode_status_reply(b"\x05\x40\x00\x80") == HvStatus.E_FAIL
    assert P.encode_status_reply(-2147467259) == P.encode_status_reply(
        HvStatus.E_FAIL
    )  # the C int's view


# -- the simulated kernel (hv_fcopy.c) ----------------------------------------------


def test_kernel_utf16_conversion_drops_what_the_kernel_drops() -> None:
    units = [ord("a"), 0xD83D, ord("b"), 0xDE00, ord("c"), 0xD83D, 0xDE00, 0]
    raw = struct.pack(f"<{len(units)}H", *units)
    assert utf16s_to_utf8s(raw, 259) == b"abc" + "😀".encode()
    # No room for a 4-byte sequence: skipped, and a later 1-byte char still fits.
    raw = ("x" * 257 + "😀y").encode("utf-16-le")
    assert utf16s_to_utf8s(raw, 259) == b"x" * 257 + b"y"
    assert len(utf16s_to_utf8s(("é" * 200).encode("utf-16-le"), 259)) == 258


def test_kernel_delivers_what_hv_fcopy_c_delivers() -> None:
    k = FcopyKernel()
    start = k.to_daemon(sim_fcopy.encode_start("ü.txt", "/tmp", 2, 7, utf16=True))
    assert start == sim_fcopy.encode_start("ü.txt", "/tmp", 2, 7, utf16=False)
    write = sim_fcopy.encode_write(0, b"y" * 100)
    assert k.to_daemon(write) == write
    done = k.to_daemon(sim_fcopy.encode_complete())
    assert done is not None and len(done) == 36 + 28
    assert done[:36] == sim_fcopy.encode_complete()
    # The 28 stale bytes are what the receive buffer held: the previous WRITE.
    assert done[36:] == write[36:64]
    assert k.to_daemon(b"\x02\0\0\0") is None  # too short: the kernel drops it


# -- boundaries and texts (mutation survivors, tests/mutation/run.py) -----------------------


def test_operation_needs_exactly_four_bytes() -> None:
    assert P.decode_operation(b"\x02\x00\x00\x00") == 2
    assert P.decode_message(b"\x03\x00\x00\x00", utf16=True) == P.CancelCopy()
    with pytest.raises(P.FcopyDecodeError, match=r"^message of 3 bytes has no operation$"):
        P.decode_operation(b"\x02\x00\x00")


def test_utf8_name_nul_first_and_last() -> None:
    assert P.decode_utf8_name(b"\0abc", "x") == ""
    assert P.decode_utf8_name(b"abc\0", "x") == "abc"


def test_utf16_name_of_odd_length() -> None:
    # A trailing half code unit is not part of the name (and is never read as one).
    assert P.decode_utf16_name(b"a\0b\0x", "x") == "ab"
    assert P.decode_utf16_name(b"a\0b\0\0", "x") == "ab"
    assert P.decode_utf16_name(b"\0\0a\0", "x") == ""


def test_utf16_and_utf8_error_texts_name_the_position() -> None:
    raw = struct.pack("<4H", ord("a"), ord("b"), ord("c"), 0xDE00)
    with pytest.raises(
        P.FcopyDecodeError,
        match=r"^file_name is not valid UTF-16 \(illegal encoding at code unit 3\)$",
    ):
        P.decode_utf16_name(field(raw), "file_name")
    with pytest.raises(
        P.FcopyDecodeError, match=r"^path_name is not valid UTF-8 \(invalid start byte at byte 2\)$"
    ):
        P.decode_utf8_name(field(b"ab\xff"), "path_name")


def test_unterminated_file_name_ends_at_its_520_byte_field() -> None:
    msg = golden_start(("x" * 260).encode("utf-16-le"), "/tmp".encode("utf-16-le"), 0, 1)
    assert P.decode_message(msg, utf16=True) == P.StartCopy("x" * 260, "/tmp", 0, 1)
    msg = golden_start(b"y" * 520, b"/tmp", 0, 1)
    assert P.decode_message(msg, utf16=False) == P.StartCopy("y" * 520, "/tmp", 0, 1)


def test_write_beyond_the_largest_file_offset_text() -> None:
    msg = sim_fcopy.encode_write((1 << 63) - 10, b"0123456789")
    with pytest.raises(
        P.FcopyDecodeError,
        match=r"^WRITE_TO_FILE of 10 bytes at offset 9223372036854775798"
        r" is beyond the largest file offset$",
    ):
        P.decode_message(msg, utf16=False)
    assert P.decode_message(sim_fcopy.encode_write((1 << 63) - 11, b"0123456789"), utf16=False) == (
        P.WriteData((1 << 63) - 11, b"0123456789")
    )


def test_legacy_registration_reply() -> None:
    # The kernel answers the daemon's int with its own version (hv_fcopy.c, fcopy_handle_handshake()).
    assert P.encode_registration() == b"\x01\x00\x00\x00"
    assert P.decode_registration_reply(b"\x01\x00\x00\x00") == 1
    assert P.decode_registration_reply(b"\x02\x01\x00\x00") == 0x102
    for bad in (b"", b"\x01\x00\x00", b"\x01\x00\x00\x00\x00"):
        with pytest.raises(ProtocolError, match=r"^invalid version negotiation$"):
            P.decode_registration_reply(bad)
