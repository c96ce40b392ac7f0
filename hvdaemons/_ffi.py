# SPDX-License-Identifier: GPL-2.0-only
"""The one boundary to the compiled cffi module hvdaemons._hv.

Nothing else imports _hv: callers get ints, bytes and OSError, never cdata.
C helpers return 0/positive or -errno; check_neg_errno() is the single place
that turns a C error into OSError.
"""

from __future__ import annotations

import os
from typing import Any

from . import __version__
from ._hv import ffi, lib  # type: ignore[import-not-found,unused-ignore]

_built = ffi.string(lib.hvd_version).decode()
if _built != __version__:
    # A stale extension left beside newer Python code would mis-speak the
    # protocol in ways no test of the Python side can see.
    raise ImportError(
        f"hvdaemons._hv was built for version {_built}, but the package is {__version__}: rebuild it"
    )


def check_neg_errno(rc: int, what: str = "") -> int:
    """Return rc, or raise OSError for a C helper's -errno result."""
    if rc < 0:
        if what:
            raise OSError(-rc, os.strerror(-rc), what)
        raise OSError(-rc, os.strerror(-rc))
    return rc


def const(name: str) -> int:
    """A constant from the kernel headers, as the compiler saw it."""
    value: int = getattr(lib, name)
    return value


def sizeof(ctype: str) -> int:
    size: int = ffi.sizeof(ctype)
    return size


def offsetof(ctype: str, *fields: str) -> int:
    """Offset of a (possibly nested) field: offsetof("struct hv_kvp_msg", "body", "kvp_set")."""
    off: int = ffi.offsetof(ctype, *fields)
    return off


def field_size(ctype: str, *fields: str) -> int:
    """Size of a (possibly nested) field of a struct."""
    t: Any = ffi.typeof(ctype)
    for name in fields:
        t = dict(t.fields)[name].type
    size: int = ffi.sizeof(t)
    return size


def set_process_name(name: str) -> None:
    """Set the kernel's comm for this process (what ps -o comm and pgrep match)."""
    check_neg_errno(lib.hvd_set_comm(name.encode()[:15]), "prctl(PR_SET_NAME)")
