# SPDX-License-Identifier: GPL-2.0-only
"""The uio file-copy daemon under random sequences of messages and ring faults (tests/fuzz/uio.py).

The default run is bounded (some 100 messages per kernel variant, tens of
seconds in all); the slow
run (`tox -e slow`) sends 100,000 in four shards of 25,000 with their own
seeds, which can also run side by side as separate pytest runs.
HVDAEMONS_FUZZ_SEED and HVDAEMONS_FUZZ_MESSAGES override a run's first seed
and budget.
"""

from __future__ import annotations

import pytest

from hvsim.uio import VARIANTS
from tests.fuzz.runner import run_budget
from tests.fuzz.uio import EventfulUioFuzz, UioFuzz, rig

SLOW_SHARDS = 4
SLOW_MESSAGES = 100_000


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bounded_sequence_fuzz(variant: str) -> None:
    r = run_budget(
        rig(),
        lambda r: EventfulUioFuzz(r, variant),
        messages=100,
        seed=1 + sorted(VARIANTS).index(variant),
        steps=50,
        examples_per_seed=3,
    )
    # Copies ran and the ring was in trouble (the seed is fixed: this says the mix is right).
    assert r.stats["files copied"] > 0, dict(r.stats)
    faults = ("BadDescriptor", "BadIndex", "TxStall", "wrapped", "Spurious", "Rescind")
    assert sum(r.stats[k] for k in faults) > 0, dict(r.stats)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SLOW_SHARDS))
def test_100k_message_sequence_fuzz(shard: int) -> None:
    budget = SLOW_MESSAGES // SLOW_SHARDS
    run_budget(
        rig(),
        UioFuzz,
        messages=budget,
        seed=2000 * (shard + 1),
        steps=300,
        examples_per_seed=20,
    )
