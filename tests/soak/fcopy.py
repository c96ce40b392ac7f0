# SPDX-License-Identifier: GPL-2.0-only
"""File-copy soak traffic: Copy-VMFile against hv_fcopy_daemon, over the char device or the uio ring.

Mirrors nothing upstream: test harness.  Many small copies and a few large
ones into a handful of directories (created on demand, CREATE_PATH),
some onto names that exist (refused without OVER_WRITE, replaced with it),
some cancelled part-way, some failing (a directory that does not exist,
without CREATE_PATH; the host's paths end in "/", as CREATE_PATH in the C
daemon creates directories up to the last "/" only); now and then the guest cleans the directories up, so
the disk use stays bounded.  A disruption is the host vanishing mid-copy
(the char device hung up, the uio channel rescinded and offered again).
Every file is checked against what the host sent.
"""

from __future__ import annotations

import functools
import random
import shutil
from pathlib import Path
from typing import Callable, Protocol

from hvdaemons.protocol.fcopy import CREATE_PATH, DATA_FRAGMENT, OVER_WRITE
from hvdaemons.protocol.status import HvStatus

from .harness import Soak

NAMES = 24
DIRS = 3
SMALL = 64 * 1024
LARGE = 3 * 1024 * 1024


class Host(Protocol):
    """hvsim.fcopy.FcopyHost and hvsim.uio.UioHost alike."""

    def start(
        self, file_name: str | bytes, path_name: str | bytes, flags: int = 0, file_size: int = 0
    ) -> int: ...

    def write(self, offset: int, data: bytes, *, size: int | None = None) -> int: ...

    def complete(self) -> int: ...

    def cancel(self) -> int: ...


class FcopyTraffic:
    def __init__(
        self,
        host: Host,
        dest: Path,
        lose_device: Callable[[], bool],
        *,
        ours: bool,
        large: int = LARGE,
    ) -> None:
        self.host = host
        self.dest = dest
        self.lose_device = lose_device
        self.ours = ours
        self.large = large
        self.model: dict[Path, bytes] = {}
        self.copies = 0

    def _op(self, soak: Soak, kind: str, fn: Callable[[], int]) -> int:
        status: int = soak.timed(kind, fn)  # type: ignore[assignment]
        return status

    def step(self, soak: Soak, rng: random.Random) -> None:
        self.copies += 1
        if self.copies % 60 == 0:
            soak.counts["guest cleanup"] += 1
            shutil.rmtree(self.dest, ignore_errors=True)
            self.model.clear()
        r = rng.random()
        directory = self.dest / f"d{rng.randrange(DIRS)}"
        name = f"f{rng.randrange(NAMES)}.bin"
        if r < 0.05:
            soak.counts["failing copy"] += 1
            status = self._op(
                soak,
                "start",
                lambda: self.host.start(name, str(self.dest / "missing" / "x"), 0, 10),
            )
            soak.expect(
                status != HvStatus.S_OK,
                "START into a missing directory without CREATE_PATH succeeded",
            )
            return
        size = self.large if r < 0.10 else rng.randrange(SMALL)
        data = rng.randbytes(size)
        overwrite = rng.random() < 0.5
        cancel_at = rng.randrange(max(1, size // DATA_FRAGMENT)) if r > 0.92 else None
        soak.counts["large copy" if size == self.large else "copy"] += 1
        self._copy(soak, directory, name, data, overwrite, cancel_at)

    def _copy(
        self,
        soak: Soak,
        directory: Path,
        name: str,
        data: bytes,
        overwrite: bool,
        cancel_at: int | None,
    ) -> None:
        path = directory / name
        before = self.model.get(path)
        flags = CREATE_PATH | (OVER_WRITE if overwrite else 0)
        status = self._op(
            soak, "start", lambda: self.host.start(name, f"{directory}/", flags, len(data))
        )
        if before is not None and not overwrite:
            soak.expect(
                status == HvStatus.ERROR_ALREADY_EXISTS, "START onto an existing file", hex(status)
            )
            self._check(soak, path, before)
            return
        if not soak.expect(status == HvStatus.S_OK, "START failed", hex(status)):
            return
        for n, offset in enumerate(range(0, len(data), DATA_FRAGMENT)):
            if cancel_at is not None and n >= cancel_at:
                break
            chunk = data[offset : offset + DATA_FRAGMENT]
            status = self._op(soak, "write", functools.partial(self.host.write, offset, chunk))
            if not soak.expect(status == HvStatus.S_OK, "WRITE failed", hex(status)):
                cancel_at = n
                break
        if cancel_at is not None:
            soak.counts["cancelled copy"] += 1
            status = self._op(soak, "cancel", self.host.cancel)
            soak.expect(status == HvStatus.S_OK, "CANCEL failed", hex(status))
            # Ours copies through a temporary file: a cancelled overwrite keeps the old file.
            if before is not None and not self.ours and not path.exists():
                soak.expect(False, "a cancelled overwrite deleted the existing file", path.name)
                del self.model[path]
                return
            self._check(soak, path, before)
            return
        status = self._op(soak, "complete", self.host.complete)
        if soak.expect(status == HvStatus.S_OK, "COMPLETE failed", hex(status)):
            self.model[path] = data
            self._check(soak, path, data)

    def _check(self, soak: Soak, path: Path, want: bytes | None) -> None:
        try:
            got: bytes | None = path.read_bytes()
        except FileNotFoundError:
            got = None
        soak.expect(got == want, "file content differs from what the host sent", path.name)
        leftovers = [p.name for p in path.parent.glob(".hvfcopy-*")] if path.parent.exists() else []
        soak.expect(not leftovers, "temporary files left behind", leftovers)

    def disrupt(self, soak: Soak, rng: random.Random) -> None:
        """The host vanishes mid-copy: no file under the name, no temporary file; service resumes."""
        directory = self.dest / "cut"
        name = f"cut{rng.randrange(1000)}.bin"
        path = directory / name
        status = self._op(
            soak, "start", lambda: self.host.start(name, f"{directory}/", CREATE_PATH, 1 << 20)
        )
        if soak.expect(status == HvStatus.S_OK, "START failed", hex(status)):
            for offset in range(0, 3 * DATA_FRAGMENT, DATA_FRAGMENT):
                self._op(
                    soak, "write", functools.partial(self.host.write, offset, b"c" * DATA_FRAGMENT)
                )
        soak.expect(self.lose_device(), "the daemon did not come back after the device loss")
        if path.exists():
            soak.expect(False, "a copy cut by the host's disappearance left a partial file", name)
            path.unlink()
        self._check(soak, path, None)
