# SPDX-License-Identifier: GPL-2.0-only
"""Suite-wide set-up."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvdaemons

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _cwd_outside_the_source_tree() -> Iterator[None]:
    """Under tox the package under test is the installed wheel.

    Daemons started with `python -m` put their cwd first on sys.path; from
    the repository root they would import the source tree, which has no
    compiled module there.  So run from elsewhere whenever the imported
    hvdaemons is not the source tree.
    """
    installed = Path(hvdaemons.__file__).resolve().parent != REPO / "hvdaemons"
    if not installed:
        yield
        return
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hvdaemons-tests-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(old)
