# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.protocol.vss: the 12-byte hv_vss_msg and the registration handshake."""

from __future__ import annotations

import struct

import pytest

from hvdaemons import _ffi
from hvdaemons.errors import ProtocolError
from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus
from hvsim.protocol import vss as sim_vss


def test_message_size_and_error_overlay_match_the_header() -> None:
    assert vss.MSG_SIZE == 12
    # error overlays the op byte: both start at 0; the flags union at 8.
    assert _ffi.offsetof("struct hv_vss_msg", "error") == 0
    assert _ffi.offsetof("struct hv_vss_msg", "vss_hdr") == 0
    assert _ffi.offsetof("struct hv_vss_msg", "vss_cf") == 8


def test_op_codes_are_the_kernel_headers() -> None:
    assert vss.VssOp.HOT_BACKUP == 2
    assert vss.VssOp.FREEZE == 5
    assert vss.VssOp.THAW == 6
    assert vss.VssOp.REGISTER1 == 129
    assert vss.op_name(5) == "FREEZE"
    assert vss.op_name(77) == "77"


def test_registration_is_register1_then_zeros() -> None:
    msg = vss.encode_registration()
    assert msg == bytes([129]) + bytes(11)


def test_registration_reply_is_a_4_byte_version() -> None:
    assert vss.decode_registration_reply(struct.pack("=I", 129)) == 129
    for bad in (b"", bytes(3), bytes(12)):
        with pytest.raises(ProtocolError, match="invalid version negotiation"):
            vss.decode_registration_reply(bad)


def test_request_parsing_needs_exactly_12_bytes() -> None:
    req = vss.decode_request(sim_vss.encode_request(vss.VssOp.FREEZE))
    assert req.op == vss.VssOp.FREEZE and req.name == "FREEZE"
    for n in (0, 4, 11, 13, 7432):
        with pytest.raises(ProtocolError):
            vss.decode_request(bytes(n))


def test_reply_sets_error_and_echoes_the_rest_like_the_reference() -> None:
    req = sim_vss.encode_request(vss.VssOp.HOT_BACKUP, flags=0x11223344)
    ok = vss.encode_status_reply(req, HvStatus.S_OK)
    assert len(ok) == 12
    assert ok[:4] == bytes(4)
    assert ok[4:] == req[4:]
    fail = vss.encode_status_reply(sim_vss.encode_request(vss.VssOp.FREEZE), HvStatus.E_FAIL)
    assert fail == bytes.fromhex("05400080") + bytes(8)
    assert sim_vss.decode_status_reply(fail) == HvStatus.E_FAIL
    # A short message still gets a 12-byte reply (the kernel takes no other size).
    assert len(vss.encode_status_reply(b"\x05", HvStatus.E_FAIL)) == 12


def test_request_size_error_text() -> None:
    with pytest.raises(ProtocolError, match=r"^11-byte VSS message, expected 12$"):
        vss.decode_request(bytes(11))
