# SPDX-License-Identifier: GPL-2.0-only
"""Which test runs which line of the mutated module: coverage for test selection.

Loaded by the scratch copy's sitecustomize.py into every Python process the
coverage run starts (pytest, and the daemons and helpers the tests spawn,
which inherit PYTHONPATH from hvsim.launch.child_env), and as a pytest
plugin (-p cover) that names the running test in $HVMUT_TEST.  Each
process appends "test<TAB>line" the first time it sees a line of
$HVMUT_COVER_FILE, at once, so a process killed with SIGKILL (the pool's
crash tests) still reports what it ran.  Not used outside tests/mutation/run.py.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Optional

Tracer = Callable[[FrameType, str, Any], Optional["Tracer"]]


def start() -> None:
    target = os.environ.get("HVMUT_COVER_FILE")
    out = os.environ.get("HVMUT_COVER_OUT")
    if not target or not out:
        return
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    seen: set[tuple[str, int]] = set()
    unwritten = bytearray()

    def flush() -> None:
        # A test may make writes fail for a while (RLIMIT_FSIZE: EFBIG): what
        # could not be written goes with the next line, never raised into the
        # traced code (that would change what it does, and stop the tracing).
        try:
            while unwritten:
                del unwritten[: os.write(fd, unwritten)]
        except OSError:
            pass

    def local(frame: FrameType, event: str, _arg: Any) -> Tracer | None:
        # A module's top level starts at line 0: not a line.
        if event in ("line", "call") and frame.f_lineno > 0:
            key = (os.environ.get("HVMUT_TEST", ""), frame.f_lineno)
            if key not in seen:
                seen.add(key)
                unwritten.extend(f"{key[0]}\t{key[1]}\n".encode())
                flush()
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Tracer | None:
        if frame.f_code.co_filename == target:
            return local(frame, event, arg)
        return None

    atexit.register(flush)
    sys.settrace(calls)
    threading.settrace(calls)


def pytest_runtest_protocol(item: Any, nextitem: Any) -> None:
    os.environ["HVMUT_TEST"] = item.nodeid
    out = os.environ.get("HVMUT_COVER_OUT")
    if out:
        # Line 0: the test ran (the run order, and tests that cover nothing).
        with open(out, "a") as f:
            f.write(f"{item.nodeid}\t0\n")


_started: dict[str, float] = {}


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _started[nodeid] = time.monotonic()


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    os.environ["HVMUT_TEST"] = ""
    out = os.environ.get("HVMUT_COVER_OUT")
    if out:
        # Line -1: how long the test took (traced, so an upper bound).
        with open(out, "a") as f:
            f.write(f"{nodeid}\t-1\t{time.monotonic() - _started.get(nodeid, 0.0):.3f}\n")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """With $HVMUT_SELECT (a file of node ids, one a line), run only those tests.

    Ids are matched here rather than given on the command line: pytest
    cannot find a parametrized test again by an id it escaped (non-ASCII).
    """
    select = os.environ.get("HVMUT_SELECT")
    if not select:
        return
    with open(select) as f:
        wanted = set(f.read().splitlines())
    keep = [item for item in items if item.nodeid in wanted]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
    items[:] = keep
