# SPDX-License-Identifier: GPL-2.0-only
"""Differential: our hv_fcopy_daemon against Debian bookworm's reference C daemon.

Both run unmodified on the same simulated /dev/vmbus/hv_fcopy (the reference
through the LD_PRELOAD shim), each in a private mount namespace with a small
tmpfs for the disk-full case, each writing below its own fresh directory.  Every
scenario sends the same host requests to both; the statuses and the resulting
files must match, except for the deliberate differences, which are asserted
explicitly (see DIFFERENCES).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from hvdaemons.protocol.fcopy import CREATE_PATH, OVER_WRITE
from hvdaemons.protocol.status import HvStatus
from hvsim.fcopy import FcopyHost
from hvsim.protocol import fcopy as sim_fcopy
from tests.reference import refdaemons
from tests.support.fcopy import LegacyRig, tree

ALREADY_EXISTS, DISK_FULL, E_FAIL, S_OK = (
    HvStatus.ERROR_ALREADY_EXISTS,
    HvStatus.ERROR_DISK_FULL,
    HvStatus.E_FAIL,
    HvStatus.S_OK,
)

GiB = 1 << 30

Scenario = Callable[[FcopyHost, Path], list[int]]
# statuses, tree() of the scenario's directory, that directory
Result = tuple[list[int], dict[str, object], Path]


class Side:
    def __init__(self, rig: LegacyRig, base: Path) -> None:
        self.rig = rig
        self.base = base
        self.full = base.parent / (base.name + "-full")  # a 256 KiB tmpfs in the daemon's view

    def run(self, name: str, scenario: Scenario) -> Result:
        root = self.base / name
        root.mkdir()
        statuses = scenario(self.rig.host, root)
        return statuses, tree(root), root


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    try:
        refdaemons.ensure_reference()
        refdaemons.build_shim()
    except RuntimeError as e:
        pytest.fail(f"reference daemons unavailable: {e}")
    tmp = tmp_path_factory.mktemp("diff")
    made = []
    try:
        for who in ("ours", "ref"):
            base = tmp / who
            base.mkdir()
            full = tmp / f"{who}-full"
            full.mkdir()
            rig = LegacyRig(
                tmp / f"dev-{who}",
                reference=who == "ref",
                tmpfs=(f"{full}:size=256k",),
            )
            made.append(Side(rig, base))
        yield made[0], made[1]
    finally:
        for side in made:
            side.rig.close()


def both(sides: tuple[Side, Side], name: str, scenario: Scenario) -> tuple[Result, Result]:
    ours, ref = sides
    return ours.run(name, scenario), ref.run(name, scenario)


def same(sides: tuple[Side, Side], name: str, scenario: Scenario) -> list[int]:
    (s1, t1, _), (s2, t2, _) = both(sides, name, scenario)
    assert s1 == s2
    assert t1 == t2
    return s1


# -- scenarios where the two agree ------------------------------------------------


def test_plain_copy(sides: tuple[Side, Side]) -> None:
    data = os.urandom(100_000)
    got = same(sides, "plain", lambda h, r: h.copy_file(data, str(r), "f.bin", 0))
    assert got == [S_OK] * (2 + 17)


NAMES = ["Grüße.txt", "русский", "中文 名字", "العربية", "😀🚀", "e\u0301", "a\\b c"]


def test_names_in_several_scripts(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        return [s for n in NAMES for s in h.copy_file(n.encode(), str(r), n, 0)]

    assert set(same(sides, "names", scenario)) == {S_OK}


def test_nested_path_with_trailing_slash(sides: tuple[Side, Side]) -> None:
    got = same(sides, "nested", lambda h, r: h.copy_file(b"x", f"{r}/a/b/", "f", CREATE_PATH))
    assert got == [S_OK] * 3


def test_missing_path_without_create_path(sides: tuple[Side, Side]) -> None:
    assert same(sides, "nocreate", lambda h, r: h.copy_file(b"x", f"{r}/a/b/", "f", 0)) == [E_FAIL]


def test_overwrite_off_and_on(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        (r / "f").write_bytes(b"old")
        return [
            *h.copy_file(b"new", str(r), "f", 0),
            *h.copy_file(b"newer", str(r), "f", OVER_WRITE),
        ]

    assert same(sides, "overwrite", scenario) == [ALREADY_EXISTS, S_OK, S_OK, S_OK]


def test_zero_byte_file(sides: tuple[Side, Side]) -> None:
    assert same(sides, "empty", lambda h, r: h.copy_file(b"", str(r), "e", 0)) == [S_OK, S_OK]


def test_cancel_mid_copy(sides: tuple[Side, Side]) -> None:
    data = os.urandom(6144 * 8)
    got = same(sides, "cancel", lambda h, r: h.copy_file(data, str(r), "f", 0, cancel_after=3))
    assert got == [S_OK] * 5


def test_requests_without_a_started_copy(sides: tuple[Side, Side]) -> None:
    got = same(sides, "orphans", lambda h, r: [h.write(0, b"x"), h.cancel()])
    assert got == [E_FAIL, S_OK]


def test_file_above_4_gib(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        size = 5 * GiB + 3
        got = [h.start("big", str(r), 0, size), h.write(0, b"abc"), h.write(5 * GiB, b"xyz")]
        got.append(h.complete())
        st = (r / "big").stat()
        assert st.st_size == size and st.st_blocks * 512 < 1 << 20
        with open(r / "big", "rb") as f:
            f.seek(5 * GiB)
            assert f.read() == b"xyz"
        os.truncate(r / "big", 0)  # tree() compares contents; the checks are done
        return got

    assert same(sides, "big", scenario) == [S_OK] * 4


def test_disk_full(sides: tuple[Side, Side]) -> None:
    data = os.urandom(512 * 1024)
    results = []
    for side in sides:
        results.append(side.rig.host.copy_file(data, str(side.full), "f", 0))
        assert os.listdir(side.rig.view(side.full)) == []
    ours, ref = results
    assert len(ours) == len(ref) and ours[:-2] == ref[:-2]
    assert ours[-2:] == [DISK_FULL, S_OK]  # the failed WRITE, then the host's CANCEL
    # Deliberate difference: when the disk fills in the middle of a fragment,
    # pwrite() writes short without setting errno and the reference reads a
    # stale errno (HV_E_FAIL); we write the rest, get ENOSPC and say so.
    assert ref[-2:] in ([DISK_FULL, S_OK], [E_FAIL, S_OK])


# -- deliberate differences -------------------------------------------------------


def mode(tree_root: Path, rel: str) -> int:
    return stat.S_IMODE((tree_root / rel).stat().st_mode)


def test_difference_file_mode(sides: tuple[Side, Side]) -> None:
    (s1, t1, r1), (s2, t2, r2) = both(sides, "mode", lambda h, r: h.copy_file(b"m", str(r), "f", 0))
    assert s1 == s2 and t1 == t2
    umask = os.umask(0)
    os.umask(umask)
    assert mode(r1, "f") == 0o644 & ~umask  # ours: not executable
    assert mode(r2, "f") == 0o744 & ~umask  # reference: owner-executable


def test_difference_last_path_component_is_created(sides: tuple[Side, Side]) -> None:
    (s1, t1, _), (s2, t2, _) = both(
        sides, "lastcomp", lambda h, r: h.copy_file(b"x", f"{r}/a/b", "f", CREATE_PATH)
    )
    assert s1 == [S_OK] * 3 and t1 == {"a": "dir", "a/b": "dir", "a/b/f": b"x"}
    # The reference creates only components followed by "/" and then fails to open.
    assert s2 == [E_FAIL] and t2 == {"a": "dir"}


def test_difference_complete_without_start(sides: tuple[Side, Side]) -> None:
    (s1, _, _), (s2, _, _) = both(sides, "complete", lambda h, r: [h.complete()])
    assert s1 == [E_FAIL]  # there is no copy to report success for
    assert s2 == [S_OK]


def test_difference_dangling_symlink_at_the_target(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        (r / "pub").mkdir()
        (r / "pub" / "f").symlink_to(r / "elsewhere")
        return h.copy_file(b"evil", str(r / "pub"), "f", 0)

    (s1, t1, _), (s2, t2, _) = both(sides, "dangling", scenario)
    assert s1 == [ALREADY_EXISTS] and "elsewhere" not in t1
    # The reference's access() check says "absent" and open() follows the link.
    assert s2 == [S_OK] * 3 and t2["elsewhere"] == b"evil"


def test_difference_symlink_planted_in_the_path(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        (r / "secret").mkdir()
        (r / "tmp").mkdir()
        (r / "tmp").chmod(0o1777)
        (r / "tmp" / "inbox").symlink_to(r / "secret")
        return h.copy_file(b"evil", str(r / "tmp" / "inbox"), "f", 0)

    (s1, t1, _), (s2, t2, _) = both(sides, "plantdir", scenario)
    assert s1 == [E_FAIL] and t1["secret"] == "dir" and "secret/f" not in t1
    assert s2 == [S_OK] * 3 and t2["secret/f"] == b"evil"


def test_difference_symlink_at_the_target_with_overwrite(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        (r / "victim").write_bytes(b"precious")
        (r / "f").symlink_to(r / "victim")
        return h.copy_file(b"host", str(r), "f", OVER_WRITE)

    (s1, t1, _), (s2, t2, r2) = both(sides, "linkover", scenario)
    assert s1 == s2 == [S_OK] * 3
    assert t1["victim"] == b"precious" and t1["f"] == b"host"  # the link was replaced
    assert t2["victim"] == b"host" and t2["f"] == ("link", str(r2 / "victim"))


def test_difference_failed_write_then_complete(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        # Host sends COMPLETE although a WRITE failed (offset beyond the largest file).
        return [
            h.start("f", str(r), 0, 10),
            h.write(1 << 63, b"x"),
            h.write(0, b"ok"),
            h.complete(),
        ]

    (s1, t1, _), (s2, t2, _) = both(sides, "failcomplete", scenario)
    assert s1 == [S_OK, E_FAIL, E_FAIL, E_FAIL] and t1 == {}
    # The reference reports success for a file that is missing data.
    assert s2 == [S_OK, E_FAIL, S_OK, S_OK] and t2 == {"f": b"ok"}


def test_difference_oversized_write_is_refused(sides: tuple[Side, Side]) -> None:
    def scenario(h: FcopyHost, r: Path) -> list[int]:
        return [h.start("f", str(r), 0, 10), h.write(0, b"abc", size=6150), h.cancel()]

    (s1, _, _), (s2, t2, _) = both(sides, "oversize", scenario)
    assert s1 == [S_OK, E_FAIL, S_OK]
    # The reference writes 6150 bytes, reading past the message into its stack.
    assert s2 == [S_OK, S_OK, S_OK] and t2 == {}


def test_unknown_operation(sides: tuple[Side, Side]) -> None:
    (s1, _, _), (s2, _, _) = both(
        sides, "unknown", lambda h, r: [h.send(sim_fcopy.encode_header(9))]
    )
    assert s1 == s2 == [E_FAIL]
