# SPDX-License-Identifier: GPL-2.0-only
"""The auto pool (pool 2): the guest information the host reads by ENUMERATE.

Mirrors kvp_get_os_info(), kvp_get_domain_name() and the KVP_POOL_AUTO
branch of main() in tools/hv/hv_kvp_daemon.c: ten keys in a fixed order,
computed once at start except the two address lists (computed per request
by hvdaemons.kvp.ipinfo) and IntegrationServicesVersion (the string the
kernel sent at registration).

The values are reproduced exactly, quirks included: the os-release reader
works on fgets() chunks of at most 511 bytes, drops every quote and newline
and un-escapes backslashes; a failed FQDN lookup reports the error text as
the FQDN ("getaddrinfo failed: 0x<code> <message>").  One improvement: the
FQDN lookup (which may wait on DNS) runs in a thread started at the same
point as the reference's lookup, so registering with the kernel is not held
up by it; the first request that needs the FQDN waits for it (within
bounds, see FqdnResolver).
"""

from __future__ import annotations

import os
import socket
import threading

from ..log import Once, get
from ..protocol.kvp import MAX_VALUE_SIZE
from ..value import Value
from .paths import KvpPaths

log = get(__name__)

# Index -> key name (enum key_index in hv_kvp_daemon.c).
AUTO_KEYS = (
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
FQDN, LIC_VERSION, NET_IPV4, NET_IPV6 = 0, 1, 2, 3

# The reference's default before the kernel's registration reply arrives.
UNKNOWN_VERSION = "Unknown version"

# How long the first request that needs the FQDN waits for its lookup (seconds).
FQDN_WAIT = 20.0

# fgets(buf, 512): at most 511 bytes per read.
_LINE_MAX = 511
# full_domain_name[HV_KVP_EXCHANGE_MAX_VALUE_SIZE] with snprintf().
_FQDN_MAX = MAX_VALUE_SIZE - 1


class OsInfo(Value):
    """What kvp_get_os_info() computes (all text; bytes decoded with surrogateescape)."""

    __slots__ = ("os_name", "os_major", "os_minor", "os_build", "os_version", "processor_arch")

    def __init__(
        self,
        os_name: str,
        os_major: str,
        os_minor: str,
        os_build: str,
        os_version: str,
        processor_arch: str,
    ) -> None:
        self.os_name = os_name
        self.os_major = os_major
        self.os_minor = os_minor
        self.os_build = os_build
        self.os_version = os_version
        self.processor_arch = processor_arch


def _fgets_chunks(data: bytes) -> list[bytes]:
    """The successive results of fgets(buf, 512, file) over data."""
    chunks = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos, pos + _LINE_MAX)
        end = pos + _LINE_MAX if nl < 0 else nl + 1
        chunks.append(data[pos:end])
        pos = end
    return chunks


def _c_string(chunk: bytes) -> bytes:
    nul = chunk.find(b"\0")
    return chunk if nul < 0 else chunk[:nul]


def _unquote(value: bytes) -> bytes:
    """Drop ', " and newlines; a backslash takes the next byte literally."""
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == 0x5C:  # backslash
            i += 1
            if i >= len(value):
                break
            out.append(value[i])
        elif c not in (0x27, 0x22, 0x0A):
            out.append(c)
        i += 1
    return bytes(out)


def parse_os_release(data: bytes) -> dict[bytes, bytes]:
    """NAME and VERSION_ID as the reference reads them (later lines win)."""
    found: dict[bytes, bytes] = {}
    for chunk in _fgets_chunks(data):
        line = _c_string(chunk)
        if line.startswith(b"#"):
            continue
        name, eq, value = line.partition(b"=")
        if not eq:
            continue
        if name in (b"NAME", b"VERSION_ID"):
            found[name] = _unquote(value)
    return found


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def collect(paths: KvpPaths | None = None, uname: os.uname_result | None = None) -> OsInfo:
    """kvp_get_os_info(): uname, then os-release, else the SuSE/redhat release file."""
    paths = paths or KvpPaths()
    u = uname or os.uname()
    name = u.sysname
    major = minor = ""
    data = _read(paths.os_release)
    if data is not None:
        fields = parse_os_release(data)
        if b"NAME" in fields:
            name = _text(fields[b"NAME"])
        if b"VERSION_ID" in fields:
            major = _text(fields[b"VERSION_ID"])
    else:
        for release_file in paths.release_files:
            data = _read(release_file)
            if data is None:
                continue
            # Up to three lines: name, major, minor (each cut at its newline).
            lines = [_text(_c_string(c).split(b"\n", 1)[0]) for c in _fgets_chunks(data)[:3]]
            if lines:
                name = lines[0]
            if len(lines) > 1:
                major = lines[1]
            if len(lines) > 2:
                minor = lines[2]
            break
    return OsInfo(
        os_name=name,
        os_major=major,
        os_minor=minor,
        os_build=u.release,
        # The host expects x.y.z: cut at the first '-'.
        os_version=u.release.split("-", 1)[0],
        processor_arch=u.machine,
    )


def resolve_fqdn() -> str:
    """kvp_get_domain_name(): the canonical name of the host name, or the error text."""
    host = os.fsencode(socket.gethostname())
    try:
        # bytes, not str: no IDNA re-encoding the C library would not do.
        infos = socket.getaddrinfo(
            host, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME
        )
    except socket.gaierror as e:
        code = e.errno if isinstance(e.errno, int) else 0
        return f"getaddrinfo failed: 0x{code & 0xFFFFFFFF:x} {e.strerror}"[:_FQDN_MAX]
    except OSError:
        # EAI_SYSTEM surfaces as a plain OSError; gai_strerror() calls it this.
        code = getattr(socket, "EAI_SYSTEM", -11)
        return f"getaddrinfo failed: 0x{code & 0xFFFFFFFF:x} System error"
    except UnicodeError:
        return ""
    return infos[0][3][:_FQDN_MAX] if infos else ""


class FqdnResolver:
    """Resolves the FQDN once, in the background.

    result() waits for it, but not past wait seconds (default FQDN_WAIT,
    well inside the kernel's 30 s request timeout): a lookup stuck on an
    unreachable DNS server then yields the plain host name until it ends.
    The reference would instead not have registered yet.
    """

    def __init__(self, wait: float = FQDN_WAIT) -> None:
        self._value: str | None = None
        self._wait = wait
        self._late = Once(log)
        self._thread = threading.Thread(target=self._run, name="fqdn", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._value = resolve_fqdn()

    def result(self) -> str:
        if self._value is None:
            self._thread.join(self._wait)
        if self._value is not None:
            return self._value
        self._late(
            log.WARNING,
            "FQDN lookup still running after %.0fs; reporting the host name",
            self._wait,
        )
        return socket.gethostname()[:_FQDN_MAX]
