# SPDX-License-Identifier: GPL-2.0-only
from __future__ import annotations

from pathlib import Path

import pytest

from tests.kvp.renderers.cases import Machine


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    (tmp_path / "root").mkdir()
    (tmp_path / "bin").mkdir()
    return Machine(tmp_path / "root", tmp_path / "bin")
