# SPDX-License-Identifier: GPL-2.0-only
"""hv_fcopy_daemon under random sequences (see tests/fuzz/fcopy.py), on both transports:
the legacy char device and the uio_hv_generic channel (every kernel variant).

The default runs are bounded (some 1,000 messages each, well under a
minute); the slow runs (`tox -e slow`) send 100,000 per transport in four
shards of 25,000 with their own seeds, which can also run side by side as
separate pytest runs.
HVDAEMONS_FUZZ_SEED and HVDAEMONS_FUZZ_MESSAGES override a run's first seed
and budget.
"""

from __future__ import annotations

import pytest

from tests.fuzz.fcopy import EventfulFcopyFuzz, FcopyFuzz, UioFcopyFuzz, rig
from tests.fuzz.runner import run_budget

SLOW_SHARDS = 4
SLOW_MESSAGES = 100_000


def test_bounded_sequence_fuzz() -> None:
    r = run_budget(
        rig(),
        EventfulFcopyFuzz,
        messages=1000,
        seed=1,
        steps=100,
        examples_per_seed=10,
    )
    # The run reached what it is for: copies finished, and the daemon's losses.
    assert r.stats["copies completed"] and r.stats["kills"] and r.stats["reopens"], r.stats


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SLOW_SHARDS))
def test_100k_message_sequence_fuzz(shard: int) -> None:
    budget = SLOW_MESSAGES // SLOW_SHARDS
    run_budget(
        rig(),
        FcopyFuzz,
        messages=budget,
        seed=1000 * (shard + 1),
        steps=300,
        examples_per_seed=20,
    )


def test_uio_bounded_sequence_fuzz() -> None:
    r = run_budget(
        rig("hv_fcopy_daemon (uio)"),
        UioFcopyFuzz,
        messages=1000,
        seed=1,
        steps=100,
        examples_per_seed=10,
    )
    assert r.stats["copies completed"] and r.stats["Rescind"], r.stats
    assert sum(v for k, v in r.stats.items() if k.startswith("variant ")) == r.examples


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SLOW_SHARDS))
def test_uio_100k_message_sequence_fuzz(shard: int) -> None:
    budget = SLOW_MESSAGES // SLOW_SHARDS
    run_budget(
        rig("hv_fcopy_daemon (uio)"),
        UioFcopyFuzz,
        messages=budget,
        seed=1000 * (shard + 1),
        steps=300,
        examples_per_seed=20,
    )
