#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""KVP daemon benchmark: our hv_kvp_daemon side by side with the reference C daemon.

Mirrors nothing upstream.  Both daemons run the same way, as in
tests/kvp/test_differential.py: default paths, the hvshim.so LD_PRELOAD
shim connecting /dev/vmbus/hv_kvp to an in-process simulated kernel, in a
private mount namespace whose /var/lib/hyperv is a bind mount of a seeded
directory (on the same filesystem for both).  Measured, per daemon:

* start -> registered: from spawning to the kernel reading the daemon's
  registration (median of several starts);
* SET and GET round trips (the host's request through the simulated kernel
  and back) on a 10-record pool and on a 5,000-record pool: median, p99 and
  operations per second; SETs update existing keys with changing values;
* ENUMERATE of the auto pool (10 items and the closing HV_S_CONT);
* VmRSS of the daemon after the workload.

Our daemon runs with byte-compiled modules (PYTHONDONTWRITEBYTECODE is
dropped and the package compiled first), as an installed package would.

    python3 benchmarks/bench_kvp.py [--release bookworm] [--quick]
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
# The tests package from this checkout; hvdaemons and hvsim from the installed
# packages (appended: the checkout itself has no compiled modules).
sys.path.append(str(REPO))

import hvdaemons  # noqa: E402
from hvdaemons.kvp.pool import record_bytes  # noqa: E402
from hvsim import launch  # noqa: E402
from hvsim.chardev import ChardevKernel  # noqa: E402
from hvsim.protocol import kvp  # noqa: E402
from tests.reference import refdaemons  # noqa: E402

SMALL, BIG = 10, 5000


@dataclass
class Result:
    registered_ms: list[float] = field(default_factory=list)
    ops: dict[str, list[float]] = field(default_factory=dict)  # name -> latencies (s)
    wall: dict[str, float] = field(default_factory=dict)  # name -> total seconds
    rss_kib: int = 0
    rss_start_kib: int = 0


def seed(state: Path) -> None:
    small = b"".join(record_bytes(b"key%d" % i, b"value %d " % i * 10) for i in range(SMALL))
    big = b"".join(record_bytes(b"telemetry-%05d" % i, b"event %d " % i * 8) for i in range(BIG))
    (state / ".kvp_pool_0").write_bytes(small)
    (state / ".kvp_pool_1").write_bytes(big)
    for n in (2, 3, 4):
        (state / f".kvp_pool_{n}").write_bytes(b"")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+)", f.read())
    return int(m.group(1)) if m else 0


PYTHON = sys.executable  # the interpreter our daemon runs on (--python)


def spawn(who: str, release: str, sim: Path, state: Path) -> subprocess.Popen[bytes]:
    binds = {str(state): "/var/lib/hyperv"}
    if who == "ref":
        return refdaemons.spawn_reference(
            release, "hv_kvp_daemon", sim, ("-n",), tmpfs=(), binds=binds
        )
    env = launch.child_env(
        {"LD_PRELOAD": str(refdaemons.build_shim()), "HVSHIM_DIR": str(sim)}
    )
    # The byte code compiled in main() keeps start-up times comparable.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = refdaemons.sandbox_argv(
        [PYTHON, "-m", launch.DAEMON_MODULES["hv_kvp_daemon"], "-n"], tmpfs=(), binds=binds
    )
    return subprocess.Popen(
        argv,
        cwd=launch.NEUTRAL_CWD,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Daemon:
    def __init__(self, who: str, release: str, tmp: Path, tag: str) -> None:
        self.sim = tmp / f"sim-{who}-{tag}"
        self.state = tmp / f"state-{who}-{tag}"
        self.sim.mkdir()
        self.state.mkdir()
        seed(self.state)
        self.kernel = ChardevKernel(str(self.sim / "hv_kvp"), "hv_kvp", timeout=60)
        t0 = time.perf_counter()
        self.proc = spawn(who, release, self.sim, self.state)
        if not self.kernel.wait_registered(60):
            raise RuntimeError(f"{who} did not register")
        self.registered_ms = (time.perf_counter() - t0) * 1000

    def request(self, msg: bytes) -> bytes:
        reply = self.kernel.request(msg)
        if reply is None:
            raise RuntimeError("the daemon did not answer")
        return reply

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.kernel.close()


def timed(
    d: Daemon, make: Callable[[int], bytes], n: int, budget: float
) -> tuple[list[float], float]:
    """Run up to n requests (fewer if budget seconds run out); latencies and wall time."""
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        msg = make(i)
        t = time.perf_counter()
        reply = d.request(msg)
        lat.append(time.perf_counter() - t)
        if kvp.decode_status_reply(reply) != 0:
            raise RuntimeError(f"request {i} failed: 0x{kvp.decode_status_reply(reply):08x}")
        if time.perf_counter() - start > budget:
            break
    return lat, time.perf_counter() - start


def workload(who: str, release: str, tmp: Path, quick: bool) -> Result:
    res = Result()
    for i in range(3 if quick else 7):
        d = Daemon(who, release, tmp, f"start{i}")
        res.registered_ms.append(d.registered_ms)
        d.close()
    d = Daemon(who, release, tmp, "work")
    try:
        time.sleep(0.2)
        res.rss_start_kib = rss(d.proc.pid)
        n_small = 500 if quick else 3000
        n_big = 50 if quick else 300
        budget = 5.0 if quick else 20.0
        runs: list[tuple[str, Callable[[int], bytes], int]] = [
            (
                "SET 10-record pool",
                lambda i: kvp.encode_set_request(0, f"key{i % SMALL}", f"new value {i}"),
                n_small,
            ),
            ("GET 10-record pool", lambda i: kvp.encode_get_request(0, f"key{i % SMALL}"), n_small),
            (
                "SET 5000-record pool",
                lambda i: kvp.encode_set_request(1, f"telemetry-{(i * 7919) % BIG:05d}", f"updated {i}"),
                n_big,
            ),
            (
                "GET 5000-record pool",
                lambda i: kvp.encode_get_request(1, f"telemetry-{(i * 7919) % BIG:05d}"),
                n_big,
            ),
            (
                "ENUMERATE auto pool",
                lambda i: kvp.encode_enumerate_request(2, i % 10),
                200 if quick else 1000,
            ),
        ]
        for name, make, n in runs:
            timed(d, make, 5, budget)  # warm up
            lat, wall = timed(d, make, n, budget)
            res.ops[name] = lat
            res.wall[name] = wall
        res.rss_kib = rss(d.proc.pid)
    finally:
        d.close()
    return res


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def report(ref: Result, ours: Result, release: str) -> int:
    print(f"\nKVP daemon benchmark: reference C daemon (Debian {release}) vs ours ({PYTHON})\n")
    head = f"{'':34} {'reference':>14} {'ours':>14} {'ours/ref':>9}"
    print(head)
    print("-" * len(head))
    misses = []

    def row(label: str, r: float, o: float, fmt: str = "{:.1f}") -> None:
        ratio = o / r if r else float("inf")
        print(f"{label:34} {fmt.format(r):>14} {fmt.format(o):>14} {ratio:>8.2f}x")

    r_reg, o_reg = statistics.median(ref.registered_ms), statistics.median(ours.registered_ms)
    row("start -> registered, median (ms)", r_reg, o_reg)
    for name in ref.ops:
        r, o = ref.ops[name], ours.ops[name]
        print(f"{name}  (n = {len(r)} / {len(o)})")
        row(
            "  median latency (us)",
            statistics.median(r) * 1e6,
            statistics.median(o) * 1e6,
            "{:.0f}",
        )
        row("  p99 latency (us)", pct(r, 0.99) * 1e6, pct(o, 0.99) * 1e6, "{:.0f}")
        r_ops, o_ops = len(r) / ref.wall[name], len(o) / ours.wall[name]
        row("  throughput (ops/s)", r_ops, o_ops, "{:.0f}")
        if (name == "SET 10-record pool" or name == "GET 10-record pool") and o_ops < r_ops:
            misses.append(f"{name}: {o_ops:.0f} ops/s < reference {r_ops:.0f}")
        if "5000" in name and o_ops < 5 * r_ops:
            misses.append(f"{name}: {o_ops / r_ops:.1f}x the reference, goal 5x")
    row("VmRSS after start (MiB)", ref.rss_start_kib / 1024, ours.rss_start_kib / 1024, "{:.1f}")
    row("VmRSS after workload (MiB)", ref.rss_kib / 1024, ours.rss_kib / 1024, "{:.1f}")
    if ours.rss_kib > 12 * 1024:
        misses.append(f"RSS {ours.rss_kib / 1024:.1f} MiB > 12 MiB")
    if o_reg > 150:
        misses.append(f"registered after {o_reg:.0f} ms > 150 ms")
    base = subprocess.run(
        [
            PYTHON,
            "-c",
            "import re;print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"\n(for scale: `{PYTHON} -c pass` has VmRSS {int(base) / 1024:.1f} MiB here)")
    print(
        "goals: throughput >= C (10 records), >= 5x C (5000 records), RSS <= 12 MiB, registered <= 150 ms"
    )
    for m in misses:
        print(f"  missed: {m}")
    if not misses:
        print("  all met")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="bookworm", choices=refdaemons.RELEASES)
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter for our daemon (needs cffi)"
    )
    args = p.parse_args()
    global PYTHON
    PYTHON = args.python
    refdaemons.ensure_reference()
    compileall.compile_dir(os.path.dirname(hvdaemons.__file__), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-kvp-") as tmp:
        ref = workload("ref", args.release, Path(tmp), args.quick)
        ours = workload("ours", args.release, Path(tmp), args.quick)
    return report(ref, ours, args.release)


if __name__ == "__main__":
    raise SystemExit(main())
