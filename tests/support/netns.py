# SPDX-License-Identifier: GPL-2.0-only
"""A named network namespace for tests (not a test module)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from hvsim import launch

_counter = itertools.count()


class NetNs:
    """A named network namespace; everything in it goes away with it."""

    def __init__(self) -> None:
        self.name = f"hvt{os.getpid()}x{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        # Deterministic addresses: no automatic IPv6 link-local addresses on
        # links created from now on (tests add the ones they want).
        self.sh("echo 1 > /proc/sys/net/ipv6/conf/default/addr_gen_mode")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True)

    def sh(self, script: str) -> None:
        # Only for constant scripts; never interpolate names into them.
        subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", script], check=True)

    def veth(self, name: str, mac: str, peer: str, peer_mac: str) -> None:
        self.ip(
            "link",
            "add",
            name,
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "address",
            peer_mac,
        )
        self.ip("link", "set", name, "up")
        self.ip("link", "set", peer, "up")

    def python(self, code: str, env: dict[str, str] | None = None) -> Any:
        """Run Python code in the namespace; it must print one JSON document."""
        proc = launch.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def run(self, argv: Sequence[str]) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True, text=True
        ).stdout

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)
