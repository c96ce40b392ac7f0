# SPDX-License-Identifier: GPL-2.0-only
"""How the simulator starts programs: always the installed packages, whatever the cwd.

`python -m MODULE` and `python -c CODE` put the current directory first on
sys.path, so a child started from a source checkout would import the
checkout (which has no compiled module) instead of the installed package.
Python 3.9 has no -P, and -I would also drop the PYTHONPATH that a private
installation relies on (the .deb's launchers add /usr/lib/hvdaemons to
sys.path themselves; a child python3 does not).  So every child runs in a
neutral working directory with the directory the simulator's own packages
were imported from first on its PYTHONPATH: it runs the same installation
as the simulator.  The tests and benchmarks start their children the same
way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import hvdaemons

# No package lives there, and no test or demo writes there.
NEUTRAL_CWD = "/"


def package_dirs() -> list[str]:
    """The sys.path entries the running hvdaemons and hvsim were imported from."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    product = os.path.dirname(os.path.dirname(os.path.abspath(hvdaemons.__file__)))
    return [here] if here == product else [here, product]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, our packages first on PYTHONPATH.

    A child of the simulator is never a systemd service: it writes
    "<N>IDENT: message" lines to stderr and sends no READY=1 (extra may set
    NOTIFY_SOCKET again).
    """
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    env.pop("NOTIFY_SOCKET", None)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*package_dirs(), *([old] if old else [])])
    # Never write byte code beside the installed modules (or into a read-only
    # overlay, as in the VSS sandbox).
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def python_argv(module: str, *args: str) -> list[str]:
    """Run module (python -m) with this interpreter."""
    return [sys.executable, "-m", module, *args]


def popen(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[Any]:
    """subprocess.Popen in the neutral directory with child_env(env)."""
    proc: subprocess.Popen[Any] = subprocess.Popen(
        list(argv), cwd=NEUTRAL_CWD, env=child_env(env), **kwargs
    )
    return proc


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run in the neutral directory with child_env(env)."""
    done: subprocess.CompletedProcess[Any] = subprocess.run(
        list(argv), cwd=NEUTRAL_CWD, env=child_env(env), **kwargs
    )
    return done


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM proc if it still runs, SIGKILL if it outlives timeout; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# Our daemons' modules (their console scripts and the .deb's launchers run these).
DAEMON_MODULES = {
    "hv_kvp_daemon": "hvdaemons.kvp.daemon",
    "hv_vss_daemon": "hvdaemons.vss.daemon",
    "hv_fcopy_daemon": "hvdaemons.fcopy.daemon",
}


def daemon_argv(name: str) -> list[str]:
    """Our daemon `name`, from the installation the simulator runs from.

    Never a program found on PATH: Debian's C daemons have the same names.
    """
    return python_argv(DAEMON_MODULES[name])
