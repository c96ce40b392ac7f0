# SPDX-License-Identifier: GPL-2.0-only
"""VMBus packets and IC requests as the host sends them.

The daemon's side (include/linux/hyperv.h layouts, the negotiation answer of
vmbus_prep_negotiate_resp()) is hvdaemons.protocol.icmsg, which supplies the
layout.  Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hvdaemons import _ffi
from hvdaemons.protocol.icmsg import (
    DESC,
    DESC_SIZE,
    FCOPY_FW_VERSIONS,
    FCOPY_SVC_VERSIONS,
    ICMSG_HDR,
    ICMSG_HDR_SIZE,
    ICMSGHDRFLAG_REQUEST,
    ICMSGHDRFLAG_TRANSACTION,
    ICMSGTYPE_NEGOTIATE,
    PIPE_HDR_SIZE,
    VM_PKT_DATA_INBAND,
    Version,
)

# vmpacket_descriptor.flags: the host asks for a completion (the IC requests).
VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = _ffi.const(
    "VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED"
)
# vmbuspipe_hdr.flags as Hyper-V sends it.
_PIPE_FLAGS = 1


def encode_packet(
    payload: bytes, trans_id: int, *, ptype: int = VM_PKT_DATA_INBAND, flags: int = 0
) -> bytes:
    """An in-band packet as the ring carries it (without the trailer)."""
    pad = -(DESC_SIZE + len(payload)) % 8
    len8 = (DESC_SIZE + len(payload) + pad) // 8
    return DESC.pack(ptype, DESC_SIZE // 8, len8, flags, trans_id) + payload + bytes(pad)


def encode_request(
    msgtype: int,
    body_bytes: bytes,
    *,
    framework: Version = FCOPY_FW_VERSIONS[0],
    msg_version: Version = FCOPY_SVC_VERSIONS[0],
    transaction_id: int = 0,
) -> bytes:
    """A host-side IC request payload (what the simulated host sends).

    The versions default to those a file-copy channel negotiates.
    """
    msgsize = len(body_bytes)
    header = ICMSG_HDR.pack(
        _PIPE_FLAGS,
        msgsize + (ICMSG_HDR_SIZE - PIPE_HDR_SIZE),
        framework[0],
        framework[1],
        msgtype,
        msg_version[0],
        msg_version[1],
        msgsize,
        0,
        transaction_id & 0xFF,
        ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST,
        0,
    )
    return header + body_bytes


def encode_negotiate_request(
    fw_offered: Sequence[Version], svc_offered: Sequence[Version]
) -> bytes:
    """A host-side NEGOTIATE payload offering these versions."""
    versions = list(fw_offered) + list(svc_offered)
    neg = struct.pack("<HHI", len(fw_offered), len(svc_offered), 0) + b"".join(
        struct.pack("<HH", major, minor) for major, minor in versions
    )
    return encode_request(ICMSGTYPE_NEGOTIATE, neg, msg_version=(0, 0))
