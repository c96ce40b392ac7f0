# SPDX-License-Identifier: GPL-2.0-only
"""cffi builders (out-of-line API mode): hvdaemons._hv and hvsim._hvsim.

Both are compiled against the system's <linux/hyperv.h>: struct layouts and
constants come from the compiler.  The daemons' module declares every
bindings/*.cdef.h and compiles every bindings/*.c.  The simulator's module
declares and compiles its own bindings/hvsim/ files on top of the same ring
primitives (bindings/ring.c); nothing of the simulator goes into _hv.
"""

import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SIM = HERE / "hvsim"
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE.parent / "hvdaemons" / "__init__.py").read_text(),
    re.M,
).group(1)

# Declarations of what the system headers define (cdef only, never
# included): first and in this order, since later cdefs refer to these types.
ORDERED = [
    ("consts.cdef.h", False),
    ("hyperv_packed.cdef.h", True),
    ("hyperv.cdef.h", False),
    ("rtnetlink.cdef.h", False),
]
# The system headers they come from.
SYSTEM_HEADERS = (
    "stdint.h",
    "sys/socket.h",
    "linux/hyperv.h",
    "linux/fs.h",
    "linux/netlink.h",
    "linux/rtnetlink.h",
    "linux/if_addr.h",
    "linux/if.h",
)

# The other cdefs (sys, ring, vmbus, ...) are plain C declarations, so the
# same file is both the cdef and the header the generated module includes.
HELPERS = sorted(p for p in HERE.glob("*.cdef.h") if p.name not in dict(ORDERED))


def builder(module, ordered, helpers, sources):
    ffi = FFI()
    for name, packed in ordered:
        ffi.cdef((HERE / name).read_text(), packed=packed)
    for path in helpers:
        ffi.cdef(path.read_text())
    ffi.set_source(
        module,
        "".join(f"#include <{h}>\n" for h in SYSTEM_HEADERS)
        + "".join(f'#include "{p.name}"\n' for p in helpers),
        sources=[str(p.relative_to(HERE.parent)) for p in sources],
        include_dirs=["bindings", "bindings/hvsim"],
        define_macros=[("HVDAEMONS_VERSION", f'"{VERSION}"')],
        # cffi's generated field-type checks take addresses of packed members.
        extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wno-address-of-packed-member"],
    )
    return ffi


ffibuilder = builder("hvdaemons._hv", ORDERED, HELPERS, sorted(HERE.glob("*.c")))
hvsim_ffibuilder = builder(
    "hvsim._hvsim",
    [],
    [HERE / "ring.cdef.h", *sorted(SIM.glob("*.cdef.h"))],
    [HERE / "ring.c", *sorted(SIM.glob("*.c"))],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    hvsim_ffibuilder.compile(verbose=True)
