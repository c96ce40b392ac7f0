# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.osinfo: the auto pool's values, quirks included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from hvdaemons.kvp import osinfo
from hvdaemons.kvp.paths import KvpPaths
from tests.support.kvp import NEUTRAL_CWD, daemon_env

UNAME = os.uname_result(("Linux", "guest", "6.1.0-18-amd64", "#1 SMP", "x86_64"))


def paths(tmp_path: Path, **files: bytes) -> KvpPaths:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return KvpPaths(
        state_dir=str(tmp_path),
        os_release=str(tmp_path / "os-release"),
        release_files=(str(tmp_path / "SuSE-release"), str(tmp_path / "redhat-release")),
    )


def test_uname_fields(tmp_path: Path) -> None:
    info = osinfo.collect(paths(tmp_path), UNAME)
    assert info == osinfo.OsInfo(
        os_name="Linux",  # no release file at all: uname -s
        os_major="",
        os_minor="",
        os_build="6.1.0-18-amd64",
        os_version="6.1.0",  # cut at the first '-'
        processor_arch="x86_64",
    )


def test_os_release_like_debian(tmp_path: Path) -> None:
    data = b'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\nID=debian\n'
    info = osinfo.collect(paths(tmp_path, **{"os-release": data}), UNAME)
    assert (info.os_name, info.os_major, info.os_minor) == ("Debian GNU/Linux", "13", "")


def test_os_release_quirks(tmp_path: Path) -> None:
    data = (
        b"# NAME=commented\n"
        b"NAME='It''s \"quoted\"' \\$ and\\\\slash\n"  # every quote dropped, escapes resolved
        b"VERSION_ID=1\n"
        b"VERSION_ID=2=two\n"  # split at the first '=', later lines win
        b"NAME =spaced\n"  # not NAME
    )
    info = osinfo.collect(paths(tmp_path, **{"os-release": data}), UNAME)
    assert info.os_name == "Its quoted $ and\\slash"
    assert info.os_major == "2=two"


def test_os_release_long_lines_are_read_in_511_byte_pieces(tmp_path: Path) -> None:
    # fgets(buf, 512): the rest of a long line is read as a line of its own.
    data = b"PRETTY_NAME=" + b"x" * (511 - 12) + b"NAME=tail\n"
    info = osinfo.collect(paths(tmp_path, **{"os-release": data}), UNAME)
    assert info.os_name == "tail"
    assert osinfo.parse_os_release(b"NAME=" + b"y" * 600) == {b"NAME": b"y" * 506}


def test_os_release_without_name_is_uname(tmp_path: Path) -> None:
    info = osinfo.collect(
        paths(tmp_path, **{"os-release": b"ID=x\n", "redhat-release": b"R\n"}), UNAME
    )
    assert (info.os_name, info.os_major) == ("Linux", "")


def test_release_file_fallback(tmp_path: Path) -> None:
    p = paths(tmp_path, **{"redhat-release": b"Red Hat Enterprise Linux\n7\n9\nextra\n"})
    info = osinfo.collect(p, UNAME)
    assert (info.os_name, info.os_major, info.os_minor) == ("Red Hat Enterprise Linux", "7", "9")
    (tmp_path / "SuSE-release").write_bytes(
        b"SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\n"
    )
    info = osinfo.collect(p, UNAME)
    assert (info.os_name, info.os_major, info.os_minor) == (
        "SUSE Linux Enterprise Server 11 (x86_64)",
        "VERSION = 11",
        "",
    )


def test_non_utf8_bytes_survive(tmp_path: Path) -> None:
    info = osinfo.collect(paths(tmp_path, **{"os-release": b"NAME=caf\xe9\n"}), UNAME)
    assert info.os_name.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_fqdn_is_getaddrinfo_canonname() -> None:
    host = socket.gethostname()
    try:
        want = socket.getaddrinfo(
            host, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME
        )[0][3]
    except socket.gaierror as e:
        want = f"getaddrinfo failed: 0x{(e.errno or 0) & 0xFFFFFFFF:x} {e.strerror}"
    assert osinfo.resolve_fqdn() == want
    resolver = osinfo.FqdnResolver()
    resolver.start()
    assert resolver.result() == want


def test_fqdn_error_text_format() -> None:
    # The reference prints gai error codes with %x: glibc's are negative.
    # A private UTS namespace gets a host name nothing resolves.
    script = (
        "hostname no-such-host.invalid && mount --bind /dev/null /etc/hosts && "
        'exec "$0" -c "from hvdaemons.kvp import osinfo; print(osinfo.resolve_fqdn())"'
    )
    res = subprocess.run(
        [
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            sys.executable,
        ],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    assert out.startswith("getaddrinfo failed: 0xffff"), out
    assert out.split(" ", 3)[3] in (
        "Name or service not known",
        "Temporary failure in name resolution",
    )


def test_auto_key_names() -> None:
    # The index order of kvp_pool_enumerate() in tools/hv/hv_kvp_daemon.c
    # (tests/kvp/test_differential.py also compares every index with the
    # reference daemon's answer).
    assert osinfo.AUTO_KEYS == (
        "FullyQualifiedDomainName",
        "IntegrationServicesVersion",
        "NetworkAddressIPv4",
        "NetworkAddressIPv6",
        "OSBuildNumber",
        "OSName",
        "OSMajorVersion",
        "OSMinorVersion",
        "OSVersion",
        "ProcessorArchitecture",
    )
    assert (osinfo.FQDN, osinfo.LIC_VERSION, osinfo.NET_IPV4, osinfo.NET_IPV6) == (0, 1, 2, 3)


def test_slow_fqdn_lookup_reports_the_host_name_meanwhile() -> None:
    release = threading.Event()

    class Stuck(osinfo.FqdnResolver):
        def _run(self) -> None:  # the lookup waits on an unreachable DNS server
            release.wait(10)
            self._value = "late.example"

    resolver = Stuck(wait=0.05)
    resolver.start()
    assert resolver.result() == socket.gethostname()
    release.set()
    resolver._thread.join(10)
    assert resolver.result() == "late.example"
