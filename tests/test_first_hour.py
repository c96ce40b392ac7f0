# SPDX-License-Identifier: GPL-2.0-only
"""The README's first hour, from a clean checkout: `bash demo.sh` at its root,
then the commands of "Running against the simulator by hand", taken from
README.md itself so that README and test cannot drift.

A clean checkout has no compiled module in its source tree, and the demo runs
from its root as the README says: a process that imports the source tree
instead of the installed package fails here, not on a newcomer's machine.
(tests/fresh-debian.sh runs the same commands on a stock Debian 12.)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BY_HAND = "## Running against the simulator by hand"


@dataclass(frozen=True)
class Demo:
    checkout: Path
    returncode: int
    output: str


def tracked_files() -> list[str]:
    git = shutil.which("git")
    assert git, "git is required (tests/setup-machine.sh installs it)"
    res = subprocess.run(
        [git, "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, f"{REPO} is not a git checkout: {res.stderr}"
    return [f for f in res.stdout.split("\0") if f]


def clean_checkout(dest: Path) -> None:
    """What a clone of this tree holds: its tracked files, as edited (nothing
    built, no .cache, no .venv)."""
    for rel in tracked_files():
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted, not yet committed
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)


def user_env() -> dict[str, str]:
    """A root shell's environment: this test's own (tox) virtualenv left out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JOURNAL_STREAM")
        and not k.startswith("TOX_")
    }
    venv_bin = os.path.realpath(Path(sys.prefix) / "bin")
    path = [
        p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != venv_bin
    ]
    env["PATH"] = os.pathsep.join(path or ["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env.setdefault("HOME", pwd.getpwuid(os.getuid()).pw_dir)
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    checkout = tmp_path_factory.mktemp("first-hour") / "hvdaemons"
    clean_checkout(checkout)
    res = subprocess.run(
        ["bash", "demo.sh"],
        cwd=str(checkout),
        env=user_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,  # hang guard: a first build downloads cffi and pyudev
    )
    return Demo(checkout, res.returncode, res.stdout)


def test_demo_sh_passes_from_the_root_of_a_clean_checkout(demo: Demo) -> None:
    assert demo.returncode == 0, demo.output
    for part in ("== KVP", "== VSS", "== file copy over the legacy char device"):
        assert part in demo.output, demo.output
    assert "FAILED" not in demo.output and "UNEXPECTED" not in demo.output, demo.output
    assert (demo.checkout / ".venv" / "bin" / "hvsim").exists()


def by_hand_commands(readme: str) -> str:
    """The first code block (indented four spaces) of the by-hand section."""
    lines = readme.splitlines()
    assert BY_HAND in lines, f"README.md has no section {BY_HAND!r}"
    block: list[str] = []
    for line in lines[lines.index(BY_HAND) + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("    "):
            block.append(line[4:])
        elif block and line.strip():
            break
    return "\n".join(block)


# Private /run and /tmp (the README uses /run/hvsim and /tmp/pools), the
# checkout bound back in if it lives below /tmp, and a PID namespace: every
# process the commands leave behind dies with them.
NAMESPACE = """
set -e
checkout=$1
mount -t tmpfs -o mode=755 tmpfs /run
mkdir /run/.checkout
mount --bind "$checkout" /run/.checkout
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p "$checkout"
mount --bind /run/.checkout "$checkout"
cd "$checkout"
exec bash -c "$2"
"""


def test_the_readme_by_hand_commands_work_as_written(demo: Demo) -> None:
    commands = by_hand_commands((demo.checkout / "README.md").read_text(encoding="utf-8"))
    # The section still shows what this test checks.
    for shown in ("hvsim serve", "hv_kvp_daemon", "enumerate --pool 2", "set --pool 0 Key Value"):
        assert shown in commands, commands
    script = "\n".join(
        [
            "set -euo pipefail",
            commands,
            "wait",  # until both have exited
            'echo "pool 0 file: $(tr -d "\\0" < /tmp/pools/.kvp_pool_0)"',
        ]
    )
    res = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"),
            *("bash", "-c", NAMESPACE, "namespace", str(demo.checkout), script),
        ],
        env=user_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,  # hang guard
    )
    shown = f"commands:\n{commands}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == 0, shown
    assert "pool 2 (Auto (intrinsic)): 10 items" in res.stdout, shown
    assert "  IntegrationServicesVersion = 3.1" in res.stdout, shown
    assert "S_OK (0x00000000)" in res.stdout, shown
    assert "pool 0 file: KeyValue" in res.stdout, shown
    assert "<6>KVP: KVP LIC Version: 3.1" in res.stderr, shown
