# SPDX-License-Identifier: GPL-2.0-only
"""hvctl kvp: read the KVP pools and write the guest's own ones.

The pool files are the daemon's (hvdaemons.kvp.pool, mirroring
tools/hv/hv_kvp_daemon.c): 2560-byte records, a POSIX whole-file lock plus
flock() for every access.  Writes go through the daemon's own Pool class, so
they take the same locks, write crash-consistently and replay a journal a
crashed daemon left.  Reads take both locks shared on a read-only
descriptor, so any user can read (the files are 0644) and a reader never
changes a file.

Pools (enum hv_kvp_exchg_pool): 0 external (the host's administrator
writes, guest programs read), 1 guest (guest programs write, the host reads
it as GuestExchangeItems), 2 auto (made up by the daemon per request, the
file is unused), 3 host data about itself (VM name, host name), 4 auto
internal.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import HvError
from ..kvp.paths import KvpPaths

if TYPE_CHECKING:
    from ..kvp.pool import Pool

# The record layout (hvdaemons.protocol.kvp, from <linux/hyperv.h>) is imported
# when a command runs: the compiled module is not needed for --help.

POOL_NAMES = {0: "external", 1: "guest", 2: "auto", 3: "host", 4: "internal"}
POOL_ALIASES = {
    "external": 0,
    "guest": 1,
    "auto": 2,
    "intrinsic": 2,
    "host": 3,
    "auto-external": 3,
    "guest-parameter": 3,
    "internal": 4,
    "auto-internal": 4,
}
POOL_ROLES = {
    0: "written by the host's administrator, read by guest programs",
    1: "written by guest programs, read by the host (GuestExchangeItems)",
    2: "made up by hv_kvp_daemon for each host request (GuestIntrinsicExchangeItems); "
    "the file is not used",
    3: "written by the host about itself (VirtualMachineName, PhysicalHostName, ...)",
    4: "auto internal (reserved)",
}
HOST_POOLS = (0, 3)
LOCK_TIMEOUT = 10.0

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class KvpError(HvError):
    """A refused or failed hvctl kvp command, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def parse_pool_arg(text: str) -> int:
    """--pool N or a name (external, guest, auto, host, internal)."""
    t = text.strip().lower()
    if t.isdigit() and int(t) in POOL_NAMES:
        return int(t)
    if t in POOL_ALIASES:
        return POOL_ALIASES[t]
    names = ", ".join(f"{n} ({name})" for n, name in POOL_NAMES.items())
    raise argparse.ArgumentTypeError(f"no pool {text!r}; pools: {names}")


def pool_label(n: int) -> str:
    return f"pool {n} ({POOL_NAMES[n]})"


@dataclass
class Snapshot:
    number: int
    path: str
    exists: bool = False
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _lock_shared(fd: int, path: str, timeout: float) -> None:
    """Both of the daemon's locks, shared, waiting at most timeout seconds."""
    deadline = time.monotonic() + timeout
    for kind, op in (("POSIX", fcntl.lockf), ("flock", fcntl.flock)):
        while True:
            try:
                op(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise KvpError(
                        f"{path}: locked ({kind} lock) by another program for more than "
                        f"{timeout:g} s"
                    ) from None
                time.sleep(0.01)


def read_pool(state_dir: str, number: int, timeout: float = LOCK_TIMEOUT) -> Snapshot:
    """The records of one pool under a shared lock; problems are noted, never raised."""
    from ..kvp.pool import journal_path, parse_pool, pool_path
    from ..protocol.kvp import RECORD_SIZE

    snap = Snapshot(number, pool_path(state_dir, number))
    try:
        fd = os.open(snap.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        where = (
            "hv_kvp_daemon creates it when it starts"
            if os.path.isdir(state_dir)
            else f"{state_dir} does not exist either: has hv_kvp_daemon ever run here?"
        )
        snap.problems.append(f"{snap.path} does not exist ({where})")
        return snap
    except OSError as e:
        snap.problems.append(f"cannot open {snap.path}: {e.strerror}")
        return snap
    snap.exists = True
    try:
        _lock_shared(fd, snap.path, timeout)
        data = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data += chunk
    except KvpError as e:
        snap.problems.append(str(e))
        os.close(fd)
        return snap
    except OSError as e:
        snap.problems.append(f"cannot read {snap.path}: {e.strerror}")
        os.close(fd)
        return snap
    os.close(fd)  # drops both locks
    snap.records = parse_pool(data)
    partial = len(data) % RECORD_SIZE
    if partial:
        snap.problems.append(
            f"{snap.path} is damaged: {len(data)} bytes is not a multiple of {RECORD_SIZE}; "
            f"its last {partial} bytes (an incomplete record) are ignored"
        )
    if os.path.exists(journal_path(state_dir, number)):
        snap.problems.append(
            f"an interrupted change is pending in {journal_path(state_dir, number)}: "
            "hv_kvp_daemon (or hvctl kvp set/delete) completes it"
        )
    if number == 2:
        snap.problems = [p for p in snap.problems if "does not exist" not in p]
    return snap


def _snapshot_json(s: Snapshot) -> dict[str, object]:
    return {
        "pool": s.number,
        "name": POOL_NAMES[s.number],
        "role": POOL_ROLES[s.number],
        "path": s.path,
        "exists": s.exists,
        "records": [{"key": _show(k), "value": _show(v)} for k, v in s.records],
        "problems": s.problems,
    }


def check_key_value(pool: int, key: str, value: str | None) -> tuple[bytes, bytes]:
    """The UTF-8 key and value for pool, or KvpError (usage) saying the limits."""
    from ..protocol.kvp import HOST_KEY_UNITS, HOST_VALUE_UNITS, MAX_KEY_SIZE, MAX_VALUE_SIZE

    # What the kernel passes on to the host when it enumerates a pool.
    host_key_units, host_value_units = HOST_KEY_UNITS, HOST_VALUE_UNITS
    limits = (
        f"a pool record holds a key of at most {MAX_KEY_SIZE - 1} and a value of at most "
        f"{MAX_VALUE_SIZE - 1} UTF-8 bytes (each with its NUL in {MAX_KEY_SIZE}/{MAX_VALUE_SIZE})"
    )
    if pool == 1:
        limits += (
            f"; the host reads at most {host_key_units} UTF-16 code units of a key and "
            f"{host_value_units} of a value"
        )
    out = []
    for what, text, size, units in (
        ("key", key, MAX_KEY_SIZE, host_key_units),
        ("value", value, MAX_VALUE_SIZE, host_value_units),
    ):
        if text is None:
            out.append(b"")
            continue
        if what == "key" and not text:
            raise KvpError("the key is empty", EXIT_USAGE)
        if "\0" in text:
            raise KvpError(f"the {what} contains a NUL character", EXIT_USAGE)
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise KvpError(
                f"the {what} is not valid UTF-8 (the host could not read the pool)", EXIT_USAGE
            ) from None
        if len(raw) > size - 1:
            raise KvpError(f"the {what} is {len(raw)} UTF-8 bytes: too long; {limits}", EXIT_USAGE)
        n16 = len(text.encode("utf-16-le")) // 2
        if pool == 1 and n16 > units:
            raise KvpError(
                f"the {what} is {n16} UTF-16 code units: the host would get it cut short; {limits}",
                EXIT_USAGE,
            )
        out.append(raw)
    return out[0], out[1]


def _writable(pool: int, force: bool) -> None:
    if pool == 2:
        raise KvpError(
            "pool 2 (auto) cannot be written: hv_kvp_daemon makes its items up for each "
            "host request and never reads the file",
            EXIT_USAGE,
        )
    if pool in HOST_POOLS and not force:
        raise KvpError(
            f"{pool_label(pool)} belongs to the host: the host writes it and guest programs "
            "trust it as the host's data, and the host's next push replaces your change; "
            "use --force to write it anyway",
            EXIT_USAGE,
        )


def _open_pool(state_dir: str, number: int) -> Pool:
    from ..kvp.pool import Pool, PoolUnavailable

    if not os.path.isdir(state_dir):
        raise KvpError(f"{state_dir} does not exist: has hv_kvp_daemon ever run here?")
    pool = Pool(state_dir, number)
    try:
        pool.open()
    except PermissionError:
        raise KvpError(
            f"permission denied opening {pool.path} for writing: pool files belong to root "
            "(run hvctl as root)"
        ) from None
    except (OSError, PoolUnavailable) as e:
        raise KvpError(f"cannot open {pool.path}: {e}") from None
    return pool


def cmd_list(args: argparse.Namespace) -> int:
    pools = [args.pool] if args.pool is not None else list(POOL_NAMES)
    snaps = [read_pool(args.state_dir, n) for n in pools]
    if args.json:
        print(json.dumps({"pools": [_snapshot_json(s) for s in snaps]}, indent=2))
    else:
        for i, s in enumerate(snaps):
            if i:
                print()
            n = len(s.records)
            print(f"{pool_label(s.number)}: {POOL_ROLES[s.number]}")
            print(f"  {s.path}: {n} record{'s' if n != 1 else ''}")
            for k, v in s.records:
                print(f"  {_show(k)} = {_show(v)}")
    bad = [p for s in snaps for p in s.problems]
    for p in bad:
        print(f"hvctl: {p}", file=sys.stderr)
    return EXIT_FAIL if bad else EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    key, _ = check_key_value(-1, args.key, None)
    s = read_pool(args.state_dir, args.pool)
    found = [v for k, v in s.records if k == key]
    problems = list(s.problems)
    if not found and s.exists and not problems:
        problems.append(f"no key {args.key!r} in {pool_label(args.pool)}")
    if args.json:
        doc = {"pool": args.pool, "key": args.key, "found": bool(found)}
        doc["value"] = _show(found[0]) if found else None
        doc["problems"] = problems
        print(json.dumps(doc, indent=2))
    elif found:
        print(_show(found[0]))
    for p in problems:
        print(f"hvctl: {p}", file=sys.stderr)
    return EXIT_OK if found else EXIT_FAIL


def cmd_set(args: argparse.Namespace) -> int:
    _writable(args.pool, args.force)
    key, value = check_key_value(args.pool, args.key, args.value)
    pool = _open_pool(args.state_dir, args.pool)
    try:
        added = pool.set(key, value)
    except (OSError, _unavailable()) as e:
        raise KvpError(f"writing {pool.path} failed: {_reason(e)}") from None
    finally:
        pool.close()
    what = "added" if added else "updated"
    if args.json:
        print(json.dumps({"pool": args.pool, "key": args.key, "result": what}))
    else:
        print(f"{pool_label(args.pool)}: {what} {args.key}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    _writable(args.pool, args.force)
    key, _ = check_key_value(args.pool, args.key, None)
    pool = _open_pool(args.state_dir, args.pool)
    try:
        found = pool.delete(key)
    except (OSError, _unavailable()) as e:
        raise KvpError(f"writing {pool.path} failed: {_reason(e)}") from None
    finally:
        pool.close()
    if args.json:
        print(json.dumps({"pool": args.pool, "key": args.key, "deleted": found}))
    elif found:
        print(f"{pool_label(args.pool)}: deleted {args.key}")
    if not found:
        print(f"hvctl: no key {args.key!r} in {pool_label(args.pool)}", file=sys.stderr)
    return EXIT_OK if found else EXIT_FAIL


def _unavailable() -> type[Exception]:
    from ..kvp.pool import PoolUnavailable

    return PoolUnavailable


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full"
        return os.strerror(e.errno)
    return str(e)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "kvp",
        help="read the KVP pools, write the guest's",
        description="Read the KVP (Data Exchange) pool files and write the guest-side ones, "
        "with hv_kvp_daemon's record format and locks.",
    )
    p.set_defaults(func=lambda a: p.print_help() or EXIT_USAGE)
    ksub = p.add_subparsers(metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, default: int | None) -> None:
        sp.add_argument(
            "--pool",
            type=parse_pool_arg,
            default=default,
            metavar="N|NAME",
            help="0 external, 1 guest, 2 auto, 3 host, 4 internal"
            + (
                f" (default {default}, {POOL_NAMES[default]})"
                if default is not None
                else " (default: all)"
            ),
        )
        sp.add_argument(
            "--state-dir",
            default=KvpPaths.state_dir,
            metavar="DIR",
            help=f"where the pool files are (default {KvpPaths.state_dir})",
        )
        sp.add_argument("--json", action="store_true", help="JSON output")

    sp = ksub.add_parser("list", help="every record of a pool (default: of every pool)")
    common(sp, None)
    sp.set_defaults(func=cmd_list)
    sp = ksub.add_parser("get", help="the value of a key")
    sp.add_argument("key")
    common(sp, 1)
    sp.set_defaults(func=cmd_get)
    sp = ksub.add_parser("set", help="add or change a key (root)")
    sp.add_argument("key")
    sp.add_argument("value")
    common(sp, 1)
    sp.add_argument("--force", action="store_true", help="write a host-owned pool (0, 3)")
    sp.set_defaults(func=cmd_set)
    sp = ksub.add_parser("delete", help="remove a key (root)")
    sp.add_argument("key")
    common(sp, 1)
    sp.add_argument("--force", action="store_true", help="write a host-owned pool (0, 3)")
    sp.set_defaults(func=cmd_delete)
