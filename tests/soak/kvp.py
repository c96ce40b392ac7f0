# SPDX-License-Identifier: GPL-2.0-only
"""KVP soak traffic: what a Hyper-V host and the guest's own programs do to hv_kvp_daemon, compressed.

Mirrors nothing upstream: test harness.  The host SETs, GETs and DELETEs
keys of the External pool (0) and of the Guest\\Parameter pool (3), where
Hyper-V writes, ENUMERATEs pools to the end, sweeps the Auto pool (2, the
intrinsic items the daemon synthesizes) and asks GET_IP_INFO for a NIC of
this machine (which runs the helper scripts).  A guest program appends
records to the Guest pool (1) under the POSIX record lock, as Microsoft's
sample writer and the C daemon do, and from time to time rewrites it
shorter; the host then ENUMERATEs what it wrote.

Key spaces are bounded, so a daemon's pools (and with them its memory) reach
a steady size during the warm-up.  Every answer is checked against a model;
the reference C daemons' known differences (GET answers an empty value, see
tests/kvp/test_differential.py) are not counted against them.
"""

from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path
from typing import cast

from hvdaemons.kvp.pool import parse_pool, record_bytes
from hvdaemons.protocol.status import HvStatus
from hvsim.kvp import KvpHost, first_nic
from hvsim.protocol.kvp import HostReply

from .harness import Soak
from .targets import ChardevTarget

S_OK, S_CONT = HvStatus.S_OK, HvStatus.S_CONT
HOST_POOLS = (0, 3)
KEYS_PER_POOL = 48
GUEST_CAP = 40  # records the guest writer keeps in pool 1 at most
AUTO_ITEMS = 10  # tests/kvp/test_daemon.py::test_auto_pool


class KvpTraffic:
    def __init__(self, target: ChardevTarget) -> None:
        self.target = target
        self.host = KvpHost(target.kernel)
        self.strict = target.kind == "ours"
        self.model: dict[int, dict[str, str]] = {p: {} for p in HOST_POOLS}
        self.guest_serial = 0
        nic = first_nic()
        assert nic, "GET_IP_INFO needs a NIC with a MAC address on this machine"
        self.mac = nic[1]

    def _ask(self, soak: Soak, kind: str, fn: object) -> HostReply:
        return cast(HostReply, soak.timed(kind, fn))  # type: ignore[arg-type]

    def step(self, soak: Soak, rng: random.Random) -> None:
        r = rng.random()
        pool = rng.choice(HOST_POOLS)
        model = self.model[pool]
        key = f"key-{pool}-{rng.randrange(KEYS_PER_POOL)}"
        if r < 0.30:
            value = rng.choice("abcdefgh") * rng.randrange(
                1, 1000
            )  # ENUMERATE carries 1022 at most
            reply = self._ask(soak, "set", lambda: self.host.set(pool, key, value))
            if soak.expect(reply.status == S_OK, "SET failed", hex(reply.status)):
                model[key] = value
        elif r < 0.55:
            reply = self._ask(soak, "get", lambda: self.host.get(pool, key))
            if key in model:
                soak.expect(reply.status == S_OK, "GET of a stored key failed", hex(reply.status))
                if self.strict:
                    soak.expect(reply.value == model[key], "GET returned another value", key)
            else:
                soak.expect(reply.status != S_OK, "GET of a missing key succeeded", key)
        elif r < 0.67:
            reply = self._ask(soak, "delete", lambda: self.host.delete(pool, key))
            if key in model:
                soak.expect(
                    reply.status == S_OK, "DELETE of a stored key failed", hex(reply.status)
                )
                del model[key]
        elif r < 0.75:
            items, end = self._enumerate(soak, pool)
            soak.expect(end == S_CONT, "ENUMERATE did not end with HV_S_CONT", hex(end))
            soak.expect(dict(items) == model, "ENUMERATE differs from the model", pool)
        elif r < 0.82:
            items, end = self._enumerate(soak, 2, kind="auto")
            soak.expect(end == S_CONT and len(items) == AUTO_ITEMS, "auto pool sweep", len(items))
        elif r < 0.92:
            self._guest_writes(soak, rng)
        else:
            reply = self._ask(soak, "ip_info", lambda: self.host.get_ip_info(self.mac))
            soak.expect(reply.status == S_OK, "GET_IP_INFO failed", hex(reply.status))

    def _enumerate(
        self, soak: Soak, pool: int, kind: str = "enumerate"
    ) -> tuple[list[tuple[str, str]], int]:
        items: list[tuple[str, str]] = []
        for index in range(200):
            reply = self._ask(soak, kind, lambda i=index: self.host.enumerate(pool, i))
            if reply.status != S_OK:
                return items, reply.status
            items.append((reply.key or "", reply.value or ""))
        return items, S_OK

    def _guest_writes(self, soak: Soak, rng: random.Random) -> None:
        """A guest program appends a few records to pool 1, or rewrites it shorter; the host reads them."""
        path = Path(self.target.state) / ".kvp_pool_1"
        with open(path, "r+b" if path.exists() else "w+b") as f:
            fcntl.lockf(f, fcntl.LOCK_EX)
            try:
                data = f.read()
                records = parse_pool(data)
                if len(records) + 3 > GUEST_CAP:
                    keep = records[: rng.randrange(GUEST_CAP // 4)]
                    f.seek(0)
                    f.write(b"".join(record_bytes(k, v) for k, v in keep))
                    f.truncate()
                else:
                    f.seek(0, os.SEEK_END)
                    for _ in range(rng.randrange(1, 4)):
                        self.guest_serial += 1
                        f.write(
                            record_bytes(
                                b"guest-%d" % self.guest_serial, b"report %d" % self.guest_serial
                            )
                        )
                f.flush()
                f.seek(0)
                want = [(k.decode(), v.decode()) for k, v in parse_pool(f.read())]
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN)
        items, end = self._enumerate(soak, 1)
        soak.expect(end == S_CONT, "ENUMERATE did not end with HV_S_CONT", hex(end))
        soak.expect(items == want, "ENUMERATE of the guest pool differs from its file", len(items))

    def disrupt(self, soak: Soak, rng: random.Random) -> None:
        soak.expect(self.target.reconnect(), "no registration after a device loss")
