# SPDX-License-Identifier: GPL-2.0-only
"""Every struct of bindings/*.cdef.h, and every Python struct format that mirrors one.

cffi checks the cdef layouts against the compiler the first time a type is
used; touching each struct and field here forces that check and pins the
numbers to those of the kernel's headers: include/uapi/linux/hyperv.h for
the messages, include/linux/hyperv.h for the VMBus internals
(bindings/vmbus.cdef.h).  The struct.Struct formats of the Python side are
held to the same offsets field by field.
"""

from __future__ import annotations

import pathlib
import re
import struct

import pytest

from hvdaemons import _ffi
from hvdaemons.protocol import icmsg

BINDINGS = pathlib.Path(__file__).resolve().parent.parent / "bindings"

# struct -> (size, {field path: (offset, size)})
LAYOUTS: dict[str, tuple[int, dict[tuple[str, ...], tuple[int, int]]]] = {
    # include/uapi/linux/hyperv.h, KVP
    "struct hv_kvp_hdr": (4, {("operation",): (0, 1), ("pool",): (1, 1), ("pad",): (2, 2)}),
    "struct hv_kvp_exchg_msg_value": (
        2572,
        {
            ("value_type",): (0, 4),
            ("key_size",): (4, 4),
            ("value_size",): (8, 4),
            ("key",): (12, 512),
            ("value",): (524, 2048),
            ("value_u32",): (524, 4),
            ("value_u64",): (524, 8),
        },
    ),
    "struct hv_kvp_ipaddr_value": (
        7426,
        {
            ("adapter_id",): (0, 256),
            ("addr_family",): (256, 1),
            ("dhcp_enabled",): (257, 1),
            ("ip_addr",): (258, 2048),
            ("sub_net",): (2306, 2048),
            ("gate_way",): (4354, 1024),
            ("dns_addr",): (5378, 2048),
        },
    ),
    "struct hv_kvp_msg_enumerate": (2576, {("index",): (0, 4), ("data",): (4, 2572)}),
    "struct hv_kvp_msg_get": (2572, {("data",): (0, 2572)}),
    "struct hv_kvp_msg_set": (2572, {("data",): (0, 2572)}),
    "struct hv_kvp_msg_delete": (516, {("key_size",): (0, 4), ("key",): (4, 512)}),
    "struct hv_kvp_register": (512, {("version",): (0, 512)}),
    # The union body is 4-byte aligned, hence 7426 + 2 bytes of tail padding.
    "struct hv_kvp_msg": (
        7432,
        {
            ("kvp_hdr",): (0, 4),
            ("kvp_hdr", "operation"): (0, 1),
            ("kvp_hdr", "pool"): (1, 1),
            ("error",): (0, 4),
            ("body",): (4, 7428),
            ("body", "kvp_get", "data", "value_type"): (4, 4),
            ("body", "kvp_get", "data", "key_size"): (8, 4),
            ("body", "kvp_get", "data", "value_size"): (12, 4),
            ("body", "kvp_get", "data", "key"): (16, 512),
            ("body", "kvp_get", "data", "value"): (528, 2048),
            ("body", "kvp_set", "data", "key"): (16, 512),
            ("body", "kvp_set", "data", "value"): (528, 2048),
            ("body", "kvp_delete", "key_size"): (4, 4),
            ("body", "kvp_delete", "key"): (8, 512),
            ("body", "kvp_enum_data", "index"): (4, 4),
            ("body", "kvp_enum_data", "data", "value_type"): (8, 4),
            ("body", "kvp_enum_data", "data", "key_size"): (12, 4),
            ("body", "kvp_enum_data", "data", "value_size"): (16, 4),
            ("body", "kvp_enum_data", "data", "key"): (20, 512),
            ("body", "kvp_enum_data", "data", "value"): (532, 2048),
            ("body", "kvp_ip_val", "adapter_id"): (4, 256),
            ("body", "kvp_ip_val", "addr_family"): (260, 1),
            ("body", "kvp_ip_val", "dhcp_enabled"): (261, 1),
            ("body", "kvp_ip_val", "ip_addr"): (262, 2048),
            ("body", "kvp_ip_val", "sub_net"): (2310, 2048),
            ("body", "kvp_ip_val", "gate_way"): (4358, 1024),
            ("body", "kvp_ip_val", "dns_addr"): (5382, 2048),
            ("body", "kvp_register", "version"): (4, 512),
        },
    ),
    # The host wire format of the IP operations.
    "struct hv_kvp_ip_msg": (
        7428,
        {
            ("operation",): (0, 1),
            ("pool",): (1, 1),
            ("kvp_ip_val",): (2, 7426),
            ("kvp_ip_val", "ip_addr"): (260, 2048),
        },
    ),
    # include/uapi/linux/hyperv.h, VSS
    "struct hv_vss_hdr": (8, {("operation",): (0, 1), ("reserved",): (1, 7)}),
    "struct hv_vss_check_feature": (4, {("flags",): (0, 4)}),
    "struct hv_vss_check_dm_info": (4, {("flags",): (0, 4)}),
    "struct hv_vss_msg": (
        12,
        {
            ("vss_hdr", "operation"): (0, 1),
            ("error",): (0, 4),
            ("vss_cf", "flags"): (8, 4),
            ("dm_info", "flags"): (8, 4),
        },
    ),
    # include/uapi/linux/hyperv.h, file copy
    "struct hv_fcopy_hdr": (
        36,
        {("operation",): (0, 4), ("service_id0",): (4, 16), ("service_id1",): (20, 16)},
    ),
    "struct hv_start_fcopy": (
        1088,
        {
            ("hdr",): (0, 36),
            ("file_name",): (36, 520),
            ("path_name",): (556, 520),
            ("copy_flags",): (1076, 4),
            ("file_size",): (1080, 8),
        },
    ),
    "struct hv_do_fcopy": (
        6196,
        {
            ("hdr",): (0, 36),
            ("pad",): (36, 4),
            ("offset",): (40, 8),
            ("size",): (48, 4),
            ("data",): (52, 6144),
        },
    ),
    # include/linux/hyperv.h (kernel internal): the ring header up to
    # feature_bits, the packet descriptor, the IC headers
    "struct hv_ring_header": (
        68,
        {
            ("write_index",): (0, 4),
            ("read_index",): (4, 4),
            ("interrupt_mask",): (8, 4),
            ("pending_send_sz",): (12, 4),
            ("feature_bits",): (64, 4),
        },
    ),
    "struct vmpacket_descriptor": (
        16,
        {
            ("type",): (0, 2),
            ("offset8",): (2, 2),
            ("len8",): (4, 2),
            ("flags",): (6, 2),
            ("trans_id",): (8, 8),
        },
    ),
    "struct vmbuspipe_hdr": (8, {("flags",): (0, 4), ("msgsize",): (4, 4)}),
    "struct ic_version": (4, {("major",): (0, 2), ("minor",): (2, 2)}),
    "struct icmsg_hdr": (
        20,
        {
            ("icverframe",): (0, 4),
            ("icmsgtype",): (4, 2),
            ("icvermsg",): (6, 4),
            ("icmsgsize",): (10, 2),
            ("status",): (12, 4),
            ("ictransaction_id",): (16, 1),
            ("icflags",): (17, 1),
            ("reserved",): (18, 2),
        },
    ),
    "struct icmsg_negotiate": (
        8,
        {("icframe_vercnt",): (0, 2), ("icmsg_vercnt",): (2, 2), ("reserved",): (4, 4)},
    ),
    # <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_addr.h>: what KVP reads
    "struct nlmsghdr": (
        16,
        {
            ("nlmsg_len",): (0, 4),
            ("nlmsg_type",): (4, 2),
            ("nlmsg_flags",): (6, 2),
            ("nlmsg_seq",): (8, 4),
            ("nlmsg_pid",): (12, 4),
        },
    ),
    "struct rtattr": (4, {("rta_len",): (0, 2), ("rta_type",): (2, 2)}),
    "struct ifinfomsg": (
        16,
        {
            ("ifi_family",): (0, 1),
            ("ifi_type",): (2, 2),
            ("ifi_index",): (4, 4),
            ("ifi_flags",): (8, 4),
            ("ifi_change",): (12, 4),
        },
    ),
    "struct ifaddrmsg": (
        8,
        {
            ("ifa_family",): (0, 1),
            ("ifa_prefixlen",): (1, 1),
            ("ifa_flags",): (2, 1),
            ("ifa_scope",): (3, 1),
            ("ifa_index",): (4, 4),
        },
    ),
    "struct rtmsg": (
        12,
        {
            ("rtm_family",): (0, 1),
            ("rtm_dst_len",): (1, 1),
            ("rtm_table",): (4, 1),
            ("rtm_type",): (7, 1),
            ("rtm_flags",): (8, 4),
        },
    ),
    "struct rtnexthop": (
        8,
        {
            ("rtnh_len",): (0, 2),
            ("rtnh_flags",): (2, 1),
            ("rtnh_hops",): (3, 1),
            ("rtnh_ifindex",): (4, 4),
        },
    ),
}


def declared_structs() -> set[str]:
    names: set[str] = set()
    files = ("hyperv*.cdef.h", "vmbus.cdef.h", "rtnetlink.cdef.h")
    for path in (p for pattern in files for p in BINDINGS.glob(pattern)):
        names.update(f"struct {m}" for m in re.findall(r"^struct (\w+) \{", path.read_text(), re.M))
    return names


def test_every_declared_struct_is_checked() -> None:
    assert declared_structs() == set(LAYOUTS)


@pytest.mark.parametrize("ctype", sorted(LAYOUTS))
def test_layout(ctype: str) -> None:
    size, fields = LAYOUTS[ctype]
    assert _ffi.sizeof(ctype) == size
    for path, (offset, fsize) in fields.items():
        assert (_ffi.offsetof(ctype, *path), _ffi.field_size(ctype, *path)) == (offset, fsize), path


def test_kvp_constants() -> None:
    assert _ffi.const("HV_KVP_EXCHANGE_MAX_KEY_SIZE") == 512
    assert _ffi.const("HV_KVP_EXCHANGE_MAX_VALUE_SIZE") == 2048
    # A pool file record (struct kvp_record in hv_kvp_daemon.c) is key + value.
    from hvdaemons.protocol.kvp import RECORD_SIZE

    assert RECORD_SIZE == 2560
    assert [_ffi.const(n) for n in ("KVP_OP_REGISTER", "KVP_OP_REGISTER1", "KVP_POOL_COUNT")] == [
        4,
        100,
        5,
    ]


def test_vmbus_constants() -> None:
    names = (
        "HV_HYP_PAGE_SIZE",
        "VM_PKT_DATA_INBAND",
        "VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED",
        "ICMSGTYPE_NEGOTIATE",
        "ICMSGTYPE_HEARTBEAT",
        "ICMSGTYPE_FCOPY",
        "ICMSGHDRFLAG_TRANSACTION",
        "ICMSGHDRFLAG_REQUEST",
        "ICMSGHDRFLAG_RESPONSE",
    )
    assert [_ffi.const(n) for n in names] == [4096, 6, 1, 0, 1, 7, 1, 2, 4]


def format_offsets(fmt: struct.Struct) -> list[int]:
    """The offset of each field of a struct.Struct format ("<" formats: no padding)."""
    codes = fmt.format.lstrip("<>=!@")
    return [struct.calcsize("<" + codes[:i]) for i, c in enumerate(codes) if c != "x"]


def test_the_python_formats_mirror_the_c_structs() -> None:
    off = _ffi.offsetof
    assert format_offsets(icmsg.DESC) == [
        off("struct vmpacket_descriptor", f)
        for f in ("type", "offset8", "len8", "flags", "trans_id")
    ]
    pipe = _ffi.sizeof("struct vmbuspipe_hdr")
    ic_fields = [
        ("icverframe", "major"),
        ("icverframe", "minor"),
        ("icmsgtype",),
        ("icvermsg", "major"),
        ("icvermsg", "minor"),
        ("icmsgsize",),
        ("status",),
        ("ictransaction_id",),
        ("icflags",),
        ("reserved",),
    ]
    assert format_offsets(icmsg.ICMSG_HDR) == [
        off("struct vmbuspipe_hdr", "flags"),
        off("struct vmbuspipe_hdr", "msgsize"),
        *(pipe + off("struct icmsg_hdr", *f) for f in ic_fields),
    ]
    assert icmsg.DESC.size == _ffi.sizeof("struct vmpacket_descriptor")
    assert icmsg.ICMSG_HDR.size == pipe + _ffi.sizeof("struct icmsg_hdr")


def test_the_netlink_formats_mirror_the_kernel_structs() -> None:
    from hvdaemons.kvp import netlink

    for fmt, ctype, fields in (
        (
            netlink._NLMSGHDR,
            "struct nlmsghdr",
            ("nlmsg_len", "nlmsg_type", "nlmsg_flags", "nlmsg_seq", "nlmsg_pid"),
        ),
        (netlink._RTATTR, "struct rtattr", ("rta_len", "rta_type")),
        (
            netlink._IFINFOMSG,
            "struct ifinfomsg",
            ("ifi_family", "ifi_type", "ifi_index", "ifi_flags", "ifi_change"),
        ),
        (
            netlink._IFADDRMSG,
            "struct ifaddrmsg",
            ("ifa_family", "ifa_prefixlen", "ifa_flags", "ifa_scope", "ifa_index"),
        ),
        (
            netlink._RTMSG,
            "struct rtmsg",
            (
                "rtm_family",
                "rtm_dst_len",
                "rtm_src_len",
                "rtm_tos",
                "rtm_table",
                "rtm_protocol",
                "rtm_scope",
                "rtm_type",
                "rtm_flags",
            ),
        ),
        (
            netlink._RTNEXTHOP,
            "struct rtnexthop",
            ("rtnh_len", "rtnh_flags", "rtnh_hops", "rtnh_ifindex"),
        ),
    ):
        assert format_offsets(fmt) == [_ffi.offsetof(ctype, f) for f in fields], ctype
        assert fmt.size == _ffi.sizeof(ctype), ctype
