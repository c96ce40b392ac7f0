# SPDX-License-Identifier: GPL-2.0-only
"""Status codes the daemons report to the host (HRESULT-style, <linux/hyperv.h>).

Mirrors the HV_* defines of include/uapi/linux/hyperv.h that
tools/hv/hv_{kvp,vss,fcopy}_daemon.c write into a reply's status field.
The values are taken from the compiler through _ffi, never copied by hand.
They are unsigned 32-bit values (above INT_MAX): pack them with "<I".
"""

from __future__ import annotations

import enum

from .. import _ffi


class HvStatus(enum.IntEnum):
    """HV_* status codes; the C prefix is dropped (HV_S_OK -> HvStatus.S_OK)."""

    S_OK = _ffi.const("HV_S_OK")
    E_FAIL = _ffi.const("HV_E_FAIL")
    S_CONT = _ffi.const("HV_S_CONT")
    ERROR_NOT_SUPPORTED = _ffi.const("HV_ERROR_NOT_SUPPORTED")
    ERROR_MACHINE_LOCKED = _ffi.const("HV_ERROR_MACHINE_LOCKED")
    ERROR_DEVICE_NOT_CONNECTED = _ffi.const("HV_ERROR_DEVICE_NOT_CONNECTED")
    INVALIDARG = _ffi.const("HV_INVALIDARG")
    GUID_NOTFOUND = _ffi.const("HV_GUID_NOTFOUND")
    ERROR_ALREADY_EXISTS = _ffi.const("HV_ERROR_ALREADY_EXISTS")
    ERROR_DISK_FULL = _ffi.const("HV_ERROR_DISK_FULL")


def describe(status: int) -> str:
    """A status as the logs show it: the name if known, and the hex value."""
    try:
        return f"{HvStatus(status).name} (0x{status:08x})"
    except ValueError:
        return f"0x{status & 0xFFFFFFFF:08x}"
