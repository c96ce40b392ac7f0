# SPDX-License-Identifier: GPL-2.0-only
"""Helpers shared by the tests/kvp/ files (not a test module)."""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence

from hvdaemons.protocol.kvp import RECORD_SIZE
from hvsim import launch
from hvsim.launch import NEUTRAL_CWD

REPO = pathlib.Path(__file__).resolve().parents[2]
R = RECORD_SIZE
# The working directory of every child (hvsim.launch.NEUTRAL_CWD), under the
# name the tests used when it was the package's directory.
PKG_ROOT = pathlib.Path(NEUTRAL_CWD)


def daemon_argv() -> list[str]:
    """Our hv_kvp_daemon, the one under test (the installed package, see hvsim.launch)."""
    return launch.daemon_argv("hv_kvp_daemon")


def daemon_env() -> dict[str, str]:
    """Run children with this in NEUTRAL_CWD: they import the package under test."""
    return launch.child_env()


def spawn_daemon(
    device: str, state_dir: str, *extra: str, scripts_dir: str | None = None
) -> subprocess.Popen[bytes]:
    """Start our daemon in the foreground against a simulated device; stderr is a pipe."""
    argv = [*daemon_argv(), "-n", "--device", device, "--state-dir", state_dir]
    if scripts_dir is not None:
        argv += ["--scripts-dir", scripts_dir]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )




# struct kvp_record of tools/hv/hv_kvp_daemon.c: char key[512]; char value[2048];
# the pool files are arrays of it.  Built with struct, independent of
# hvdaemons.kvp.pool, so tests can hold the pool code to it.
_KVP_RECORD = struct.Struct("512s2048s")


def golden_record(key: bytes, value: bytes) -> bytes:
    """A record as the kernel layout has it, zero-filled after key and value."""
    assert len(key) <= 512 and len(value) <= 2048
    return _KVP_RECORD.pack(key, value)


def golden_parse(data: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) of every complete record: each array up to its first NUL."""
    whole = len(data) - len(data) % R
    return [
        (key.split(b"\0", 1)[0], value.split(b"\0", 1)[0])
        for key, value in _KVP_RECORD.iter_unpack(data[:whole])
    ]


def reference_record(key: bytes, value: bytes, junk: bytes = b"") -> bytes:
    """A record as the C daemon may leave it: key and value with their NULs over
    whatever the buffer held before (junk repeated over the record)."""
    rec = bytearray((junk * (R // len(junk) + 1))[:R]) if junk else bytearray(R)
    rec[: len(key) + 1] = key + b"\0"
    rec[512 : 512 + len(value) + 1] = value + b"\0"
    return bytes(rec)


def write_pool(path: os.PathLike[str] | str, records: Iterable[bytes], tail: bytes = b"") -> None:
    with open(path, "wb") as f:
        for rec in records:
            assert len(rec) == R
            f.write(rec)
        f.write(tail)


C_WRITER = r"""
/* Appends records under the POSIX whole-file lock, like Microsoft's sample
 * KVP writer and the C daemon: fcntl(F_SETLKW, F_WRLCK, 0..EOF). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int fd = open(argv[1], O_RDWR);
	int n = atoi(argv[2]);
	int i;

	if (fd < 0)
		return 1;
	for (i = 0; i < n; i++) {
		struct flock fl;
		char rec[2560];
		off_t end;

		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_SETLKW, &fl) < 0)
			return 2;
		memset(rec, 0, sizeof(rec));
		snprintf(rec, 512, "%s%d", argv[3], i);
		snprintf(rec + 512, 2048, "value %d", i);
		end = lseek(fd, 0, SEEK_END);
		if (pwrite(fd, rec, sizeof(rec), end) != sizeof(rec))
			return 3;
		fl.l_type = F_UNLCK;
		fcntl(fd, F_SETLK, &fl);
	}
	return 0;
}
"""


def build_c_writer(directory: pathlib.Path) -> pathlib.Path:
    src = directory / "kvp_writer.c"
    out = directory / "kvp_writer"
    src.write_text(C_WRITER)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(src)], check=True)
    return out


def unshare_python(code: str, *args: str, net: bool = False) -> subprocess.CompletedProcess[str]:
    """Run Python code in a private mount namespace (it may mount tmpfs freely).

    net: in a network namespace of its own too (sysfs mounted there shows its devices).
    """
    argv: Sequence[str] = [
        "unshare",
        "--mount",
        *(["--net"] if net else []),
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-c",
        code,
        *args,
    ]
    return subprocess.run(
        list(argv), cwd=NEUTRAL_CWD, env=daemon_env(), capture_output=True, text=True, timeout=120
    )
