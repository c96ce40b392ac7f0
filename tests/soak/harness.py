# SPDX-License-Identifier: GPL-2.0-only
"""The soak runner: a daemon under compressed mixed traffic, sampled, and judged for growth.

Mirrors nothing upstream: test harness.  A Target is one running daemon
(ours or Debian's reference C daemon) with its simulated device; a Workload
plays one operation group at a time against it (a few host requests, a
backup cycle, a file copy), checking each answer, and timing every request
from the host side.  Between groups, when the daemon has answered
everything, the runner samples the daemon's process: open descriptors
(/proc/PID/fd), VmRSS and RssAnon, threads.  Disruptions (device loss and
reconnect, one daemon restart) come on a schedule.

The criterion (judge) is built for a loaded, shared machine:

* descriptors and threads are exact: after the first tenth of the run, every
  quiet sample must be back at the baseline (the runner waits up to
  SETTLE seconds for a daemon still closing things after its reply), and a
  restarted daemon must settle at the same baseline;
* memory after the warm-up: the median of the last window may exceed the
  median of the first window by RSS_MARGIN_KIB at most (VmRSS and RssAnon);
* latency after the warm-up: per kind of request, the median of the last
  window at most LATENCY_RATIO times the first window's (medians below
  LATENCY_FLOOR count as the floor: sub-millisecond jitter is not growth).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

SETTLE = 3.0  # s a daemon may take to close what a request opened (a hang guard)
FD_START = 0.10  # fraction of the run after which descriptors must sit at the baseline
WARMUP = 0.35  # fraction of the run before the first memory/latency window
WINDOW = 0.20  # fraction of the run in each compared window
RSS_MARGIN_KIB = 2048
LATENCY_RATIO = 4.0
LATENCY_FLOOR = 0.005  # s


@dataclasses.dataclass(frozen=True)
class ProcStat:
    fds: int
    rss_kib: int
    anon_kib: int
    threads: int


def proc_stat(pid: int) -> ProcStat:
    """One look at a process; OSError (ENOENT) if it is gone."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "Threads"):
                fields[name] = int(value.split()[0])
    return ProcStat(fds, fields["VmRSS"], fields["RssAnon"], fields["Threads"])


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float  # seconds into the run
    pid: int
    stat: ProcStat
    requests: int  # host requests sent so far


@dataclasses.dataclass(frozen=True)
class Timing:
    t: float
    kind: str
    seconds: float


class Target(Protocol):
    """One daemon on its simulated device."""

    label: str  # e.g. "kvp/ours", "vss/bookworm"

    @property
    def pid(self) -> int: ...

    def alive(self) -> bool: ...

    def restart(self) -> None: ...

    def log_tail(self, n: int = 20) -> list[str]: ...


class Workload(Protocol):
    """Plays traffic against a target through a Soak (which times each request)."""

    def step(self, soak: Soak, rng: random.Random) -> None:
        """One operation group; returns once the daemon has answered all of it."""

    def disrupt(self, soak: Soak, rng: random.Random) -> None:
        """Device loss and reconnect; returns once the daemon is serving again."""


class DaemonDied(Exception):
    pass


@dataclasses.dataclass
class Result:
    label: str
    seconds: float
    requests: int
    samples: list[Sample]
    timings: list[Timing]
    counts: Counter[str]  # operation groups and disruptions, by name
    errors: Counter[str]  # unexpected answers, by what was wrong
    error_examples: dict[str, str]
    died: str = ""  # why and when the daemon died (the C daemons may)
    restarts: int = 0

    def figures(self) -> dict[str, object]:
        """What docs/robustness.md reports."""
        quiet = [s for s in self.samples if s.t >= self.seconds * WARMUP]
        first, last = windows(self.samples, self.seconds)
        out: dict[str, object] = {
            "label": self.label,
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "rate": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "restarts": self.restarts,
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "died": self.died,
            "samples": len(self.samples),
        }
        if quiet:
            out["fds"] = sorted({s.stat.fds for s in quiet})
            out["threads"] = sorted({s.stat.threads for s in quiet})
        if first and last:
            out["rss_kib"] = [_median_of(first, "rss_kib"), _median_of(last, "rss_kib")]
            out["anon_kib"] = [_median_of(first, "anon_kib"), _median_of(last, "anon_kib")]
        lat = {}
        for kind, (a, b) in latency_windows(self.timings, self.seconds).items():
            if a and b:
                lat[kind] = [
                    round(statistics.median(a) * 1000, 2),
                    round(statistics.median(b) * 1000, 2),
                ]
        out["latency_ms"] = lat
        return out


def _median_of(samples: Sequence[Sample], field: str) -> int:
    return int(statistics.median(getattr(s.stat, field) for s in samples))


def windows(samples: Sequence[Sample], seconds: float) -> tuple[list[Sample], list[Sample]]:
    """The samples of the first window after the warm-up and of the last window."""
    a0, a1 = seconds * WARMUP, seconds * (WARMUP + WINDOW)
    b0 = seconds * (1 - WINDOW)
    return [s for s in samples if a0 <= s.t < a1], [s for s in samples if s.t >= b0]


def latency_windows(
    timings: Sequence[Timing], seconds: float
) -> dict[str, tuple[list[float], list[float]]]:
    a0, a1 = seconds * WARMUP, seconds * (WARMUP + WINDOW)
    b0 = seconds * (1 - WINDOW)
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for t in timings:
        if a0 <= t.t < a1:
            out[t.kind][0].append(t.seconds)
        elif t.t >= b0:
            out[t.kind][1].append(t.seconds)
    return dict(out)


def judge(result: Result) -> list[str]:
    """Every growth found, as sentences; empty when the daemon stayed flat."""
    problems: list[str] = []
    if result.died:
        problems.append(f"the daemon died: {result.died}")
    steady = [s for s in result.samples if s.t >= result.seconds * FD_START]
    if steady:
        for name in ("fds", "threads"):
            base = getattr(steady[0].stat, name)
            off = [s for s in steady if getattr(s.stat, name) != base]
            if off:
                worst = max(off, key=lambda s: abs(getattr(s.stat, name) - base))
                problems.append(
                    f"{name}: {len(off)} of {len(steady)} quiet samples off the baseline {base}, "
                    f"e.g. {getattr(worst.stat, name)} at {worst.t:.1f} s"
                )
    first, last = windows(result.samples, result.seconds)
    if len(first) < 3 or len(last) < 3:
        problems.append(f"too few samples to judge memory ({len(first)}, {len(last)})")
    else:
        for name in ("rss_kib", "anon_kib"):
            a, b = _median_of(first, name), _median_of(last, name)
            if b - a > RSS_MARGIN_KIB:
                problems.append(
                    f"{name}: median {a} KiB early, {b} KiB at the end (+{b - a} KiB, "
                    f"margin {RSS_MARGIN_KIB})"
                )
    for kind, (a_l, b_l) in sorted(latency_windows(result.timings, result.seconds).items()):
        if len(a_l) < 5 or len(b_l) < 5:
            continue
        early = max(statistics.median(a_l), LATENCY_FLOOR)
        late = max(statistics.median(b_l), LATENCY_FLOOR)
        if late / early > LATENCY_RATIO:
            problems.append(
                f"latency of {kind}: median {early * 1000:.1f} ms early, {late * 1000:.1f} ms at "
                f"the end (x{late / early:.1f}, limit x{LATENCY_RATIO})"
            )
    return problems


class Soak:
    """One run: the clock, the request timer, the sampler, the printed progress."""

    def __init__(self, target: Target, seconds: float, *, print_every: float) -> None:
        self.target = target
        self.seconds = seconds
        self.print_every = print_every
        self.t0 = time.monotonic()
        self.requests = 0
        self.samples: list[Sample] = []
        self.timings: list[Timing] = []
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}
        self._baseline: ProcStat | None = None
        self._unsettled = False  # once off the baseline, stop waiting: it is recorded
        self._printed = 0.0
        self._since_print = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def timed(self, kind: str, request: Callable[[], object]) -> object:
        """Send one host request; its answer.  The time is the host's, send to reply."""
        t = time.perf_counter()
        answer = request()
        self.timings.append(Timing(self.now(), kind, time.perf_counter() - t))
        self.requests += 1
        return answer

    def expect(self, ok: bool, what: str, detail: object = "") -> bool:
        """Count an unexpected answer (the reference daemons' runs report them, ours fail)."""
        if not ok:
            self.errors[what] += 1
            if what not in self.error_examples:
                # The daemon's last lines, for the first of each kind (the run goes on).
                tail = "\n    ".join(self.target.log_tail(12))
                self.error_examples[what] = f"{detail} at {self.now():.1f} s; log:\n    {tail}"
        return ok

    def sample(self) -> None:
        """Look at the daemon at a quiet point (every request answered)."""
        pid = self.target.pid
        try:
            st = proc_stat(pid)
            if self.now() >= self.seconds * FD_START:
                if self._baseline is None:
                    self._baseline = st
                else:
                    st = self._settle(pid, st)
        except OSError as e:
            raise DaemonDied(f"cannot read /proc/{pid}: {e.strerror}") from e
        self.samples.append(Sample(self.now(), pid, st, self.requests))

    def _settle(self, pid: int, st: ProcStat) -> ProcStat:
        """Wait (SETTLE at most) for the descriptors and threads to come back to the baseline."""
        assert self._baseline is not None
        deadline = time.monotonic() + SETTLE
        while (st.fds, st.threads) != (self._baseline.fds, self._baseline.threads):
            if self._unsettled or time.monotonic() >= deadline:
                self._unsettled = True
                break
            time.sleep(0.02)
            st = proc_stat(pid)
        return st

    def progress(self, *, force: bool = False) -> None:
        if not self.samples:
            return
        t = self.now()
        if not force and t - self._printed < self.print_every:
            return
        s = self.samples[-1]
        recent = [x.seconds for x in self.timings if x.t >= self._printed]
        p50 = statistics.median(recent) * 1000 if recent else 0.0
        p95 = sorted(recent)[int(len(recent) * 0.95)] * 1000 if recent else 0.0
        rate = (self.requests - self._since_print) / max(t - self._printed, 1e-9)
        print(
            f"[{self.target.label}] {t:7.1f} s  pid {s.pid}  fds {s.stat.fds}  "
            f"rss {s.stat.rss_kib / 1024:.1f} MiB  anon {s.stat.anon_kib / 1024:.1f} MiB  "
            f"threads {s.stat.threads}  requests {self.requests} ({rate:.0f}/s)  "
            f"p50 {p50:.2f} ms  p95 {p95:.2f} ms",
            flush=True,
        )
        self._printed = t
        self._since_print = self.requests


def run(
    target: Target,
    workload: Workload,
    seconds: float,
    *,
    seed: int = 1,
    sample_every: float = 0.25,
    print_every: float = 5.0,
    disrupt_every: float = 4.0,
    restart_at: Sequence[float] = (0.25,),
) -> Result:
    """Play workload against target for `seconds`; everything seen, for judge()."""
    rng = random.Random(seed)
    soak = Soak(target, seconds, print_every=print_every)
    restarts = sorted(restart_at)
    next_sample = next_disrupt = 0.0
    next_disrupt = disrupt_every
    done_restarts = 0
    died = ""
    try:
        while soak.now() < seconds:
            if not target.alive():
                raise DaemonDied("exited")
            t = soak.now()
            if done_restarts < len(restarts) and t >= restarts[done_restarts] * seconds:
                done_restarts += 1
                soak.counts["restart"] += 1
                target.restart()
            elif t >= next_disrupt:
                next_disrupt = t + disrupt_every
                soak.counts["device loss"] += 1
                workload.disrupt(soak, rng)
            else:
                workload.step(soak, rng)
            if soak.now() >= next_sample:
                next_sample = soak.now() + sample_every
                soak.sample()
                soak.progress()
    except DaemonDied as e:
        died = f"{e} at {soak.now():.1f} s; last log lines: {target.log_tail(8)}"
    except Exception as e:
        if target.alive():
            raise
        died = f"{type(e).__name__} ({e}) at {soak.now():.1f} s, the daemon gone; last log lines: {target.log_tail(8)}"
    soak.progress(force=True)
    result = Result(
        target.label,
        soak.now(),
        soak.requests,
        soak.samples,
        soak.timings,
        soak.counts,
        soak.errors,
        soak.error_examples,
        died,
        done_restarts,
    )
    report = os.environ.get("HVDAEMONS_SOAK_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({**result.figures(), "problems": judge(result)}) + "\n")
    print(json.dumps(result.figures()), file=sys.stdout, flush=True)
    return result


def seconds_from_env(default: float) -> float:
    """HVDAEMONS_SOAK_SECONDS overrides a run's length (per daemon)."""
    value = os.environ.get("HVDAEMONS_SOAK_SECONDS", "").strip()
    return float(value) if value else default
