# SPDX-License-Identifier: GPL-2.0-only
"""Running code against a recorded device tree (tests/ctl/trees) under umockdev-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.kvp import PKG_ROOT, daemon_env

TREES = Path(__file__).resolve().parents[1] / "ctl" / "trees"

# Runs hvctl's main() with the daemon state taken from a /proc-like tree
# ("proc DIR") or from a systemctl program ("systemctl PATH").
HVCTL = """
import sys
from hvdaemons.ctl.daemons import ProcessTable, Systemd
from hvdaemons.ctl.main import main
kind, where, *argv = sys.argv[1:]
source = ProcessTable(where) if kind == "proc" else Systemd(where, fallback=ProcessTable(where + ".proc"))
sys.exit(main(argv, daemons=source))
"""


def umockdev_run() -> str:
    path = shutil.which("umockdev-run")
    assert path, "umockdev-run is required (Debian package umockdev; tests/setup-machine.sh)"
    return path


def run_in_tree(tree: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """python argv... with libudev reading tests/ctl/trees/<tree>.umockdev."""
    path = TREES / f"{tree}.umockdev"
    assert path.is_file(), path
    return subprocess.run(
        [umockdev_run(), "-d", str(path), "--", sys.executable, *argv],
        cwd=str(PKG_ROOT),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hvctl_in_tree(
    tree: str, source: tuple[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_in_tree(tree, "-c", HVCTL, source[0], source[1], *args)


def json_of(cp: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(cp.stdout)
    except ValueError as e:
        raise AssertionError(f"not JSON ({e}):\n{cp.stdout}\n{cp.stderr}") from None


def hvctl(
    *args: str, unprivileged: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The installed hvctl (python -m hvdaemons.ctl.main).

    unprivileged: without the capabilities that let root ignore file
    permissions (as an ordinary user is, but still able to run this tree's
    interpreter).
    """
    argv = [sys.executable, "-m", "hvdaemons.ctl.main", *args]
    if unprivileged:
        drop = "-dac_override,-dac_read_search,-fowner"
        argv = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", "--", *argv]
    return subprocess.run(
        argv, cwd=str(PKG_ROOT), env=daemon_env(), capture_output=True, text=True, timeout=timeout
    )
