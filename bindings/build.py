# SPDX-License-Identifier: GPL-2.0-only
"""cffi builder for hvdaemons._hv (out-of-line API mode).

Compiled against the system's <linux/hyperv.h>: struct layouts and constants
come from the compiler. Every bindings/*.cdef.h is declared and every
bindings/*.c is compiled into the module.
"""

import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE.parent / "hvdaemons" / "__init__.py").read_text(),
    re.M,
).group(1)

# Declared first and in this order: later cdefs refer to these types.
ORDERED = [("consts.cdef.h", False), ("hyperv_packed.cdef.h", True), ("hyperv.cdef.h", False)]

# The helper cdefs (sys, ring, ...) are plain C prototypes, so the same file
# is both the cdef and the header the generated module includes.
HELPERS = sorted(p for p in HERE.glob("*.cdef.h") if p.name not in dict(ORDERED))

ffibuilder = FFI()
for name, packed in ORDERED:
    ffibuilder.cdef((HERE / name).read_text(), packed=packed)
for path in HELPERS:
    ffibuilder.cdef(path.read_text())

ffibuilder.set_source(
    "hvdaemons._hv",
    "#include <stdint.h>\n#include <linux/hyperv.h>\n#include <linux/fs.h>\n"
    + "".join(f'#include "{p.name}"\n' for p in HELPERS),
    sources=[f"bindings/{p.name}" for p in sorted(HERE.glob("*.c"))],
    include_dirs=["bindings"],
    define_macros=[("HVDAEMONS_VERSION", f'"{VERSION}"')],
    # cffi's generated field-type checks take addresses of packed members.
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wno-address-of-packed-member"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
