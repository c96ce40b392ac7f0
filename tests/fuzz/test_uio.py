# SPDX-License-Identifier: GPL-2.0-only
"""The uio file-copy daemon under random sequences of messages and ring faults (tests/fuzz/uio.py).

The default run is bounded (some 400 messages, tens of seconds); the slow
run (`tox -e slow`) sends 100,000 in four shards of 25,000 with their own
seeds, which can also run side by side as separate pytest runs.
HVDAEMONS_FUZZ_SEED and HVDAEMONS_FUZZ_MESSAGES override a run's first seed
and budget.
"""

from __future__ import annotations

import pytest

from tests.fuzz.runner import fuzz
from tests.fuzz.uio import EventfulUioFuzz, UioFuzz, rig

SLOW_SHARDS = 4
SLOW_MESSAGES = 100_000


def test_bounded_sequence_fuzz() -> None:
    with rig() as r:
        summary = fuzz(
            r,
            lambda: EventfulUioFuzz(r),
            messages=400,
            seed=1,
            steps=60,
            examples_per_seed=5,
            stats=lambda: dict(r.stats),
        )
    print(summary.line())
    assert summary.messages >= 400
    # Each kind of trouble came up (the seeds are fixed: this says the mix is right).
    for kind in ("Start", "Write", "Complete", "BadDescriptor", "TxStall", "wrapped"):
        assert r.stats[kind] > 0, (kind, dict(r.stats))


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SLOW_SHARDS))
def test_100k_message_sequence_fuzz(shard: int) -> None:
    budget = SLOW_MESSAGES // SLOW_SHARDS
    with rig() as r:
        summary = fuzz(
            r,
            lambda: UioFuzz(r),
            messages=budget,
            seed=2000 * (shard + 1),
            steps=300,
            examples_per_seed=20,
            stats=lambda: dict(r.stats),
        )
    print(summary.line())
    assert summary.messages >= budget
