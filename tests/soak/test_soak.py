# SPDX-License-Identifier: GPL-2.0-only
"""Soak: each real daemon under compressed mixed traffic, its descriptors, memory and latency flat.

The default run is bounded (about 20 s per daemon, plus two runs proving the
criterion catches planted leaks); `tox -e soak` runs each of our daemons for
20 minutes and Debian's reference C daemons for the comparison column
(HVDAEMONS_SOAK_SECONDS sets the length per daemon, HVDAEMONS_SOAK_REPORT a
file that gets every run's figures as JSON lines).  See tests/soak/harness.py
for the criterion and docs/robustness.md for the figures.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hvsim.fcopy import FcopyHost
from tests.support.vss_sandbox import STACKED, sandbox

from . import harness
from .fcopy import FcopyTraffic
from .harness import ProcStat, Result, Sample, Timing, judge
from .kvp import KvpTraffic
from .targets import ChardevTarget, UioTarget, VssTarget, require_reference
from .vss import DEADLINE, REFERENCE_BOX, VssTraffic

BOUNDED = 20.0
LONG = 20 * 60.0
LONG_REFERENCE = 10 * 60.0
# Long runs look less often; the criterion's windows are fractions of the run.


def long_pace(seconds: float) -> dict[str, float]:
    """The long soak's pace, kept to 100 samples and 5 disruptions or more in a
    shortened run (HVDAEMONS_SOAK_SECONDS), so that its windows can still be judged."""
    return {
        "sample_every": min(2.0, seconds / 100),
        "print_every": min(60.0, seconds / 10),
        "disrupt_every": min(20.0, seconds / 5),
    }


@contextmanager
def kvp_soak(
    tmp: Path, kind: str = "ours", plant: str | None = None
) -> Iterator[tuple[ChardevTarget, KvpTraffic]]:
    target = ChardevTarget(tmp, "kvp", kind, plant=plant)
    try:
        yield target, KvpTraffic(target)
    finally:
        target.close()


@contextmanager
def fcopy_soak(tmp: Path, kind: str = "ours") -> Iterator[tuple[ChardevTarget, FcopyTraffic]]:
    target = ChardevTarget(tmp, "fcopy", kind)
    try:
        host = FcopyHost(target.kernel)
        yield target, FcopyTraffic(host, tmp / "dest", target.reconnect, ours=kind == "ours")
    finally:
        target.close()


@contextmanager
def uio_soak(tmp: Path) -> Iterator[tuple[UioTarget, FcopyTraffic]]:
    target = UioTarget(tmp)

    def rescind_and_reoffer() -> bool:
        target.sim.rescind()
        target.sim.offer()
        target.connect()
        return True

    try:
        yield target, FcopyTraffic(target.host, tmp / "dest", rescind_and_reoffer, ours=True)
    finally:
        target.close()


@contextmanager
def vss_soak(kind: str = "ours") -> Iterator[tuple[VssTarget, VssTraffic]]:
    ours = kind == "ours"
    with sandbox(STACKED if ours else REFERENCE_BOX, sysfs=ours) as box:
        extra = ["--thaw-deadline", str(DEADLINE)] if ours else []
        target = VssTarget(box, kind, extra=extra)
        try:
            yield target, VssTraffic(target, box)
        finally:
            target.close()


def soak(
    target: harness.Target, traffic: harness.Workload, seconds: float, **pace: float
) -> Result:
    result = harness.run(target, traffic, seconds, **pace)  # type: ignore[arg-type]
    assert result.requests > 0, "no traffic was sent"
    return result


def assert_flat(result: Result) -> None:
    assert not result.errors, f"unexpected answers: {result.error_examples}"
    problems = judge(result)
    assert not problems, "\n".join(problems)
    assert result.restarts >= 1 and result.counts["device loss"] >= 1


# -- the bounded soak of our daemons ---------------------------------------------------------


def test_kvp_soak(tmp_path: Path) -> None:
    with kvp_soak(tmp_path) as (target, traffic):
        assert_flat(soak(target, traffic, harness.seconds_from_env(BOUNDED)))


def test_vss_soak() -> None:
    with vss_soak() as (target, traffic):
        result = soak(target, traffic, harness.seconds_from_env(BOUNDED))
    assert_flat(result)
    assert result.counts["never thawed"] >= 1


def test_fcopy_chardev_soak(tmp_path: Path) -> None:
    with fcopy_soak(tmp_path) as (target, traffic):
        traffic.large = 1024 * 1024
        assert_flat(soak(target, traffic, harness.seconds_from_env(BOUNDED)))


def test_fcopy_uio_soak(tmp_path: Path) -> None:
    with uio_soak(tmp_path) as (target, traffic):
        traffic.large = 1024 * 1024
        assert_flat(soak(target, traffic, harness.seconds_from_env(BOUNDED)))


# -- the criterion has teeth: planted leaks are caught ---------------------------------------


@pytest.mark.parametrize(("plant", "caught"), [("fd", "fds:"), ("mem", "rss_kib:")])
def test_a_planted_leak_is_caught(tmp_path: Path, plant: str, caught: str) -> None:
    with kvp_soak(tmp_path, plant=plant) as (target, traffic):
        result = soak(target, traffic, 15.0)
    assert not result.errors, result.error_examples  # the daemon still works...
    problems = judge(result)
    assert any(p.startswith(caught) for p in problems), problems  # ...but it grows


def _result(fds: list[int], rss: list[int], lat: list[float], seconds: float = 100.0) -> Result:
    n = len(fds)
    samples = [
        Sample(seconds * i / n, 1, ProcStat(fds[i], rss[i], rss[i] // 2, 1), i) for i in range(n)
    ]
    timings = [Timing(seconds * i / len(lat), "get", lat[i]) for i in range(len(lat))]
    return Result("synthetic", seconds, n, samples, timings, Counter(), Counter(), {})


def test_the_criterion_on_known_series() -> None:
    rng = random.Random(3)
    n = 200
    flat_rss = [30_000 + rng.randrange(-800, 800) for _ in range(n)]
    noisy_lat = [0.002 * rng.choice((1, 1, 1, 2, 8)) for _ in range(n)]  # a loaded machine
    assert judge(_result([9] * n, flat_rss, noisy_lat)) == []
    # One descriptor kept in the last tenth.
    fds = [9] * (n - 20) + [10] * 20
    assert [p.split(":")[0] for p in judge(_result(fds, flat_rss, noisy_lat))] == ["fds"]
    # 60 KiB a sample: 12 MiB over the run, 5 MiB between the windows' medians.
    growing = [flat_rss[i] + 60 * i for i in range(n)]
    assert [p.split(":")[0] for p in judge(_result([9] * n, growing, noisy_lat))] == [
        "rss_kib",
        "anon_kib",
    ]
    # Requests getting slower and slower.
    slower = [0.001 * 1.02**i for i in range(n)]
    assert [p.split(":")[0] for p in judge(_result([9] * n, flat_rss, slower))] == [
        "latency of get"
    ]
    # A noisy but bounded warm-up is not growth.
    warm = [20_000 + min(i, 30) * 300 for i in range(n)]
    assert judge(_result([9] * n, warm, noisy_lat)) == []


# -- the long soak, and the reference C daemons beside ours (tox -e soak) -------------------


@pytest.mark.soak
@pytest.mark.parametrize("daemon", ["kvp", "vss", "fcopy-chardev", "fcopy-uio"])
def test_long_soak(tmp_path: Path, daemon: str) -> None:
    seconds = harness.seconds_from_env(LONG)
    if daemon == "kvp":
        with kvp_soak(tmp_path) as (target, traffic):
            result = soak(target, traffic, seconds, **long_pace(seconds))
    elif daemon == "vss":
        with vss_soak() as (vtarget, vtraffic):
            result = soak(vtarget, vtraffic, seconds, **long_pace(seconds))
    elif daemon == "fcopy-chardev":
        with fcopy_soak(tmp_path) as (target, ftraffic):
            result = soak(target, ftraffic, seconds, **long_pace(seconds))
    else:
        with uio_soak(tmp_path) as (utarget, utraffic):
            result = soak(utarget, utraffic, seconds, **long_pace(seconds))
    assert_flat(result)


REFERENCE_RUNS = [
    ("kvp", "bookworm"),
    ("kvp", "trixie"),
    ("vss", "bookworm"),
    ("vss", "trixie"),
    ("fcopy", "bookworm"),
]


@pytest.mark.soak
@pytest.mark.parametrize(("daemon", "release"), REFERENCE_RUNS)
def test_reference_soak(tmp_path: Path, daemon: str, release: str) -> None:
    """The same soak against Debian's C daemon: a measurement for the comparison column.

    What the C daemon does (dies, answers wrongly, grows) is recorded in the
    figures (HVDAEMONS_SOAK_REPORT) and printed, not failed: only a soak that
    could not run at all fails here.
    """
    require_reference()
    seconds = harness.seconds_from_env(LONG_REFERENCE)
    if daemon == "kvp":
        with kvp_soak(tmp_path, release) as (target, traffic):
            result = soak(target, traffic, seconds, **long_pace(seconds))
    elif daemon == "vss":
        with vss_soak(release) as (vtarget, vtraffic):
            result = soak(vtarget, vtraffic, seconds, **long_pace(seconds))
    else:
        with fcopy_soak(tmp_path, release) as (target, ftraffic):
            result = soak(target, ftraffic, seconds, **long_pace(seconds))
    print(f"{result.label}: problems {judge(result)}; unexpected answers {result.error_examples}")
    assert result.samples or result.died, "the reference daemon was never sampled"
