# SPDX-License-Identifier: GPL-2.0-only
"""Suite-wide set-up.

Nothing changes the working directory: tox runs the suite from the
repository root, and every process a test starts must still run the
installed package (hvsim.launch starts them in a neutral directory), so the
whole suite checks that no child imports the source tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvdaemons
from hvdaemons import log

REPO = Path(__file__).resolve().parent.parent
INSTALLED = Path(hvdaemons.__file__).resolve().parent != REPO / "hvdaemons"


def pytest_configure(config: pytest.Config) -> None:
    # tox 4 installs the wheel, bookworm's tox 3.28 the sdist (built into the
    # same wheel): either way the package under test is the installed one.
    if os.environ.get("TOX_ENV_NAME") and not INSTALLED:
        raise pytest.UsageError(
            f"under tox the tests must import the installed hvdaemons, not {REPO / 'hvdaemons'}"
        )


@pytest.fixture
def logs() -> Iterator[log.Capture]:
    """Every record the code under test logs, DEBUG included (hvdaemons.log's capture sink)."""
    with log.capture() as captured:
        yield captured


@pytest.fixture
def log_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that calls hvdaemons.log.setup() or hold(): the process's set-up comes back."""
    for name in ("_sink", "_threshold", "_held"):
        monkeypatch.setattr(log, name, getattr(log, name))
