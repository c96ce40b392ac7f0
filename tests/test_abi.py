# SPDX-License-Identifier: GPL-2.0-only
"""Every struct of bindings/hyperv*.cdef.h against the sizes and offsets in the spec.

cffi checks the cdef layouts against the compiler the first time a type is
used; touching each struct and field here forces that check and pins the
numbers shared/spec/{kvp,vss,fcopy,transport}.md give.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from hvdaemons import _ffi

BINDINGS = pathlib.Path(__file__).resolve().parent.parent / "bindings"

# struct -> (size, {field path: (offset, size)})
LAYOUTS: dict[str, tuple[int, dict[tuple[str, ...], tuple[int, int]]]] = {
    # kvp.md 3.1
    "struct hv_kvp_hdr": (4, {("operation",): (0, 1), ("pool",): (1, 1), ("pad",): (2, 2)}),
    # kvp.md 3.2
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
    # kvp.md 3.3
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
    # kvp.md 3.4: the union body is 4-byte aligned, hence 7426 + 2 bytes of tail padding
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
    # kvp.md 3.5: the host wire format of the IP operations
    "struct hv_kvp_ip_msg": (
        7428,
        {
            ("operation",): (0, 1),
            ("pool",): (1, 1),
            ("kvp_ip_val",): (2, 7426),
            ("kvp_ip_val", "ip_addr"): (260, 2048),
        },
    ),
    # vss.md 2 / transport.md 4
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
    # fcopy.md 2
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
}


def declared_structs() -> set[str]:
    names: set[str] = set()
    for path in BINDINGS.glob("hyperv*.cdef.h"):
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
