# SPDX-License-Identifier: GPL-2.0-only
"""setuptools options that pyproject.toml cannot carry warning-free on every
setuptools the package is built with: PyPI's (isolated builds: pip, tox) and
Debian 12's 66 (packaging/build.py builds the .deb without build isolation).

- license: setuptools >= 77 deprecates the `license = { text = ... }` table,
  setuptools 66 rejects the PEP 639 string `license = "GPL-2.0-only"`; the
  SPDX identifier given here is accepted by both.
- [tool.setuptools] tables: setuptools 66 warns that they are beta.
- cffi's out-of-line API mode needs setup() to know about the builders.
"""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup


def version() -> str:
    # The one place the version lives; importing the package would need its
    # compiled module.
    text = (Path(__file__).parent / "hvdaemons" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if m is None:
        raise SystemExit("setup.py: no __version__ in hvdaemons/__init__.py")
    return m.group(1)


setup(
    version=version(),
    license="GPL-2.0-only",
    packages=find_namespace_packages(include=["hvdaemons*", "hvsim*"]),
    include_package_data=True,
    package_data={"hvdaemons.kvp": ["scripts/*"]},
    cffi_modules=["bindings/build.py:ffibuilder", "bindings/build.py:hvsim_ffibuilder"],
)
