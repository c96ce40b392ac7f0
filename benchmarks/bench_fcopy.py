# SPDX-License-Identifier: GPL-2.0-only
"""File copy over the legacy char device: our hv_fcopy_daemon against the reference C one.

Mirrors nothing upstream: a benchmark.  The simulated hv_fcopy.c (the same
Python host and kernel for both daemons) pushes a file of --size bytes (default
1 GiB) in 6 KiB fragments, as Copy-VMFile does, into Debian bookworm's
hv_fcopy_daemon (through the LD_PRELOAD shim) and into ours.  Each daemon runs
in a private mount namespace whose target directory is a fresh tmpfs (so the
daemon is measured, not the disk), or, with --disk, a directory on the root
filesystem.  Prints throughput (MB/s) and per-fragment latency (host send to
reply: median, p99) and the ratios ours/reference.

  python3 benchmarks/bench_fcopy.py [--size 1G] [--rounds 3] [--disk]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The tests package from this checkout; hvdaemons and hvsim from the installed
# packages (appended: the checkout itself has no compiled modules).
sys.path.append(str(Path(__file__).resolve().parent.parent))

from hvdaemons.protocol import fcopy as P
from hvdaemons.protocol.status import HvStatus
from tests.support.fcopy import LegacyRig

FRAGMENT = P.DATA_FRAGMENT


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def one_copy(rig: LegacyRig, target: Path, size: int, pattern: bytes) -> tuple[float, list[float]]:
    """Copy size bytes to target/bench.bin; (seconds, per-fragment latencies)."""
    host = rig.host
    frags = [pattern[i : i + FRAGMENT] for i in range(0, len(pattern), FRAGMENT)]
    host.latencies = []
    t0 = time.perf_counter()
    status = host.start("bench.bin", str(target), P.OVER_WRITE, size)
    if status != HvStatus.S_OK:
        raise RuntimeError(f"START failed: 0x{status:08x}")
    n = len(frags)
    for i, off in enumerate(range(0, size, FRAGMENT)):
        chunk = frags[i % n][: size - off]
        status = host.write(off, chunk)
        if status != HvStatus.S_OK:
            raise RuntimeError(f"WRITE at {off} failed: 0x{status:08x}")
    status = host.complete()
    elapsed = time.perf_counter() - t0
    if status != HvStatus.S_OK:
        raise RuntimeError(f"COMPLETE failed: 0x{status:08x}")
    lat = host.latencies[1:-1]  # the WRITEs only
    host.latencies = None
    got = rig.view(target / "bench.bin").stat().st_size
    if got != size:
        raise RuntimeError(f"copied {got} bytes, expected {size}")
    os.unlink(rig.view(target / "bench.bin"))
    return elapsed, lat


def measure(who: str, work: Path, size: int, rounds: int, disk: bool) -> dict[str, float]:
    target = work / f"target-{who}"
    target.mkdir()
    tmpfs = () if disk else (f"{target}:size={size + (64 << 20)}",)
    pattern = os.urandom(1 << 20)
    best = float("inf")
    lats: list[float] = []
    with LegacyRig(
        work / f"dev-{who}", reference=who == "reference", tmpfs=tmpfs, sandbox=True
    ) as rig:
        for _ in range(rounds):
            elapsed, lat = one_copy(rig, target, size, pattern)
            best = min(best, elapsed)
            lats.extend(lat)
    lats.sort()
    return {
        "mbps": size / best / 1e6,
        "median_us": statistics.median(lats) * 1e6,
        "p99_us": lats[int(len(lats) * 0.99) - 1] * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=parse_size, default=1 << 30, help="bytes per copy (default 1G)")
    p.add_argument("--rounds", type=int, default=3, help="copies per daemon; best time counts")
    p.add_argument("--disk", action="store_true", help="write to the root filesystem, not tmpfs")
    args = p.parse_args(argv)
    where = "root filesystem" if args.disk else "tmpfs"
    print(
        f"legacy fcopy: {args.size / (1 << 20):.0f} MiB in {FRAGMENT}-byte fragments to {where}, "
        f"best of {args.rounds}"
    )
    results = {}
    with tempfile.TemporaryDirectory(
        prefix="bench-fcopy-", dir="/var/tmp" if args.disk else None
    ) as d:
        for who in ("reference", "ours"):
            results[who] = measure(who, Path(d), args.size, args.rounds, args.disk)
            r = results[who]
            print(
                f"  {who:<9}  {r['mbps']:8.1f} MB/s   latency median {r['median_us']:7.1f} us"
                f"   p99 {r['p99_us']:7.1f} us"
            )
    ours, ref = results["ours"], results["reference"]
    print(
        f"  ratio ours/reference: throughput {ours['mbps'] / ref['mbps']:.2f}x, "
        f"median latency {ours['median_us'] / ref['median_us']:.2f}x, "
        f"p99 {ours['p99_us'] / ref['p99_us']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
