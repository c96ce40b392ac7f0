# SPDX-License-Identifier: GPL-2.0-only
"""One dispatch for both transports (hvdaemons.fcopy.dispatch), with a real FileCopier.

The char device hands over UTF-8 names (utf16=False), the uio ring the host's
UTF-16LE (utf16=True); everything else is the same, so every case runs in both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvdaemons import log
from hvdaemons.fcopy.dispatch import Dispatch
from hvdaemons.fcopy.writer import FileCopier
from hvdaemons.protocol import fcopy as P
from hvdaemons.protocol.status import HvStatus
from hvsim.protocol import fcopy as sim_fcopy

BOTH = pytest.mark.parametrize("utf16", [False, True], ids=["chardev", "uio"])


def bad_lines(logs: log.Capture) -> list[str]:
    return [r.message for r in logs.records if r.name == "hvdaemons.fcopy.dispatch"]


@BOTH
def test_a_copy_from_start_to_complete(tmp_path: Path, utf16: bool) -> None:
    dispatch = Dispatch(FileCopier(), utf16=utf16)
    name = "Grüße-日本-😀.txt"
    assert (
        dispatch.status(sim_fcopy.encode_start(name, str(tmp_path / "in"), P.CREATE_PATH, 9, utf16=utf16))
        == 0
    )
    assert dispatch.status(sim_fcopy.encode_write(0, b"hello")) == HvStatus.S_OK
    assert dispatch.status(sim_fcopy.encode_write(5, b"!!!!")) == HvStatus.S_OK
    assert dispatch.status(sim_fcopy.encode_complete() + bytes(28)) == HvStatus.S_OK
    assert (tmp_path / "in" / name).read_bytes() == b"hello!!!!"
    # CANCEL of nothing succeeds, as in the reference.
    assert dispatch.status(sim_fcopy.encode_cancel()) == HvStatus.S_OK


@BOTH
def test_a_bad_message_fails_the_copy_and_is_logged_once_per_copy(
    tmp_path: Path, utf16: bool, logs: log.Capture
) -> None:
    dispatch = Dispatch(FileCopier(), utf16=utf16)
    assert dispatch.status(sim_fcopy.encode_start("f", str(tmp_path), 0, 0, utf16=utf16)) == HvStatus.S_OK
    assert dispatch.status(sim_fcopy.encode_write(0, b"data")) == HvStatus.S_OK
    for _ in range(3):
        assert dispatch.status(sim_fcopy.encode_write(4, b"x", size=P.DATA_FRAGMENT + 1)) == HvStatus.E_FAIL
    assert dispatch.status(sim_fcopy.encode_header(9)) == HvStatus.E_FAIL  # another kind of mistake, same copy
    assert dispatch.status(sim_fcopy.encode_write(4, b"late")) == HvStatus.E_FAIL  # the copy is dead
    assert dispatch.status(sim_fcopy.encode_complete()) == HvStatus.E_FAIL
    assert os.listdir(tmp_path) == []  # no partial file anywhere
    assert bad_lines(logs) == ["WRITE_TO_FILE of 6145 bytes exceeds the 6144-byte fragment"]
    # The next copy may be complained about again.
    assert dispatch.status(sim_fcopy.encode_start("g", str(tmp_path), 0, 0, utf16=utf16)) == HvStatus.S_OK
    assert dispatch.status(sim_fcopy.encode_header(9)) == HvStatus.E_FAIL
    assert bad_lines(logs)[1:] == ["Unknown operation: 9"]


@BOTH
def test_short_and_unknown_messages_get_e_fail(tmp_path: Path, utf16: bool) -> None:
    dispatch = Dispatch(FileCopier(), utf16=utf16)
    assert dispatch.status(b"\x01\0") == HvStatus.E_FAIL
    assert dispatch.status(sim_fcopy.encode_write(0, b"")[:51]) == HvStatus.E_FAIL
    assert dispatch.status(sim_fcopy.encode_start("f", str(tmp_path), 0, 0, utf16=utf16)[:100]) == HvStatus.E_FAIL
    assert dispatch.status(sim_fcopy.encode_header(77)) == HvStatus.E_FAIL
    assert os.listdir(tmp_path) == []


class BrokenWriter(FileCopier):
    """A FileCopier with a bug in WRITE (the dispatch is under test, not the writer)."""

    def write(self, offset: int, data: bytes | memoryview) -> int:
        raise RuntimeError("a bug")


@BOTH
def test_a_bug_fails_the_request_and_its_copy_not_the_daemon(
    tmp_path: Path, utf16: bool, logs: log.Capture
) -> None:
    dispatch = Dispatch(BrokenWriter(), utf16=utf16)
    assert dispatch.status(sim_fcopy.encode_start("f", str(tmp_path), 0, 0, utf16=utf16)) == HvStatus.S_OK
    assert len(os.listdir(tmp_path)) == 1  # the temporary file
    assert dispatch.status(sim_fcopy.encode_write(0, b"data")) == HvStatus.E_FAIL
    [record] = [r for r in logs.records if r.name == "hvdaemons.fcopy.dispatch"]
    said, _, trace = record.message.partition("\n")
    assert (record.level, said) == (log.ERROR, "file copy request failed")
    assert trace.startswith("Traceback (most recent call last):")
    assert os.listdir(tmp_path) == []  # the partial file went at once
    assert dispatch.status(sim_fcopy.encode_complete()) == HvStatus.E_FAIL
