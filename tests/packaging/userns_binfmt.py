# SPDX-License-Identifier: GPL-2.0-only
"""userns_binfmt.py ARCH CMD... -- run CMD where the kernel runs ARCH's programs
through qemu-user, without touching the host's binfmt_misc.

Since Linux 6.7 each user namespace may mount a binfmt_misc instance of its own
(fs/binfmt_misc.c, "binfmt_misc: enable sandboxed mounts"), and the kernel
looks up a foreign ELF file in the instance of the nearest user namespace that
has one.  So this process moves into a new user namespace (uids and gids
0-65535 mapped to themselves: file owners in a Debian root stay what they
are) and a new mount namespace, mounts binfmt_misc there, registers qemu with
the rule qemu-user-static ships for update-binfmts (/usr/share/binfmts/), and
execs CMD, which thus runs as this very process (signals reach it directly).
The rule's F flag (fix_binary) makes the kernel open qemu now, so it also
works inside a chroot that has no qemu.  Run as root.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
BINFMT = "/proc/sys/fs/binfmt_misc"
# The ids kept: Debian's static system users and the nobody/nogroup of 65534.
ID_RANGE = 65536
QEMU_NAME = {"arm64": "qemu-aarch64"}

libc = ctypes.CDLL(None, use_errno=True)


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def binfmt_rule(name: str) -> str:
    """The register line update-binfmts would write for /usr/share/binfmts/NAME."""
    fields: dict[str, str] = {}
    for line in Path("/usr/share/binfmts", name).read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    flags = "".join(
        flag
        for flag, key in (("P", "preserve"), ("C", "credentials"), ("F", "fix_binary"))
        if fields.get(key) == "yes"
    )
    if "F" not in flags:
        raise SystemExit(f"userns_binfmt: {name} lacks fix_binary: it would not work in a chroot")
    return (
        f":{name}:M:{fields.get('offset', '0')}:{fields['magic']}:{fields.get('mask', '')}:"
        f"{fields['interpreter']}:{flags}"
    )


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in QEMU_NAME:
        print(__doc__, file=sys.stderr)
        return 2
    rule = binfmt_rule(QEMU_NAME[argv[1]])
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:
        # Stays in the host's namespaces: only a process there may map a range of ids.
        os.close(unshared_w)
        os.close(mapped_r)
        code = 1
        try:
            if os.read(unshared_r, 1) == b"u":
                for name in ("uid_map", "gid_map"):
                    Path(f"/proc/{parent}/{name}").write_text(f"0 0 {ID_RANGE}\n")
                os.write(mapped_w, b"m")
                code = 0
        finally:
            os._exit(code)
    os.close(unshared_r)
    os.close(mapped_w)
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    os.write(unshared_w, b"u")
    ok = os.read(mapped_r, 1) == b"m"
    _, status = os.waitpid(helper, 0)
    if not ok or status != 0:
        raise SystemExit("userns_binfmt: could not map the user namespace's ids")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    check(
        libc.mount(b"binfmt_misc", BINFMT.encode(), b"binfmt_misc", 0, None),
        f"mount binfmt_misc on {BINFMT} (a user namespace's own needs Linux >= 6.7)",
    )
    with open(f"{BINFMT}/register", "w", encoding="ascii") as f:
        f.write(rule)
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
