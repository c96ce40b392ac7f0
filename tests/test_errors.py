# SPDX-License-Identifier: GPL-2.0-only
"""Every exception hvdaemons and hvsim define is an HvError, but two.

Read from the installed packages: every module is imported and every class
deriving from BaseException that a module defines is checked.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import hvdaemons
import hvsim
from hvdaemons.errors import HvError

# Deliberately outside HvError (hvdaemons/errors.py says why).
OUTSIDE = {"hvdaemons.fcopy.uio._Stopped", "hvsim.sockets.SocketInUse"}


def defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (hvdaemons, hvsim):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                ):
                    found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_exception_is_an_hv_error() -> None:
    found = defined_exceptions()
    # The walk reached the modules that define them (not an empty list).
    assert {
        "hvdaemons.errors.ProtocolError",
        "hvdaemons.kvp.pool.PoolUnavailable",
        "hvdaemons.vss.freeze.NotReached",
        "hvdaemons.fcopy.writer.CopyError",
        "hvdaemons.ctl.kvp.KvpError",
        "hvdaemons.ctl.devices.UdevUnavailable",
        "hvsim.uio.HostError",
    } <= set(found)
    outside = {name for name, cls in found.items() if not issubclass(cls, HvError)}
    assert outside == OUTSIDE
