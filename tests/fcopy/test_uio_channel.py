# SPDX-License-Identifier: GPL-2.0-only
"""The uio channel (hvdaemons.fcopy.uio_channel) on the simulator's node.

The simulator plays uio_hv_generic at a real SOCK_SEQPACKET socket with the
rings in a real memfd: what the host writes appears in the channel's RX ring,
its interrupts in wait_interrupt(), and the channel's signal() reaches it as
irqcontrol.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.errors import ChannelReset
from hvdaemons.fcopy.uio_channel import UioChannel
from hvsim import _ffi as sim_ffi
from hvsim import uio as sim_uio


def open_channel(sim: sim_uio.UioSim, map_size: int) -> UioChannel:
    """UioChannel.open() while the simulator accepts (it sends the rings on accept)."""
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            sim.accept(10)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=accept)
    t.start()
    try:
        return UioChannel.open(sim.node, map_size)
    finally:
        t.join(15)
        assert not t.is_alive() and not errors, errors


@pytest.fixture(params=["6.10", "64k-pages"])
def sim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sim_uio.UioSim]:
    s = sim_uio.UioSim(str(tmp_path / "sim"), request.param)
    s.offer()
    s.bind()  # what new_id would make the kernel do
    try:
        yield s
    finally:
        s.close()


def test_rings_interrupts_and_signals_reach_the_other_side(sim: sim_uio.UioSim) -> None:
    variant = sim.variant
    chan = open_channel(sim, variant.map_size)
    try:
        assert (chan.ring_size, chan.header_size) == (variant.ring_size, variant.page_size)
        assert sim.rx is not None and sim.tx is not None
        # Host to guest: a packet in the simulator's RX is in the channel's RX.
        sim.rx.send(b"request!", 77)
        got = chan.rx.recv()
        assert got is not None and got[0][8:16] == (77).to_bytes(8, "little")
        assert got[0][16:24] == b"request!"
        # Guest to host, the other ring.
        chan.tx.send(b"answer!!", 78)
        back = sim.tx.recv()
        assert back is not None and back[0][16:24] == b"answer!!"
        # Interrupts: the event count, as read() of /dev/uioN returns it.
        sim.signal_guest()
        assert chan.wait_interrupt() == 1
        sim.signal_guest()
        assert chan.wait_interrupt() == 2
        # irqcontrol(1): the host is signalled and the RX mask cleared.
        chan.rx.set_mask(1)
        chan.signal()
        assert sim.pump(10) == 1
        assert sim.rx.load(sim_ffi.RING_INTERRUPT_MASK) == 0
    finally:
        chan.close()
    assert sim.wait_closed(10)


def test_a_rescind_ends_the_wait_for_an_interrupt(sim: sim_uio.UioSim) -> None:
    chan = open_channel(sim, sim.variant.map_size)
    try:
        sim.rescind()
        with pytest.raises(ChannelReset, match="rescinded"):
            chan.wait_interrupt()
    finally:
        chan.close()
    with pytest.raises(ChannelReset, match="closed"):
        chan.fileno()


def test_a_node_that_maps_another_size_than_sysfs_says_is_refused(
    sim: sim_uio.UioSim,
) -> None:
    wrong = sim.variant.map_size * 2
    with pytest.raises(
        ChannelReset, match=f"maps {sim.variant.map_size} bytes, sysfs says {wrong}"
    ):
        open_channel(sim, wrong)
