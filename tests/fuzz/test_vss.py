# SPDX-License-Identifier: GPL-2.0-only
"""hv_vss_daemon under random sequences of host messages and events (see tests/fuzz/vss.py).

The default run is bounded (some 300 messages, well under a minute); the
slow run (`tox -e slow`) sends 100,000 in four shards of 25,000 with their
own seeds, which can also run side by side as separate pytest runs.
HVDAEMONS_FUZZ_SEED and HVDAEMONS_FUZZ_MESSAGES override a run's first seed
and budget.
"""

from __future__ import annotations

import pytest

from tests.fuzz.runner import run_budget
from tests.fuzz.vss import EventfulVssFuzz, VssFuzz, rig
from tests.support.vss_sandbox import STACKED

SLOW_SHARDS = 4
SLOW_MESSAGES = 100_000


def test_bounded_sequence_fuzz() -> None:
    run_budget(
        rig(STACKED),
        EventfulVssFuzz,
        messages=300,
        seed=1,
        steps=40,
        examples_per_seed=10,
    )


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SLOW_SHARDS))
def test_100k_message_sequence_fuzz(shard: int) -> None:
    budget = SLOW_MESSAGES // SLOW_SHARDS
    run_budget(
        rig(STACKED),
        VssFuzz,
        messages=budget,
        seed=1000 * (shard + 1),
        steps=150,
        examples_per_seed=40,
    )
