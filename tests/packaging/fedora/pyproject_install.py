# SPDX-License-Identifier: GPL-2.0-only
"""STAND-IN for pyproject-rpm-macros' %pyproject_install (see macros.stand-in):
install the one wheel in WHEELDIR into BUILDROOT (modules in SITEARCH,
console scripts in BINDIR) with the "installer" library, as pip does.

Usage: python3 pyproject_install.py BUILDROOT SITEARCH BINDIR WHEELDIR
"""

import sys
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main(buildroot: str, sitearch: str, bindir: str, wheeldir: str) -> None:
    wheels = sorted(Path(wheeldir).glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"pyproject_install: expected one wheel in {wheeldir}, got {wheels}")
    root = Path(buildroot)
    site = str(root / sitearch.lstrip("/"))
    dest = SchemeDictionaryDestination(
        {
            "purelib": site,
            "platlib": site,
            "scripts": str(root / bindir.lstrip("/")),
            "data": str(root / "usr"),
        },
        interpreter="/usr/bin/python3",
        script_kind="posix",
    )
    with WheelFile.open(wheels[0]) as source:
        # What pip records for an RPM build.
        install(source, dest, additional_metadata={"INSTALLER": b"rpm\n"})


if __name__ == "__main__":
    main(*sys.argv[1:])
