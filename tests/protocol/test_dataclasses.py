# SPDX-License-Identifier: GPL-2.0-only
"""What the protocol modules decode into is frozen: a request cannot change once decoded."""

from __future__ import annotations

import dataclasses

import pytest

from hvdaemons.protocol import fcopy, icmsg, kvp, vss

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


@pytest.mark.parametrize("cls", DECODED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_decoded_messages_are_frozen(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and params.eq
    fields = dataclasses.fields(cls)
    if fields:  # setting any field of an instance fails
        obj = object.__new__(cls)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, fields[0].name, None)
