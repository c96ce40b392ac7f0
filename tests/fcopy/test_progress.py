# SPDX-License-Identifier: GPL-2.0-only
"""FileCopier's progress callback and the file-copy daemon's STATUS= line."""

from __future__ import annotations

from pathlib import Path

from hvdaemons.fcopy.writer import CopyStatus, FileCopier
from hvdaemons.notify import StatusLine
from hvdaemons.protocol.fcopy import StartCopy
from hvdaemons.protocol.status import HvStatus

S_OK = HvStatus.S_OK


def start(tmp_path: Path, name: str, size: int) -> StartCopy:
    return StartCopy(file_name=name, path_name=str(tmp_path), flags=0, file_size=size)


def test_progress_events(tmp_path: Path) -> None:
    seen: list[tuple[str, str, int, int]] = []
    c = FileCopier(progress=lambda *a: seen.append(a))
    target = f"{tmp_path}/a.bin"
    assert c.start(start(tmp_path, "a.bin", 3000)) == S_OK
    assert c.write(0, b"x" * 1000) == S_OK
    assert c.write(2000, b"z" * 1000) == S_OK  # out of order: the furthest end counts
    assert c.write(1000, b"y" * 1000) == S_OK
    assert c.complete() == S_OK
    assert seen == [
        ("copying", target, 0, 3000),
        ("copying", target, 1000, 3000),
        ("copying", target, 3000, 3000),
        ("copying", target, 3000, 3000),
        ("copied", target, 3000, 3000),
    ]
    seen.clear()
    assert c.start(start(tmp_path, "b.bin", 10)) == S_OK
    assert c.cancel() == S_OK
    assert seen[-1] == ("cancelled", f"{tmp_path}/b.bin", 0, 10)
    assert c.start(start(tmp_path, "d.bin", 10)) == S_OK
    (tmp_path / "d.bin").write_bytes(b"taken meanwhile")  # no overwrite: COMPLETE fails
    assert c.complete() != S_OK
    assert seen[-1][0] == "failed"
    assert c.start(start(tmp_path, "c.bin", 10)) == S_OK
    c.abort()
    assert seen[-1] == ("abandoned", f"{tmp_path}/c.bin", 0, 10)


def test_status_line_of_a_copy(tmp_path: Path) -> None:
    sent: list[str] = []
    now = [0.0]
    line = StatusLine(lambda m: sent.append(m) or True, enabled=True, clock=lambda: now[0])
    c = FileCopier(progress=CopyStatus(line, clock=lambda: now[0], wall=lambda: 0.0))
    assert c.start(start(tmp_path, "big.bin", 4 << 20)) == S_OK
    target = f"{tmp_path}/big.bin"
    assert sent[-1] == f"STATUS=copying {target}: 0 bytes of 4.0 MiB (0%)"
    for i in range(4):  # within one second: no new line
        assert c.write(i << 20, bytes(1 << 20)) == S_OK
    assert len(sent) == 1
    now[0] = 1.5
    assert c.write(0, b"\0") == S_OK
    assert sent[-1] == f"STATUS=copying {target}: 4.0 MiB of 4.0 MiB (100%)"
    assert c.complete() == S_OK  # the end is shown at once
    assert sent[-1].startswith(f"STATUS=last copy {target}: copied (4.0 MiB) at ")

