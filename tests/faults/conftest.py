# SPDX-License-Identifier: GPL-2.0-only
"""Every fault test compares ours with Debian's reference C daemons: they must be there."""

from __future__ import annotations

import pytest

from tests.soak.targets import require_reference


@pytest.fixture(scope="session", autouse=True)
def _reference() -> None:
    require_reference()
