# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.protocol.kvp: every message, against hand-built golden bytes.

The golden messages are assembled here with the literal offsets of struct
hv_kvp_msg (include/uapi/linux/hyperv.h, pinned in tests/test_abi.py),
independently of the module's own offset table.
"""

from __future__ import annotations

import struct

import pytest

from hvdaemons.errors import ProtocolError
from hvdaemons.protocol import kvp
from hvdaemons.protocol.status import HvStatus, describe
from hvsim.protocol import kvp as sim_kvp

SIZE = 7432


def golden(*fields: tuple[int, bytes]) -> bytes:
    msg = bytearray(SIZE)
    for off, data in fields:
        msg[off : off + len(data)] = data
    return bytes(msg)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def test_constants_and_enums() -> None:
    assert kvp.KVP_MSG_SIZE == SIZE
    assert (kvp.MAX_KEY_SIZE, kvp.MAX_VALUE_SIZE, kvp.RECORD_SIZE) == (512, 2048, 2560)
    assert [int(op) for op in kvp.KvpOp] == [0, 1, 2, 3, 4, 5, 100]
    assert [int(p) for p in kvp.KvpPool] == [0, 1, 2, 3, 4]
    assert (sim_kvp.RegType.SZ, sim_kvp.RegType.U32, sim_kvp.RegType.U64) == (1, 4, 8)
    assert (kvp.ADDR_FAMILY_IPV4, kvp.ADDR_FAMILY_IPV6) == (1, 2)


def test_status_codes() -> None:
    assert {s.name: int(s) for s in HvStatus} == {
        "S_OK": 0,
        "E_FAIL": 0x80004005,
        "S_CONT": 0x80070103,
        "ERROR_NOT_SUPPORTED": 0x80070032,
        "ERROR_MACHINE_LOCKED": 0x800704F7,
        "ERROR_DEVICE_NOT_CONNECTED": 0x8007048F,
        "INVALIDARG": 0x80070057,
        "GUID_NOTFOUND": 0x80041002,
        "ERROR_ALREADY_EXISTS": 0x80070050,
        "ERROR_DISK_FULL": 0x80070070,
    }
    assert describe(HvStatus.S_CONT) == "S_CONT (0x80070103)"
    assert describe(0x12345678) == "0x12345678"


# -- kernel -> daemon --------------------------------------------------------------------


def test_registration_messages() -> None:
    assert kvp.encode_registration() == golden((0, b"\x64"))
    assert sim_kvp.encode_registration_reply() == golden((0, b"\x64"), (4, b"3.1\0"))
    req = kvp.decode_request(sim_kvp.encode_registration_reply())
    assert req == kvp.RegisterReply(100, b"3.1")


def test_kernel_get() -> None:
    # value_size and value_type stay 0: hv_kvp.c fills only the key.
    assert sim_kvp.encode_get_request(3, "VirtualMachineName") == golden(
        (0, b"\x00\x03"), (8, u32(19)), (16, b"VirtualMachineName")
    )
    req = kvp.decode_request(sim_kvp.encode_get_request(3, "VirtualMachineName"))
    assert req == kvp.GetRequest(pool=3, key=b"VirtualMachineName", key_size=19, value_size=0)


def test_kernel_set_string() -> None:
    msg = sim_kvp.encode_set_request(0, "clé", "värde ✓")
    key, value = "clé".encode(), "värde ✓".encode()
    assert msg == golden(
        (0, b"\x01\x00"),
        (8, u32(len(key) + 1)),
        (12, u32(len(value) + 1)),
        (16, key),
        (528, value),
    )
    assert kvp.decode_request(msg) == kvp.SetRequest(
        pool=0, key=key, value=value, key_size=len(key) + 1, value_size=len(value) + 1, value_type=0
    )


def test_kernel_set_numbers_are_unsigned_decimal_text() -> None:
    assert sim_kvp.encode_set_request(1, "n", 4_000_000_000, sim_kvp.RegType.U32) == golden(
        (0, b"\x01\x01"), (8, u32(2)), (12, u32(11)), (16, b"n"), (528, b"4000000000")
    )
    assert sim_kvp.encode_set_request(1, "n", -1, sim_kvp.RegType.U32)[528:539] == b"4294967295\0"
    big = sim_kvp.encode_set_request(1, "n", 2**64 - 1, sim_kvp.RegType.U64)
    assert big[12:16] == u32(21) and big[528:549] == b"18446744073709551615\0"


def test_kernel_set_other_type_has_no_value() -> None:
    # REG_BINARY (3) and the like: the kernel leaves value and value_size 0.
    assert sim_kvp.encode_set_request(0, "k", "ignored", 3) == golden(
        (0, b"\x01"), (8, u32(2)), (16, b"k")
    )


def test_kernel_delete_and_enumerate() -> None:
    assert sim_kvp.encode_delete_request(4, "gone") == golden(
        (0, b"\x02\x04"), (4, u32(5)), (8, b"gone")
    )
    assert kvp.decode_request(sim_kvp.encode_delete_request(4, "gone")) == kvp.DeleteRequest(
        4, b"gone", 5
    )
    assert sim_kvp.encode_enumerate_request(2, 7) == golden((0, b"\x03\x02"), (4, u32(7)))
    assert kvp.decode_request(
        sim_kvp.encode_enumerate_request(1, 0xFFFFFFFF)
    ) == kvp.EnumerateRequest(1, 0xFFFFFFFF)


def test_kernel_ip_messages() -> None:
    assert sim_kvp.encode_get_ip_info_request("00:15:5D:01:02:03", 2) == golden(
        (0, b"\x04"), (4, b"00:15:5D:01:02:03"), (260, b"\x02")
    )
    assert kvp.decode_request(
        sim_kvp.encode_get_ip_info_request("00:15:5D:01:02:03", 2)
    ) == kvp.GetIpInfoRequest("00:15:5D:01:02:03", 2)
    value = kvp.IpValue(
        adapter_id="{f8615163-df3e-46c5-913f-f2d2f965ed0e}",
        addr_family=1,
        dhcp_enabled=True,
        ip_addr="10.0.0.5;10.0.0.6",
        sub_net="255.255.255.0;255.255.0.0",
        gate_way="10.0.0.1",
        dns_addr="10.0.0.2;10.0.0.3",
    )
    msg = sim_kvp.encode_set_ip_info_request(value)
    assert msg == golden(
        (0, b"\x05"),
        (4, b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}"),
        (260, b"\x01\x01"),
        (262, b"10.0.0.5;10.0.0.6"),
        (2310, b"255.255.255.0;255.255.0.0"),
        (4358, b"10.0.0.1"),
        (5382, b"10.0.0.2;10.0.0.3"),
    )
    assert kvp.decode_request(msg) == kvp.SetIpInfoRequest(value)


def test_kernel_utf16_to_utf8_rules() -> None:
    conv = sim_kvp.utf16_to_kernel_utf8
    assert conv("ab\0cd", 100) == b"ab"  # stops at the first NUL
    assert conv("a\ud800b", 100) == b"ab"  # lone surrogates are dropped
    assert conv("😀x", 100) == "😀x".encode()
    # A character that no longer fits is skipped; a later ASCII one still fits.
    assert conv("ab€c", 3) == b"abc"
    assert conv("abcd", 3) == b"abc"
    long_key = sim_kvp.encode_get_request(0, "k" * 600)
    assert long_key[8:12] == u32(512) and long_key[16:527] == b"k" * 511 and long_key[527] == 0


def test_decode_key_is_bounded_by_key_size_and_array() -> None:
    msg = bytearray(sim_kvp.encode_get_request(0, "abcdef"))
    msg[8:12] = u32(3)  # not a kernel message: key_size cuts the key
    assert kvp.decode_request(bytes(msg)).key == b"abc"  # type: ignore[union-attr]
    msg[8:12] = u32(100000)
    msg[16:528] = b"x" * 512  # no terminator within the array
    req = kvp.decode_request(bytes(msg))
    assert isinstance(req, kvp.GetRequest) and req.key == b"x" * 512 and req.key_size == 100000


def test_decode_other_and_bad_sizes() -> None:
    assert kvp.decode_request(golden((0, b"\x2a\x01"))) == kvp.OtherRequest(42, 1)
    for n in (0, 4, SIZE - 1, SIZE + 1, 8192):
        with pytest.raises(ProtocolError):
            kvp.decode_request(bytes(n))


# -- daemon -> kernel ----------------------------------------------------------------------


def test_reply_status_overwrites_only_the_header() -> None:
    msg = sim_kvp.encode_set_request(3, "key", "value")
    reply = kvp.encode_status_reply(msg, HvStatus.S_CONT)
    assert reply == u32(0x80070103) + msg[4:]
    assert sim_kvp.decode_status_reply(reply) == HvStatus.S_CONT


def test_reply_status_pads_or_cuts_to_the_message_size() -> None:
    assert kvp.encode_status_reply(b"\x01\x02\x03", HvStatus.E_FAIL) == golden((0, u32(0x80004005)))
    assert len(kvp.encode_status_reply(bytes(9000), 0)) == SIZE


def test_reply_get_writes_where_the_kernel_reads() -> None:
    # Deliberate difference from the reference (docs/protocol.md): the
    # value goes to offset 532 (the ENUMERATE view the kernel reads) and
    # 528-531 are cleared.
    msg = bytearray(sim_kvp.encode_get_request(0, "k"))
    msg[528:532] = b"JUNK"
    reply = kvp.encode_get_reply(bytes(msg), b"the value")
    assert reply == golden((0, u32(0)), (8, u32(2)), (16, b"k"), (532, b"the value"))
    assert sim_kvp.decode_reply(kvp.KvpOp.GET, reply) == sim_kvp.HostReply(0, value="the value")


def test_reply_enumerate_record_copies_both_arrays() -> None:
    key = b"k\0stale".ljust(512, b"\0")
    value = b"v\0old bytes".ljust(2048, b"\xaa")
    reply = kvp.encode_enumerate_record_reply(sim_kvp.encode_enumerate_request(0, 3), key, value)
    assert reply == golden((4, u32(3)), (20, key), (532, value))
    assert sim_kvp.decode_reply(kvp.KvpOp.ENUMERATE, reply) == sim_kvp.HostReply(
        0, key="k", value="v"
    )
    with pytest.raises(ValueError):
        kvp.encode_enumerate_record_reply(sim_kvp.encode_enumerate_request(0, 3), b"short", value)


def test_reply_enumerate_strings_is_strcpy() -> None:
    msg = bytearray(sim_kvp.encode_enumerate_request(2, 9))
    msg[20:2580] = b"\xee" * 2560  # not a kernel message: shows what is left alone
    reply = kvp.encode_enumerate_strings_reply(bytes(msg), b"ProcessorArchitecture", b"x86_64")
    expect = bytearray(msg)
    expect[0:4] = u32(0)
    expect[20:42] = b"ProcessorArchitecture\0"
    expect[532:539] = b"x86_64\0"
    assert reply == bytes(expect)


def test_reply_ip_info() -> None:
    value = kvp.IpValue(
        "00:15:5D:01:02:03",
        3,
        False,
        "10.0.0.5;fe80::1",
        "255.255.255.0;/64",
        "10.0.0.1;",
        "10.0.0.2;",
    )
    reply = kvp.encode_ip_info_reply(
        sim_kvp.encode_get_ip_info_request("00:15:5D:01:02:03"), 0, value
    )
    assert reply == golden(
        (4, b"00:15:5D:01:02:03"),
        (260, b"\x03\x00"),
        (262, b"10.0.0.5;fe80::1"),
        (2310, b"255.255.255.0;/64"),
        (4358, b"10.0.0.1;"),
        (5382, b"10.0.0.2;"),
    )
    assert sim_kvp.decode_reply(kvp.KvpOp.GET_IP_INFO, reply) == sim_kvp.HostReply(0, ip=value)
    failed = kvp.encode_ip_info_reply(
        sim_kvp.encode_get_ip_info_request("X"), HvStatus.E_FAIL, None
    )
    assert failed == u32(0x80004005) + sim_kvp.encode_get_ip_info_request("X")[4:]


def test_ip_strings_are_cut_to_their_arrays() -> None:
    value = kvp.IpValue("a" * 300, 1, False, "1" * 5000, "", "g" * 1500, "")
    msg = bytearray(SIZE)
    kvp.encode_ip_value(msg, value)
    assert msg[4:259] == b"a" * 255 and msg[259] == 0
    assert msg[4358 : 4358 + 1023] == b"g" * 1023 and msg[4358 + 1023] == 0


# -- the kernel's reading of replies ----------------------------------------------------------


def test_read_reply_failure_is_status_only() -> None:
    reply = kvp.encode_enumerate_record_reply(
        sim_kvp.encode_enumerate_request(0, 0), b"k".ljust(512, b"\0"), bytes(2048)
    )
    failed = u32(HvStatus.S_CONT) + reply[4:]
    assert sim_kvp.decode_reply(kvp.KvpOp.ENUMERATE, failed) == sim_kvp.HostReply(HvStatus.S_CONT)
    assert sim_kvp.decode_reply(
        kvp.KvpOp.SET, kvp.encode_status_reply(reply, 0)
    ) == sim_kvp.HostReply(0)


def test_read_reply_get_ignores_offset_528() -> None:
    # The reference's GET reply: value copied to 528.  The kernel reads 532.
    reply = bytearray(sim_kvp.encode_get_request(0, "k"))
    reply[528:534] = b"value\0"
    # The host sees the stored value minus its first 4 bytes (docs/protocol.md).
    assert sim_kvp.decode_reply(kvp.KvpOp.GET, bytes(reply)) == sim_kvp.HostReply(0, value="e")
    reply[528:534] = bytes(6)
    assert sim_kvp.decode_reply(kvp.KvpOp.GET, bytes(reply)) == sim_kvp.HostReply(0, value="")


def test_read_reply_conversion_limits() -> None:
    long_key = ("ä" * 300).encode()
    reply = kvp.encode_enumerate_record_reply(
        sim_kvp.encode_enumerate_request(0, 0),
        long_key[:511].ljust(512, b"\0"),
        ("😀" * 600).encode()[:2047] + b"\0",
    )
    got = sim_kvp.decode_reply(kvp.KvpOp.ENUMERATE, reply)
    assert got.key == "ä" * 254  # 254 UTF-16 units
    assert got.value == "😀" * 511  # 1022 units: pairs are not split
    bad = kvp.encode_enumerate_record_reply(
        sim_kvp.encode_enumerate_request(0, 0), b"\xff".ljust(512, b"\0"), bytes(2048)
    )
    assert sim_kvp.decode_reply(kvp.KvpOp.ENUMERATE, bad) == sim_kvp.HostReply(HvStatus.E_FAIL)
    with pytest.raises(ProtocolError):
        sim_kvp.decode_reply(kvp.KvpOp.SET, bytes(100))


def test_read_reply_key_runs_past_its_array() -> None:
    # strlen() on an unterminated 512-byte key continues into the value array.
    reply = kvp.encode_enumerate_record_reply(
        sim_kvp.encode_enumerate_request(0, 0), b"k" * 512, b"vv".ljust(2048, b"\0")
    )
    got = sim_kvp.decode_reply(kvp.KvpOp.ENUMERATE, reply)
    assert got.key == ("k" * 512 + "vv")[:254]


# -- limits, NUL positions and texts (mutation survivors, tests/mutation/run.py) -------------


def test_cstring_nul_at_start_and_at_end() -> None:
    assert kvp.cstring(b"\0abc", 0, 4) == b""
    assert kvp.cstring(b"abc\0", 0, 4) == b"abc"
    assert kvp.cstring(b"abcd", 0, 4) == b"abcd"
    assert kvp.cstring(b"xx\0abc", 2, 6) == b""


def test_decode_request_error_text() -> None:
    with pytest.raises(ProtocolError, match=r"^message of 7431 bytes, expected 7432$"):
        kvp.decode_request(bytes(SIZE - 1))


def test_registration_version_is_bounded_by_its_512_byte_array() -> None:
    msg = golden((0, b"\x64"), (4, b"v" * 512), (516, b"beyond"))
    assert kvp.decode_request(msg) == kvp.RegisterReply(100, b"v" * 512)


@pytest.mark.parametrize(("length", "kept"), [(2047, 2047), (2048, 2047), (3000, 2047)])
def test_reply_get_cuts_the_value_to_2047_bytes_and_a_nul(length: int, kept: int) -> None:
    reply = kvp.encode_get_reply(sim_kvp.encode_get_request(0, "k"), b"v" * length)
    assert reply == golden((8, u32(2)), (16, b"k"), (532, b"v" * kept))


def test_replies_to_a_message_of_the_wrong_length_are_7432_bytes() -> None:
    # The status (HV_S_OK) overlays op and pool at 0..3.
    assert kvp.encode_get_reply(b"\x00\x03\x00\x00\xaa", b"val") == golden(
        (4, b"\xaa"), (532, b"val")
    )
    key, value = b"k".ljust(512, b"\0"), b"v".ljust(2048, b"\0")
    assert kvp.encode_enumerate_record_reply(b"\x03\x01\x00\x00\x05", key, value) == golden(
        (4, b"\x05"), (20, b"k"), (532, b"v")
    )
    long = golden((0, b"\x03\x01"), (4, u32(5))) + b"\xff" * 100
    assert kvp.encode_enumerate_record_reply(long, key, value) == golden(
        (4, u32(5)), (20, b"k"), (532, b"v")
    )


def test_reply_enumerate_record_error_text() -> None:
    with pytest.raises(
        ValueError, match=r"^a record's key and value arrays are 512 and 2048 bytes$"
    ):
        kvp.encode_enumerate_record_reply(bytes(SIZE), bytes(512), bytes(2047))


@pytest.mark.parametrize(
    ("key_len", "value_len", "key_kept", "value_kept"),
    [(511, 2047, 511, 2047), (512, 2048, 511, 2047), (600, 3000, 511, 2047)],
)
def test_reply_enumerate_strings_cut_at_the_array_limits(
    key_len: int, value_len: int, key_kept: int, value_kept: int
) -> None:
    msg = bytearray(sim_kvp.encode_enumerate_request(2, 9))
    msg[20:SIZE] = b"\xee" * (SIZE - 20)  # shows every byte strcpy() leaves alone
    reply = kvp.encode_enumerate_strings_reply(bytes(msg), b"k" * key_len, b"v" * value_len)
    expect = bytearray(msg)
    expect[0:4] = u32(0)
    expect[20 : 20 + key_kept + 1] = b"k" * key_kept + b"\0"
    expect[532 : 532 + value_kept + 1] = b"v" * value_kept + b"\0"
    assert reply == bytes(expect)


@pytest.mark.parametrize(("length", "kept"), [(255, 255), (256, 255)])
def test_ip_adapter_id_at_its_256_byte_limit(length: int, kept: int) -> None:
    msg = bytearray(b"\xee" * SIZE)
    kvp.encode_ip_value(msg, kvp.IpValue("a" * length, 1, False, "", "", "", ""))
    assert msg[4:260] == b"a" * kept + bytes(256 - kept)
    assert msg[260:263] == b"\x01\x00\x00" and msg[3] == 0xEE


def test_ip_value_dhcp_enabled_byte() -> None:
    msg = bytearray(SIZE)
    kvp.encode_ip_value(msg, kvp.IpValue("x", 2, True, "", "", "", ""))
    assert msg[260:262] == b"\x02\x01"


def test_ip_strings_carry_undecodable_bytes_both_ways() -> None:
    """Bytes that are not UTF-8 survive (surrogateescape): the daemon hands them on as they are."""
    msg = golden((0, b"\x05"), (4, b"eth\xff"), (262, b"10.0.0.\xfe"), (5382, b"\x80"))
    req = kvp.decode_request(msg)
    assert isinstance(req, kvp.SetIpInfoRequest)
    assert (req.value.adapter_id, req.value.ip_addr, req.value.dns_addr) == (
        "eth\udcff",
        "10.0.0.\udcfe",
        "\udc80",
    )
    out = bytearray(SIZE)
    kvp.encode_ip_value(out, req.value)
    assert out == golden((4, b"eth\xff"), (262, b"10.0.0.\xfe"), (5382, b"\x80"))
