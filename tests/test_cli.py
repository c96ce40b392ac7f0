# SPDX-License-Identifier: GPL-2.0-only
"""The daemons' command lines, as a person types them: the installed console scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hvdaemons import cli

DAEMONS = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon")


def console_script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{path} missing: the tests run against the installed package (tox)"
    return str(path)


@pytest.mark.parametrize("name", DAEMONS)
def test_a_mistyped_device_exits_1_at_once(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no" / "hv_kvp"
    # Without the check the daemon logged one line and waited for the path forever.
    res = subprocess.run(
        [console_script(name), "-n", "--device", str(missing)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,  # hang guard
    )
    assert (res.returncode, res.stdout, res.stderr) == (
        1,
        "",
        f"{name}: no such device: {missing}\n",
    )


def test_an_existing_device_path_is_taken_and_the_default_is_not_checked(tmp_path: Path) -> None:
    p = cli.parser("hv_kvp_daemon", "d", str(tmp_path / "absent-default"))
    sock = tmp_path / "hv_kvp"
    sock.touch()
    assert p.parse_args(["-n", "--device", str(sock)]).device == str(sock)
    # udev starts the daemon when the default device appears: it is waited for.
    assert p.parse_args(["-n"]).device == str(tmp_path / "absent-default")
