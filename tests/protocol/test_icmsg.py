# SPDX-License-Identifier: GPL-2.0-only
"""IC framing for the uio file-copy daemon: headers, responses, version negotiation.

Golden bytes written out by hand from the layouts of include/linux/hyperv.h
(struct vmpacket_descriptor, vmbuspipe_hdr, icmsg_hdr, icmsg_negotiate).
"""

from __future__ import annotations

import struct

import pytest

from hvdaemons.errors import ProtocolError
from hvdaemons.protocol import icmsg
from hvsim.protocol import icmsg as sim_icmsg

HV_E_FAIL = 0x80004005

# Hyper-V's file-copy negotiate: framework 3.0; service versions 1.0 and 1.1.
HOST_NEGOTIATE = bytes.fromhex(
    "01000000 1c000000"  # vmbuspipe_hdr: flags 1, msgsize 28
    "0300 0000"  # icverframe 3.0
    "0000"  # icmsgtype NEGOTIATE
    "0000 0000"  # icvermsg 0.0
    "1400"  # icmsgsize 20
    "00000000"  # status
    "07"  # ictransaction_id
    "03"  # icflags TRANSACTION|REQUEST
    "0000"  # reserved
    "0100 0200 00000000"  # 1 framework version, 2 service versions, reserved
    "0300 0000"  # framework 3.0
    "0100 0000"  # service 1.0
    "0100 0100"  # service 1.1
)

EXPECTED_REPLY = bytes.fromhex(
    "01000000 1c000000"
    "0300 0000"
    "0000"
    "0000 0000"
    "1000"  # icmsgsize 16
    "00000000"  # status S_OK
    "07"  # transaction id kept
    "05"  # icflags TRANSACTION|RESPONSE
    "0000"
    "0100 0100 00000000"  # one of each
    "0300 0000"  # chosen framework 3.0
    "0100 0100"  # chosen service 1.1
    "0100 0100"  # the host's last entry, untouched: the reply keeps the request's length
)


def test_negotiate_golden() -> None:
    neg = icmsg.negotiate(HOST_NEGOTIATE)
    assert neg.reply == EXPECTED_REPLY
    assert (neg.framework, neg.service) == ((3, 0), (1, 1))
    assert neg.ok


def test_negotiate_prefers_our_order() -> None:
    req = sim_icmsg.encode_negotiate_request([(1, 0), (3, 0)], [(1, 1), (1, 0)])
    neg = icmsg.negotiate(req, [(3, 0), (1, 0)], [(1, 0), (1, 1)])
    assert (neg.framework, neg.service) == ((3, 0), (1, 0))


@pytest.mark.parametrize(
    ("fw", "svc"),
    [([(1, 0)], [(1, 1)]), ([(3, 0)], [(2, 0), (1, 0)]), ([], [(1, 1)]), ([(3, 0)], [])],
)
def test_negotiate_without_a_common_version(
    fw: list[icmsg.Version], svc: list[icmsg.Version]
) -> None:
    req = sim_icmsg.encode_negotiate_request(fw, svc)
    neg = icmsg.negotiate(req)
    assert not neg.ok
    assert len(neg.reply) == len(req)
    hdr = icmsg.decode_header(neg.reply)
    assert hdr.status == HV_E_FAIL
    assert hdr.icflags == 5
    assert hdr.msgsize == 16
    assert struct.unpack_from("<HH", neg.reply, 28) == (0, 0)
    # Version slots are left as the host sent them.
    assert neg.reply[36:] == req[36:]


def test_negotiate_counts_above_the_kernel_limit() -> None:
    req = bytearray(sim_icmsg.encode_negotiate_request([(3, 0)], [(1, 1)]))
    struct.pack_into("<H", req, 28, 101)
    req += bytes(4 * 101)  # even with enough bytes, > 100 is refused
    neg = icmsg.negotiate(bytes(req))
    assert not neg.ok
    assert struct.unpack_from("<HH", neg.reply, 28) == (0, 0)
    assert len(neg.reply) == len(req)


def test_negotiate_counts_beyond_the_payload() -> None:
    req = sim_icmsg.encode_negotiate_request([(3, 0)], [(1, 1)])
    bad = bytearray(req)
    struct.pack_into("<H", bad, 30, 3)  # claims 3 service versions, carries 1
    neg = icmsg.negotiate(bytes(bad))
    assert not neg.ok and len(neg.reply) == len(bad)


@pytest.mark.parametrize("length", [28, 29, 31])
def test_negotiate_shorter_than_the_counts(length: int) -> None:
    """Below 32 bytes the body is not touched (not even icmsgsize), but the packet is answered."""
    req = HOST_NEGOTIATE[:length]
    neg = icmsg.negotiate(req)
    assert not neg.ok
    assert len(neg.reply) == length
    assert neg.reply[:20] == req[:20]
    assert neg.reply[28:] == req[28:]
    assert struct.unpack_from("<I", neg.reply, 20)[0] == HV_E_FAIL
    assert neg.reply[25] == 5


@pytest.mark.parametrize("length", [32, 36, 40, 43])
def test_negotiate_never_lengthens_the_reply(length: int) -> None:
    # One framework, one service version, but the payload ends before (all of) them.
    req = HOST_NEGOTIATE[:28] + struct.pack("<HHI", 1, 1, 0) + bytes.fromhex("03000000 01000100")
    req = req[:length]
    neg = icmsg.negotiate(req)
    assert len(neg.reply) == length
    assert not neg.ok  # the versions are not all there: no match


def test_negotiate_exactly_44_bytes() -> None:
    req = HOST_NEGOTIATE[:28] + struct.pack("<HHI", 1, 1, 0) + bytes.fromhex("03000000 01000100")
    neg = icmsg.negotiate(req)
    assert neg.ok and len(neg.reply) == 44
    assert neg.reply[36:44] == bytes.fromhex("03000000 01000100")


def test_negotiate_needs_the_ic_header() -> None:
    with pytest.raises(ProtocolError):
        icmsg.negotiate(bytes(20))


def test_response_keeps_everything_but_status_and_flags() -> None:
    req = sim_icmsg.encode_request(icmsg.ICMSGTYPE_FCOPY, b"\x02" + bytes(35), transaction_id=9)
    reply = icmsg.encode_status_reply(req + bytes(4), 0x80070050)
    assert len(reply) == len(req) + 4
    assert reply[:20] == req[:20]
    assert struct.unpack_from("<I", reply, 20)[0] == 0x80070050
    assert reply[24] == 9 and reply[25] == 5
    assert reply[26:] == (req + bytes(4))[26:]


def test_packet_roundtrip_and_padding() -> None:
    raw = sim_icmsg.encode_packet(b"abc", 0xDEADBEEF, flags=1)
    assert raw == struct.pack("<HHHHQ", 6, 2, 3, 1, 0xDEADBEEF) + b"abc" + bytes(5)
    pkt = icmsg.decode_packet(raw)
    assert (pkt.type, pkt.flags, pkt.trans_id, pkt.payload) == (6, 1, 0xDEADBEEF, b"abc" + bytes(5))


@pytest.mark.parametrize(
    "raw",
    [
        bytes(8),
        struct.pack("<HHHHQ", 6, 1, 2, 0, 0),  # header shorter than the descriptor
        struct.pack("<HHHHQ", 6, 2, 1, 0, 0),  # len8 below offset8
        struct.pack("<HHHHQ", 6, 2, 4, 0, 0) + bytes(8),  # longer than what arrived
    ],
)
def test_decode_packet_rejects_bad_descriptors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        icmsg.decode_packet(raw)


def test_header_fields() -> None:
    hdr = icmsg.decode_header(HOST_NEGOTIATE)
    assert hdr.framework == (3, 0)
    assert hdr.msgtype == icmsg.ICMSGTYPE_NEGOTIATE
    assert hdr.msgsize == 20
    assert hdr.transaction_id == 7
    assert hdr.icflags == 3
    assert not hdr.is_response


# -- boundaries and texts (mutation survivors, tests/mutation/run.py) -----------------------


def test_packet_of_exactly_a_descriptor_has_an_empty_payload() -> None:
    raw = struct.pack("<HHHHQ", 6, 2, 2, 1, 0x55)  # offset8 == len8 == 2: 16 bytes, no data
    assert icmsg.decode_packet(raw) == icmsg.Packet(6, 1, 0x55, b"")


def test_decode_packet_error_texts() -> None:
    with pytest.raises(ProtocolError, match=r"^packet of 15 bytes is shorter than its descriptor$"):
        icmsg.decode_packet(bytes(15))
    raw = struct.pack("<HHHHQ", 6, 2, 4, 0, 0) + bytes(8)
    with pytest.raises(ProtocolError, match=r"^packet descriptor offset8=2 len8=4 for 24 bytes$"):
        icmsg.decode_packet(raw)


def test_header_of_exactly_28_bytes() -> None:
    hdr = icmsg.decode_header(HOST_NEGOTIATE[:28])
    assert (hdr.pipe_flags, hdr.pipe_msgsize, hdr.msgsize, hdr.transaction_id) == (1, 28, 20, 7)
    with pytest.raises(
        ProtocolError, match=r"^IC message of 27 bytes is shorter than its headers$"
    ):
        icmsg.decode_header(HOST_NEGOTIATE[:27])
    with pytest.raises(
        ProtocolError, match=r"^IC message of 27 bytes is shorter than its headers$"
    ):
        icmsg.encode_status_reply(HOST_NEGOTIATE[:27], 0)


def test_negotiate_error_text() -> None:
    with pytest.raises(ProtocolError, match=r"^negotiate of 20 bytes is shorter than its headers$"):
        icmsg.negotiate(bytes(20))


def test_negotiate_exactly_the_two_counts() -> None:
    """32 bytes: the counts are there, so icmsgsize becomes 16 and both counts 0."""
    neg = icmsg.negotiate(HOST_NEGOTIATE[:32])
    assert not neg.ok
    assert neg.reply == bytes.fromhex(
        "01000000 1c000000 0300 0000 0000 0000 0000"
        "1000"  # icmsgsize 16
        "05400080"  # status HV_E_FAIL
        "07 05 0000"
        "0000 0000"  # no framework, no service version
    )


def test_negotiate_reply_writes_the_chosen_versions_to_the_first_slots() -> None:
    request = bytes.fromhex(
        "01000000 1c000000 0300 0000 0000 0000 0000 1800 00000000 0b 03 0000"
        "0200 0200 00000000"  # 2 framework, 2 service versions
        "0100 0000"  # framework 1.0
        "0300 0000"  # framework 3.0
        "0100 0100"  # service 1.1
        "0100 0000"  # service 1.0
    )
    neg = icmsg.negotiate(request, [(3, 0)], [(1, 0)])
    assert (neg.framework, neg.service) == ((3, 0), (1, 0))
    assert neg.reply == bytes.fromhex(
        "01000000 1c000000 0300 0000 0000 0000 0000 1000 00000000 0b 05 0000"
        "0100 0100 00000000"
        "0300 0000"  # chosen framework 3.0
        "0100 0000"  # chosen service 1.0
        "0100 0100"  # the rest as the host sent it
        "0100 0000"
    )


def _negotiate_with(fw_count: int, svc_count: int) -> icmsg.Negotiated:
    # Our versions come last in each list, so every offered version is read.
    fw = [(9, 9)] * (fw_count - 1) + [(3, 0)]
    svc = [(9, 9)] * (svc_count - 1) + [(1, 1)]
    return icmsg.negotiate(sim_icmsg.encode_negotiate_request(fw, svc))


def test_negotiate_counts_at_the_kernel_limit() -> None:
    """MAX_FW_VERSIONS and MAX_SRV_VERSIONS (drivers/hv/channel_mgmt.c) are 100: 100 is read."""
    for fw_count, svc_count in ((100, 1), (1, 100), (100, 100)):
        neg = _negotiate_with(fw_count, svc_count)
        assert neg.ok and (neg.framework, neg.service) == ((3, 0), (1, 1))
        assert neg.reply[28:44] == bytes.fromhex("0100 0100 00000000 0300 0000 0100 0100")
    for fw_count, svc_count in ((101, 1), (1, 101)):
        neg = _negotiate_with(fw_count, svc_count)
        assert not neg.ok
        assert struct.unpack_from("<I", neg.reply, 20)[0] == HV_E_FAIL


def test_negotiated_ok_needs_both_versions() -> None:
    assert not icmsg.Negotiated(b"", (3, 0), None).ok
    assert not icmsg.Negotiated(b"", None, (1, 1)).ok
    assert icmsg.Negotiated(b"", (3, 0), (1, 1)).ok
