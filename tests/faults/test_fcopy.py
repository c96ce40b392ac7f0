# SPDX-License-Identifier: GPL-2.0-only
"""hv_fcopy_daemon (char device) under faults, ours beside Debian bookworm's reference C daemon.

The host vanishing mid-copy and SIGKILL after each step of a copy.  Each test
asserts what ours does and what the C daemon was seen to do (see
docs/robustness.md).  The uio ring's rescind mid-copy is
tests/fcopy/test_uio.py::test_rescind_mid_copy_and_reoffer; the full disk
is tests/fcopy/test_reference.py::test_disk_full.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hvdaemons.protocol.fcopy import CREATE_PATH, DATA_FRAGMENT, OVER_WRITE
from hvdaemons.protocol.status import HvStatus
from hvsim.fcopy import FcopyHost
from tests.soak.targets import ChardevTarget
from tests.support.fcopy import wait_for

KINDS = ["ours", "bookworm"]
DATA = bytes(range(256)) * (3 * DATA_FRAGMENT // 256)  # three fragments


@contextmanager
def daemon(tmp: Path, kind: str) -> Iterator[tuple[ChardevTarget, FcopyHost]]:
    target = ChardevTarget(tmp, "fcopy", kind, timeout=5.0)
    # The C daemon's CREATE_PATH creates the directories before the last "/" only.
    (tmp / "dest").mkdir()
    try:
        yield target, FcopyHost(target.kernel)
    finally:
        target.close()


def _half_copy(host: FcopyHost, dest: Path) -> None:
    assert host.start("f.bin", str(dest), CREATE_PATH, len(DATA)) == HvStatus.S_OK
    assert host.write(0, DATA[:DATA_FRAGMENT]) == HvStatus.S_OK


def _names(dest: Path) -> list[str]:
    return sorted(os.listdir(dest)) if dest.exists() else []


@pytest.mark.parametrize("kind", KINDS)
def test_host_vanishes_mid_copy(tmp_path: Path, kind: str) -> None:
    """The device hangs up after a START and a WRITE (the host withdrew the service)."""
    dest = tmp_path / "dest"
    with daemon(tmp_path, kind) as (target, host):
        _half_copy(host, dest)
        target.kernel.hangup()
        # The partial file goes, the daemon opens the device again and serves.
        assert wait_for(lambda: _names(dest) == [], 10), _names(dest)
        assert target.kernel.wait_registered(10)
        assert target.log is not None
        # Ours says why; bookworm's C daemon reaches its reply path on the
        # 0-byte read and reports the failed write of a reply nobody asked for.
        said = "; reopening" if kind == "ours" else "pwrite failed: Broken pipe"
        assert target.log.wait_for(said, 0, 5) is not None, target.log_tail()
        assert host.start("g.bin", str(dest), CREATE_PATH, 1) == HvStatus.S_OK


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["start", "write", "complete"])
def test_sigkill_after_each_step_of_a_copy(tmp_path: Path, kind: str, step: str) -> None:
    """kill -9 after START, after a WRITE, after COMPLETE; then a new daemon and a new copy."""
    dest = tmp_path / "dest"
    with daemon(tmp_path, kind) as (target, host):
        assert host.start("f.bin", str(dest), CREATE_PATH, len(DATA)) == HvStatus.S_OK
        if step != "start":
            for off in range(0, len(DATA), DATA_FRAGMENT):
                assert host.write(off, DATA[off : off + DATA_FRAGMENT]) == HvStatus.S_OK
                if step == "write":
                    break
        if step == "complete":
            assert host.complete() == HvStatus.S_OK
        assert target.proc is not None
        target.proc.send_signal(signal.SIGKILL)
        target.proc.wait(10)
        left = _names(dest)
        target.kernel.hangup()
        target.start()
        assert host.start("g.bin", str(dest), CREATE_PATH, 3) == HvStatus.S_OK
        assert host.write(0, b"new") == HvStatus.S_OK and host.complete() == HvStatus.S_OK
        after = _names(dest)
    if step == "complete":
        assert left == ["f.bin"] and (dest / "f.bin").read_bytes() == DATA
        assert after == ["f.bin", "g.bin"]
    elif kind == "ours":
        # Only our temporary file, which the next daemon's copy into the directory removes.
        assert len(left) == 1 and left[0].startswith(".f.bin.hvfcopy-"), left
        assert after == ["g.bin"]
    else:
        # The C daemon writes under the real name: a truncated file stays for good.
        assert left == ["f.bin"]
        size = 0 if step == "start" else DATA_FRAGMENT
        assert (dest / "f.bin").read_bytes() == DATA[:size]
        assert after == ["f.bin", "g.bin"]


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_overwrite(tmp_path: Path, kind: str) -> None:
    """The host cancels a copy that replaces an existing file (OVER_WRITE)."""
    dest = tmp_path / "dest"
    with daemon(tmp_path, kind) as (_target, host):
        assert host.start("f.bin", f"{dest}/", CREATE_PATH, 3) == HvStatus.S_OK
        assert host.write(0, b"old") == HvStatus.S_OK and host.complete() == HvStatus.S_OK
        assert host.start("f.bin", f"{dest}/", CREATE_PATH | OVER_WRITE, len(DATA)) == HvStatus.S_OK
        assert host.write(0, DATA[:DATA_FRAGMENT]) == HvStatus.S_OK
        assert host.cancel() == HvStatus.S_OK
    if kind == "ours":
        # The copy went to a temporary file: the old one is untouched.
        assert _names(dest) == ["f.bin"] and (dest / "f.bin").read_bytes() == b"old"
    else:
        # The C daemon truncated the old file at START and removes it at CANCEL.
        assert _names(dest) == []
