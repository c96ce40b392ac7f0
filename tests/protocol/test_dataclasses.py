# SPDX-License-Identifier: GPL-2.0-only
"""What the protocol modules decode into is frozen: a request cannot change once decoded.

The records are hvdaemons.value.Value classes (they were frozen dataclasses):
fields set once in __init__, equality, hash and repr by field.
"""

from __future__ import annotations

import pytest

from hvdaemons.protocol import fcopy, icmsg, kvp, vss
from hvdaemons.value import Value
from hvsim.protocol import kvp as host

DECODED = [
    fcopy.StartCopy,
    fcopy.WriteData,
    fcopy.CompleteCopy,
    fcopy.CancelCopy,
    icmsg.Packet,
    icmsg.IcHeader,
    icmsg.Negotiated,
    kvp.GetRequest,
    kvp.SetRequest,
    kvp.DeleteRequest,
    kvp.EnumerateRequest,
    kvp.IpValue,
    kvp.GetIpInfoRequest,
    kvp.SetIpInfoRequest,
    kvp.RegisterReply,
    kvp.OtherRequest,
    vss.VssRequest,
]


def make(cls: type[Value], seed: int) -> Value:
    """An instance with every field given: seed, seed + 1, ... in field order."""
    return cls(*range(seed, seed + len(cls.__slots__)))


@pytest.mark.parametrize("cls", DECODED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_decoded_messages_are_frozen(cls: type[Value]) -> None:
    obj = make(cls, 1)
    for name in cls.__slots__:
        with pytest.raises(AttributeError):
            setattr(obj, name, None)
        with pytest.raises(AttributeError):
            delattr(obj, name)
    with pytest.raises(AttributeError):
        obj.other = 1
    assert obj == make(cls, 1)  # nothing changed


@pytest.mark.parametrize("cls", DECODED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_equality_and_hash_go_by_type_and_fields(cls: type[Value]) -> None:
    a, b = make(cls, 1), make(cls, 1)
    assert a == b and hash(a) == hash(b)
    if cls.__slots__:
        assert a != make(cls, 2)
        assert repr(a).startswith(f"{cls.__name__}({cls.__slots__[0]}=1")


def test_a_value_equals_no_other_type() -> None:
    assert fcopy.CompleteCopy() != fcopy.CancelCopy()
    assert kvp.EnumerateRequest(0, 1) != kvp.OtherRequest(0, 1)
    assert kvp.EnumerateRequest(0, 1) != (0, 1)


def test_a_decoded_request_is_one() -> None:
    req = kvp.decode_request(host.encode_get_request(1, "key"))
    assert isinstance(req, kvp.GetRequest)
    assert (req.pool, req.key) == (1, b"key")
    with pytest.raises(AttributeError):
        req.pool = 2
    assert req.pool == 1
