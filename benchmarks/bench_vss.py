# SPDX-License-Identifier: GPL-2.0-only
"""VSS freeze/thaw latency: our hv_vss_daemon against Debian's reference C daemons.

Mirrors nothing upstream: a benchmark.  For 1 and 8 filesystems, in one
FsBox (a private mount namespace holding only loop-mounted ext4 test images,
verified before anything is frozen), ours and the reference daemons of
bookworm and trixie run side by side, each on its own simulated
/dev/vmbus/hv_vss, and are driven in turn by the same Python host:

* freeze-to-reply and thaw-to-reply: host send to reply received (median,
  p90) over --rounds rounds, the daemons interleaved round by round so that
  noise hits them alike; every round checks (second FIFREEZE probe) that all
  N filesystems were frozen and thawed;
* SIGTERM while frozen: time from the signal until every filesystem is
  thawed (probed every millisecond or so), and until the process is gone.

Equal work: the reference skips every filesystem on a loop device, and all
test filesystems are loop-mounted.  The box is therefore built without
sysfs, where the reference's loop check sees plain block devices: both
daemons then freeze the same N filesystems (checked), as they would freeze
N disk partitions on a real guest.

Each size is measured twice: idle filesystems (the daemon's own overhead
dominates: FIFREEZE of a clean filesystem takes some 25 us) and with
--dirty-kib of unwritten data per filesystem, written by the harness while
everything is thawed (the flush dominates, as on a guest in use).

  python3 benchmarks/bench_vss.py [--rounds 60] [--counts 1,8] [--sigterm 5] [--dirty-kib 1024]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

# The tests package from this checkout; hvdaemons and hvsim from the installed
# packages (appended: the checkout itself has no compiled modules).
sys.path.append(str(Path(__file__).resolve().parent.parent))

from hvsim.fsbox import FsBox, FsSpec
from tests.support.vss_sandbox import REFERENCES, Daemon

KINDS = ("ours", *REFERENCES)


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.9))]


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


def latency(
    box: FsBox, n: int, rounds: int, kib: int = 0
) -> dict[str, tuple[list[float], list[float]]]:
    mps = box.image_mount_points()
    daemons = {k: Daemon(box, k) for k in KINDS}
    result: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in KINDS}
    try:
        for i in range(rounds + 3):
            order = KINDS[i % len(KINDS) :] + KINDS[: i % len(KINDS)]
            for k in order:
                host = daemons[k].host
                daemons[k].log_lines(0.0001)  # keep its stderr pipe drained
                dirty(box, kib)
                fr = host.freeze()
                if not fr.ok:
                    raise RuntimeError(f"{k}: FREEZE failed")
                frozen = box.frozen(mps)
                if len(frozen) != n:
                    raise RuntimeError(f"{k} froze {len(frozen)} of {n} filesystems")
                th = host.thaw()
                if not th.ok or box.frozen(mps):
                    raise RuntimeError(f"{k}: THAW failed")
                if i >= 3:  # warm-up rounds are not counted
                    result[k][0].append(fr.seconds)
                    result[k][1].append(th.seconds)
    finally:
        for d in daemons.values():
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            d.close()
    return result


def sigterm(box: FsBox, kind: str) -> tuple[float | None, float]:
    """(seconds until all thawed, None if left frozen; seconds until the process was gone).

    Ours reports the thaw on stderr right after its last FITHAW; that line's
    arrival times the thaw without probing while it happens.  A probe after
    the process is gone checks the outcome either way.
    """
    mps = box.image_mount_points()
    with Daemon(box, kind, tag=f"{kind}-term") as d:
        if not d.host.freeze().ok or len(box.frozen(mps)) != len(mps):
            raise RuntimeError(f"{kind}: FREEZE failed")
        assert d.proc is not None and d.logs is not None
        d.log_lines(0.05)  # consume the start-up lines
        t0 = time.perf_counter()
        d.proc.send_signal(signal.SIGTERM)
        thawed_at: float | None = None
        if kind == "ours":
            d.logs.wait_for("while frozen: thawed", 10)
            thawed_at = time.perf_counter() - t0
        d.proc.wait(10)
        exited_at = time.perf_counter() - t0
        left = box.frozen(mps)
        if left:
            thawed_at = None
            box.thaw(mps)  # the reference leaves them frozen
        d.stop()
        return thawed_at, exited_at


def dirty(box: FsBox, kib: int) -> None:
    """Give every (thawed, idle) filesystem kib KiB of unwritten data to flush at FREEZE."""
    if kib:
        res = box.call("dirty", paths=box.image_mount_points(), kib=kib)["result"]
        if set(res.values()) != {"dirty"}:
            raise RuntimeError(f"cannot dirty the filesystems: {res}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--counts", default="1,8")
    ap.add_argument("--sigterm", type=int, default=5, help="SIGTERM-while-frozen repetitions")
    ap.add_argument(
        "--dirty-kib",
        type=int,
        default=1024,
        help="unwritten data per filesystem for the second run",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_vss: needs root (mount namespaces, loop devices, FIFREEZE)")
        return 1

    print("VSS freeze/thaw latency, host send -> daemon reply, ms (median / p90)")
    print("box without sysfs: the reference's loop-device skip is blind, both freeze the same N")
    worst_term = 0.0
    for n in (int(c) for c in args.counts.split(",")):
        with FsBox([FsSpec(f"fs{i}", size_mb=64) for i in range(n)], sysfs=False) as box:
            for kib in (0, args.dirty_kib):
                res = latency(box, n, args.rounds, kib)
                what = f"{kib} KiB unwritten data each" if kib else "idle"
                print(f"\n{n} filesystem(s), {what}, {args.rounds} rounds")
                print(f"  {'daemon':10} {'freeze med':>10} {'p90':>8} {'thaw med':>10} {'p90':>8}")
                for k in KINDS:
                    fr, th = res[k]
                    print(
                        f"  {k:10} {ms(statistics.median(fr)):>10} {ms(p90(fr)):>8}"
                        f" {ms(statistics.median(th)):>10} {ms(p90(th)):>8}"
                    )
                fo, to = (statistics.median(x) for x in res["ours"])
                for ref in REFERENCES:
                    fr_, tr = (statistics.median(x) for x in res[ref])
                    print(
                        f"  ratio ours/{ref}: freeze {fo / fr_:.2f}x, thaw {to / tr:.2f}x"
                        " (below 1: ours faster)"
                    )
            print(f"\n{n} filesystem(s) frozen, then SIGTERM to the daemon:")
            for k in KINDS:
                runs = [sigterm(box, k) for _ in range(args.sigterm if k == "ours" else 1)]
                exits = [e for _, e in runs]
                thaws = [t for t, _ in runs]
                if all(t is not None for t in thaws):
                    tt = [t for t in thaws if t is not None]
                    worst_term = max(worst_term, max(tt))
                    print(
                        f"  {k:10} all thawed after {ms(statistics.median(tt))} ms"
                        f" (max {ms(max(tt))}, {len(tt)} runs),"
                        f" process gone after {ms(statistics.median(exits))} ms"
                    )
                else:
                    print(
                        f"  {k:10} process gone after {ms(statistics.median(exits))} ms,"
                        " filesystems LEFT FROZEN (thawed by the harness)"
                    )
    goal = "met" if worst_term < 1.0 else "MISSED"
    print(
        f"\ngoal 'every filesystem thawed within 1 s of SIGTERM': {goal} (worst {worst_term * 1000:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
