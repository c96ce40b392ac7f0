# SPDX-License-Identifier: GPL-2.0-only
"""The interface every backend module offers, and the machine it probes.

A backend renders an IpConfig as the file its network configuration
system reads (pure: IpConfig in, text out).  Probes look at a System: the
files below its root directory, the tools on its PATH and, for
NetworkManager, what nmcli says, exactly as hv_set_ifconfig used to.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

from .. import helper
from .model import IpConfig

# First line of the files installed for netplan, networkd, ifupdown and ifcfg.
HEADER = "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host."
# Probing a tool (nmcli) must leave SET_IP_INFO most of the kernel's 30 s.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class System:
    """The machine whose network configuration system is detected.

    env is the environment hv_set_ifconfig will run with; root is what it
    calls HV_KVP_ROOT (files are looked up below it), tools are looked up
    on env's PATH.
    """

    root: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> System:
        return cls(root=environ.get("HV_KVP_ROOT") or "/", env=environ)

    @property
    def netstack(self) -> str:
        """HV_KVP_NETSTACK: the administrator's choice of backend, if any."""
        return self.env.get("HV_KVP_NETSTACK", "")

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def is_file(self, absolute: str) -> bool:
        return os.path.isfile(self.path(absolute))

    def is_dir(self, absolute: str) -> bool:
        return os.path.isdir(self.path(absolute))

    def exists(self, absolute: str) -> bool:
        return os.path.exists(self.path(absolute))

    def files_in(self, absolute: str) -> list[str]:
        """The regular files DIR/* matches in a shell: not hidden, sorted."""
        directory = self.path(absolute)
        try:
            names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
        except OSError:
            return []
        return [p for p in (os.path.join(directory, n) for n in names) if os.path.isfile(p)]

    def has_tool(self, name: str) -> bool:
        return shutil.which(name, path=self.env.get("PATH") or helper.DEFAULT_PATH) is not None

    def tool_output(self, argv: list[str]) -> str | None:
        """What a tool prints, None if it fails or cannot be run."""
        result = helper.run(argv, PROBE_TIMEOUT, env=self.env)
        if result.failure:
            return None
        return result.stdout.decode("utf-8", "replace")


Probe = Callable[[System, str], bool]


def text(lines: list[str]) -> str:
    """A file of these lines, each ended by a newline."""
    return "".join(f"{line}\n" for line in lines)


def _no_notes(system: System, ifname: str) -> list[str]:
    return []


@dataclass(frozen=True)
class Backend:
    """One network configuration system hv_set_ifconfig can install into."""

    # The HV_KVP_NETSTACK word hv_set_ifconfig knows it by.
    name: str
    render: Callable[[IpConfig], str]
    # Things the administrator should know before the file is installed.
    notes: Callable[[System, str], list[str]] = _no_notes
