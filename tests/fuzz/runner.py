# SPDX-License-Identifier: GPL-2.0-only
"""The shared runner of the daemons' sequence fuzzers.

Mirrors nothing upstream: test harness.  A daemon's fuzzer is a Hypothesis
RuleBasedStateMachine (one example = one fresh daemon and a sequence of
messages and events, every step checked against a model) plus a Rig that
holds what the examples share (a sandbox, a simulated device) and counts the
messages sent.  This module runs such a machine for a message budget:
seeded, reproducible, shrinking on failure (Hypothesis prints the minimal
failing program), and it reports what it ran.

Knobs, for a person chasing a failure (the defaults are the tests'; tox
passes HVDAEMONS_* through):

* HVDAEMONS_FUZZ_SEED: the first seed (each further batch uses the next one);
* HVDAEMONS_FUZZ_MESSAGES: the message budget of the run;
* HVDAEMONS_FUZZ_REPORT: a file to append the run's summary to, as one JSON line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol, TypeVar

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from hvsim import launch

T = TypeVar("T")

# Time a daemon gets to do what it must do by itself (register, reopen, exit):
# a hang guard, generous for a loaded 2-core machine; never a measurement.
GUARD = 30.0


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, each as often as its weight says.

    Hypothesis picks rules and sampled_from() elements uniformly; repeating
    a strategy in the list weights it.  Shrinking moves towards the first.
    """
    pool = [s for weight, s in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda s: s)


class Rig(Protocol):
    """What the examples of one fuzz run share."""

    name: str
    messages: int  # host-to-daemon messages sent so far, over all examples
    examples: int  # examples (fresh daemons) started so far
    stats: Mapping[str, int]  # what the examples did, by kind (the run's figures)


@dataclasses.dataclass
class Summary:
    """What one fuzz run did."""

    daemon: str
    seeds: list[int]
    messages: int
    examples: int
    seconds: float
    steps_per_example: int
    extra: dict[str, int] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds else 0.0
        seeds = f"{self.seeds[0]}..{self.seeds[-1]}" if len(self.seeds) > 1 else str(self.seeds[0])
        extra = "".join(f", {k} {v}" for k, v in sorted(self.extra.items()))
        return (
            f"{self.daemon} fuzz: {self.messages} messages in {self.examples} examples, "
            f"{self.seconds:.1f} s ({rate:.0f}/s), seeds {seeds}{extra}"
        )


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


R = TypeVar("R", bound=Rig)


def run_budget(
    rig: AbstractContextManager[R],
    machine: Callable[[R], RuleBasedStateMachine],
    *,
    messages: int,
    seed: int,
    steps: int,
    examples_per_seed: int,
) -> R:
    """One fuzz run as the tests run it: in a fresh rig, its summary printed, the
    message budget (or HVDAEMONS_FUZZ_MESSAGES) reached.  Returns the rig, for its stats."""
    with rig as r:
        summary = fuzz(
            r,
            lambda: machine(r),
            messages=messages,
            seed=seed,
            steps=steps,
            examples_per_seed=examples_per_seed,
            stats=lambda: dict(r.stats),
        )
    print(summary.line())
    assert summary.messages >= env_int("HVDAEMONS_FUZZ_MESSAGES", messages)
    return r


def fuzz(
    rig: Rig,
    machine: Callable[[], RuleBasedStateMachine],
    *,
    messages: int,
    seed: int,
    steps: int,
    examples_per_seed: int = 20,
    stats: Callable[[], dict[str, int]] = dict,
) -> Summary:
    """Run machine's examples until rig has sent at least `messages` messages.

    Each batch of examples_per_seed examples runs under its own seed (seed,
    seed + 1, ...), so a failure names the one seed that reproduces it.
    HVDAEMONS_FUZZ_SEED and HVDAEMONS_FUZZ_MESSAGES override seed and messages.
    """
    seed = env_int("HVDAEMONS_FUZZ_SEED", seed)
    messages = env_int("HVDAEMONS_FUZZ_MESSAGES", messages)
    config = settings(
        max_examples=examples_per_seed,
        stateful_step_count=steps,
        deadline=None,
        database=None,  # reproduce by seed, not from a directory of old failures
        derandomize=False,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    t0 = time.monotonic()
    used: list[int] = []
    for current in _seeds(seed):
        if rig.messages >= messages:
            break
        used.append(current)

        def factory() -> RuleBasedStateMachine:
            return machine()

        try:
            run_state_machine_as_test(hypothesis.seed(current)(factory), settings=config)
        except BaseException:
            # Hypothesis has printed the shrunk program; this says how to get it again.
            print(
                f"{rig.name} fuzz: failed under HVDAEMONS_FUZZ_SEED={current} "
                f"after {rig.messages} messages in {rig.examples} examples",
                file=sys.stderr,
            )
            raise
    summary = Summary(
        rig.name, used, rig.messages, rig.examples, time.monotonic() - t0, steps, stats()
    )
    path = os.environ.get("HVDAEMONS_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dataclasses.asdict(summary)) + "\n")
    return summary


def _seeds(first: int) -> Iterator[int]:
    n = first
    while True:
        yield n
        n += 1


class LogTail:
    """A daemon's stderr, read without blocking, split into lines."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        self.lines: list[str] = []
        self.eof = False

    def poll(self, timeout: float = 0.0) -> None:
        if self.eof:
            return
        if timeout > 0:
            select.select([self._fd], [], [], timeout)
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            data = self._partial + chunk
            *done, self._partial = data.split(b"\n")
            self.lines.extend(x.decode(errors="replace") for x in done)

    def count(self, needle: str) -> int:
        return sum(needle in x for x in self.lines)

    def wait_count(self, needle: str, n: int, timeout: float = GUARD) -> bool:
        """Wait until n lines contain needle; False at the hang guard."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if self.count(needle) >= n:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return False
            self.poll(min(left, 0.5))


def until(predicate: Callable[[], bool], timeout: float = GUARD) -> bool:
    """Poll predicate (a cheap look at /proc or the simulator) until true; False at the guard."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


class DaemonProcess:
    """One daemon, its stderr tailed, its descriptors visible.

    popen: how to start it (default hvsim.launch.popen; the VSS fuzzer's
    starts it inside its sandbox).
    """

    def __init__(
        self, argv: list[str], popen: Callable[..., subprocess.Popen[Any]] = launch.popen
    ) -> None:
        self.proc = popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self.proc.stderr is not None
        self.log = LogTail(self.proc.stderr.fileno())

    def fds(self) -> dict[int, str]:
        """Its open descriptors and what they are (readlink of /proc/PID/fd/N)."""
        out = {}
        base = f"/proc/{self.proc.pid}/fd"
        for name in os.listdir(base):
            with contextlib.suppress(FileNotFoundError):
                out[int(name)] = os.readlink(f"{base}/{name}")
        return out

    def wait(self, timeout: float = GUARD) -> int | None:
        """The exit status once the process is gone and its log read; None at the guard."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        deadline = time.monotonic() + timeout
        while not self.log.eof and time.monotonic() < deadline:
            self.log.poll(0.2)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


# -- steps every fuzzer shares -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hangup:
    """The device goes away under the daemon and is back at once."""


@dataclasses.dataclass(frozen=True)
class Restart:
    """SIGTERM (clean stop, exit 0) or SIGKILL, then a new daemon."""

    signum: int

    def __repr__(self) -> str:
        return f"Restart({signal.Signals(self.signum).name})"
