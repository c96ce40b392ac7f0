# SPDX-License-Identifier: GPL-2.0-only
"""`hvsim demo`: every part runs the installed daemons, and the run ends with a summary.

The first test is what a newcomer does: the installed `hvsim demo`, from the
repository root (where `python -m` would find the source tree, which has no
compiled module).  The others make a part fail for real and check what the
summary says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvsim import demo

REPO = Path(__file__).resolve().parents[2]
SUMMARY = [
    "== summary",
    "  KVP                              ok",
    "  VSS                              ok",
    "  file copy over the char device   ok",
    "  file copy over the uio ring      ok",
]


def installed_hvsim() -> str:
    """The console script of the installation under test (beside its python)."""
    path = shutil.which("hvsim", path=os.path.dirname(sys.executable))
    assert path, f"no hvsim console script beside {sys.executable}"
    return path


def summary(out: str) -> list[str]:
    lines = out.splitlines()
    assert "== summary" in lines, out
    return lines[lines.index("== summary") :]


def test_demo_of_every_part_from_the_repository_root() -> None:
    assert os.geteuid() == 0, "the VSS part needs root (mount namespaces, loop devices)"
    assert (REPO / "hvdaemons" / "__init__.py").is_file()  # a source tree is right there
    res = subprocess.run(
        [installed_hvsim(), "demo"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert summary(res.stdout) == SUMMARY, res.stdout
    assert res.returncode == 0, res.stdout


# Makes our KVP daemon (the only one given --state-dir) fail at start-up, as
# a broken installation would, while hvsim itself runs normally.
FAILING_KVP = """\
import os, sys
if sys.argv[0] == "-m" and "--state-dir" in sys.argv:
    sys.stderr.write("<3>KVP: cannot start: injected by the test\\n")
    sys.stderr.flush()
    os._exit(1)
"""


def test_a_failing_daemon_is_a_failed_part_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(FAILING_KVP)
    res = subprocess.run(
        [installed_hvsim(), "demo", "kvp"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert summary(res.stdout) == [
        "== summary",
        "  KVP                              FAILED: the daemon exited with status 1 before registering",
        "      the daemon's last log lines:",
        "        <3>KVP: cannot start: injected by the test",
    ]


def test_an_unexpected_error_is_a_failed_part_and_the_next_part_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(part: demo.Part) -> None:
        part.daemon_log = ["<6>X: starting", "<3>X: something went wrong"]
        raise ValueError("bad value\nsecond line")

    def fine(part: demo.Part) -> None:
        part.check(True, "all good")

    def wrong(part: demo.Part) -> None:
        part.check(False, "the host got E_FAIL")
        part.check(False, "the file differs")

    assert demo.run([("broken", broken), ("fine", fine), ("wrong", wrong)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = summary(out)
    assert lines[1].startswith("  broken")
    assert "FAILED: unexpected ValueError: bad value (traceback in " in lines[1]
    log = Path(lines[1].split("(traceback in ")[1].rstrip(")"))
    try:
        text = log.read_text()
        assert "Traceback (most recent call last)" in text and "ValueError: bad value" in text
    finally:
        log.unlink()
    assert lines[2:5] == [
        "      the daemon's last log lines:",
        "        <6>X: starting",
        "        <3>X: something went wrong",
    ]
    assert lines[5:] == [
        "  fine                             ok",
        "  wrong                            FAILED: the host got E_FAIL (and 1 more)",
        "      (no log from the daemon)",
    ]


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(part: demo.Part) -> None:
        raise KeyError("missing")

    assert demo.run([("broken", broken)], debug=True) == 1
    out, err = capsys.readouterr()
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err
    assert "FAILED: unexpected KeyError: 'missing' (traceback above)" in out
