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
INSTALLED = Path(hvdaemons.__file__).resolve().parent != REPO / "hvdaemons"


def pytest_configure(config: pytest.Config) -> None:
    # tox 4 installs the wheel, bookworm's tox 3.28 the sdist (built into the
    # same wheel): either way the package under test is the installed one.
    if os.environ.get("TOX_ENV_NAME") and not INSTALLED:
        raise pytest.UsageError(
            f"under tox the tests must import the installed hvdaemons, not {REPO / 'hvdaemons'}"
        )


@pytest.fixture(scope="session", autouse=True)
def _cwd_outside_the_source_tree() -> Iterator[None]:
    """Under tox the package under test is the installed wheel.

    Daemons started with `python -m` put their cwd first on sys.path; from
    the repository root they would import the source tree, which has no
    compiled module there.  So run from elsewhere whenever the imported
    hvdaemons is not the source tree.
    """
    if not INSTALLED:
        yield
        return
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hvdaemons-tests-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(old)
