# SPDX-License-Identifier: GPL-2.0-only
"""IP information for KVP: GET_IP_INFO, SET_IP_INFO and the auto-pool address lists.

Mirrors kvp_mac_to_ip_info(), kvp_get_ip_info(), kvp_get_ipconfig_info(),
kvp_set_ip_info() and their helpers in tools/hv/hv_kvp_daemon.c (Linux
6.1-6.17).  Output strings match the reference byte for byte, except where
noted below; addresses, prefixes and routes come from rtnetlink instead of
getifaddrs() and `ip route` pipelines.

Deliberate differences from the reference (see spec kvp.md §8, §9, §13):

* The interface is matched exactly (no name-prefix match: eth1 is not eth10),
  and the MAC compare ignores case and accepts '-' or no separators.
* gate_way lists only the default routes leaving through the adapter itself
  (per-interface, like <= 6.13), read from the kernel, including every
  next hop of a multipath route; >= 6.14 lists the default gateways of all
  interfaces, which tells the host nothing about this adapter.  Duplicates
  are dropped.
* Every string is kept below the kernel's UTF-16 limits (whole entries
  only), so the host never receives a string cut off without terminator.
* Helper scripts run with argv lists (never a shell), a timeout and a
  bounded read; a missing, failing or hanging helper gives a logged default.
  hv_get_dns_info gets the interface name (as >= 6.14 and RHEL do).
* SET_IP_INFO validates everything before writing anything, writes both
  files mode 0600 via rename, and writes NetworkManager's own list syntax
  in the keyfile (`dns=a;b;`, one `gateway=`), not the reference's commas.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import shlex
import signal
import socket
import time
from dataclasses import dataclass

from .. import _ffi
from ..protocol.kvp import IpValue
from . import netlink
from .paths import KvpPaths

log = logging.getLogger(__name__)

# Helpers must finish well within the kernel's 30 s KVP timeout
# (HV_UTIL_TIMEOUT); two get helpers run per GET_IP_INFO.
GET_HELPER_TIMEOUT = 5.0
SET_HELPER_TIMEOUT = 20.0
# Enough for any sane helper output; more is read and dropped.
_HELPER_OUTPUT_MAX = 64 * 1024

ADDR_FAMILY_IPV4 = _ffi.const("ADDR_FAMILY_IPV4")
ADDR_FAMILY_IPV6 = _ffi.const("ADDR_FAMILY_IPV6")

# Longest strings that survive the kernel's UTF-8 -> UTF-16 conversion with
# their terminator (hv_kvp.c: MAX_IP_ADDR_SIZE, MAX_GATEWAY_SIZE units; the
# ENUMERATE value: HV_KVP_EXCHANGE_MAX_VALUE_SIZE / 2 - 2 units).  UTF-8
# never has fewer bytes than UTF-16 units, so byte lengths are safe bounds.
_IP_ADDR_MAX = 1023
_SUB_NET_MAX = 1023
_GATE_WAY_MAX = 511
_DNS_ADDR_MAX = 1023
_ENUM_VALUE_MAX = 1022

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# The value GET_IP_INFO returns and SET_IP_INFO applies: the protocol's own
# struct hv_kvp_ipaddr_value (';'-joined UTF-8 strings), under this module's name.
IpInfo = IpValue


def _status(name: str) -> int:
    return _ffi.const(name)


# ------------------------------------------------------------ helper runner


def _helper_env() -> dict[str, str]:
    env = dict(os.environ)
    # Under systemd PATH may be unset; the scripts call nmcli, ip, etc.
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


@dataclass(frozen=True)
class HelperResult:
    # Exit status; None if the helper could not be started or was killed
    # for running too long.
    returncode: int | None
    stdout: bytes
    stderr: bytes
    # Why it did not succeed, for a log line; None after exit status 0.
    failure: str | None = None


def _stderr_summary(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[:400] + "..." if len(text) > 400 else text


def run_helper(argv: list[str], timeout: float) -> HelperResult:
    """Run a helper script without a shell, bounded in time and output.

    The helper gets its own session: a helper that overruns the timeout is
    killed together with everything it started.  Once the helper itself has
    exited, whatever it left running in the background (a DHCP client
    started by ifup) is left alone.
    """
    # Imported here: the auto pool's address lists (the common reason this
    # module is loaded) need no helper, and subprocess pulls in locale too.
    import subprocess

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
            env=_helper_env(),
        )
    except OSError as e:
        return HelperResult(None, b"", b"", f"cannot run it: {e.strerror or e}")
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    chunks: dict[int, bytearray] = {
        proc.stdout.fileno(): bytearray(),
        proc.stderr.fileno(): bytearray(),
    }
    returncode: int | None = None
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                break
            if returncode is None:
                returncode = proc.poll()
                if returncode is not None:
                    # Exited, but a background child may still hold the
                    # pipes: read what is already there, then stop.
                    deadline = min(deadline, now + 0.2)
            for key, _ in sel.select(min(deadline - now, 0.1)):
                fd = int(key.fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    continue
                buf = chunks[fd]
                if len(buf) < _HELPER_OUTPUT_MAX:
                    buf += data[: _HELPER_OUTPUT_MAX - len(buf)]
    failure: str | None = None
    if returncode is None:
        try:
            returncode = proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            returncode = None
            failure = f"did not finish within {timeout:g} s; killed"
    stdout = bytes(chunks[proc.stdout.fileno()])
    stderr = bytes(chunks[proc.stderr.fileno()])
    proc.stdout.close()
    proc.stderr.close()
    if returncode is not None and returncode < 0:
        failure = f"killed by signal {-returncode}: {_stderr_summary(stderr)}"
    elif returncode:
        failure = f"failed with exit status {returncode}: {_stderr_summary(stderr)}"
    return HelperResult(returncode, stdout, stderr, failure)


def _command_text(argv: list[str]) -> str:
    # For log lines only: quoted so that odd interface names read unambiguously.
    return shlex.join(argv)


def _script(paths: KvpPaths, name: str) -> str:
    # An empty scripts_dir means "look it up in PATH" (openSUSE builds
    # KVP_SCRIPTS_PATH empty).
    return os.path.join(paths.scripts_dir, name) if paths.scripts_dir else name


# ------------------------------------------------------------------ sysfs


def _interfaces(paths: KvpPaths) -> list[str]:
    try:
        names = os.listdir(paths.sys_class_net)
    except OSError as e:
        log.error("cannot list %s: %s", paths.sys_class_net, e.strerror or e)
        return []
    # The reference takes readdir() order; sorting makes the choice among
    # interfaces sharing a MAC (or a GUID) repeatable.
    return sorted(names)


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


_MAC_SEPARATORS = re.compile(r"[:.\-]")


def _mac_key(text: str) -> str:
    return _MAC_SEPARATORS.sub("", text.strip()).upper()


# ------------------------------------------------------------ GET_IP_INFO


class _Joined:
    """A ';'-joined list that refuses entries which would pass a byte limit."""

    def __init__(self, limit: int, *, trailing: bool = False) -> None:
        self.limit = limit
        self.trailing = trailing
        self.items: list[str] = []
        self._size = 0

    def text(self) -> str:
        if self.trailing:
            return "".join(f"{item};" for item in self.items)
        return ";".join(self.items)

    def _cost(self, item: str) -> int:
        separator = 1 if self.items or self.trailing else 0
        return len(item.encode("utf-8", "surrogateescape")) + separator

    def fits(self, item: str) -> bool:
        return self._size + self._cost(item) <= self.limit

    def add(self, item: str) -> bool:
        if not self.fits(item):
            return False
        self._size += self._cost(item)
        self.items.append(item)
        return True


def _prefix_to_netmask4(prefixlen: int) -> str:
    prefixlen = max(0, min(prefixlen, 32))
    mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
    return socket.inet_ntop(socket.AF_INET, mask.to_bytes(4, "big"))


def _link_addresses(state: netlink.NetState, link: netlink.Link) -> list[netlink.Address]:
    if link.is_loopback:
        # The reference skips loopback-flagged getifaddrs entries.
        return []
    return [
        a
        for a in state.addresses
        if a.index == link.index and a.family in (socket.AF_INET, socket.AF_INET6)
    ]


def _gateways(state: netlink.NetState, ifindex: int) -> list[str]:
    """Default-route gateways leaving through ifindex: IPv4 routes first, then IPv6."""
    found: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in state.routes:
            if route.family != family or not route.is_default:
                continue
            for hop in route.nexthops:
                if hop.oif == ifindex and hop.gateway is not None and hop.gateway not in found:
                    found.append(hop.gateway)
    return found


def _dns_servers(ifname: str, paths: KvpPaths, timeout: float) -> str:
    argv = [_script(paths, "hv_get_dns_info"), ifname]
    result = run_helper(argv, timeout)
    if result.failure:
        log.error("GET_IP_INFO: %s %s", _command_text(argv), result.failure)
    if result.returncode is None:
        return ""  # killed or never started: its output may be incomplete
    dns = _Joined(_DNS_ADDR_MAX, trailing=True)
    # A helper that failed may still have printed servers: use them, as the
    # reference (popen) does.
    for raw in result.stdout.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not dns.add(line):
            break
    return dns.text()


def _dhcp_enabled(ifname: str, paths: KvpPaths, timeout: float) -> bool:
    argv = [_script(paths, "hv_get_dhcp_info"), ifname]
    result = run_helper(argv, timeout)
    if result.failure:
        log.error("GET_IP_INFO: %s %s", _command_text(argv), result.failure)
    if result.returncode is None:
        return False
    first = result.stdout.split(b"\n", 1)[0]
    return first.startswith(b"Enabled")


def _gather(
    adapter_id: str,
    state: netlink.NetState,
    link: netlink.Link,
    addrs: list[netlink.Address],
    paths: KvpPaths,
    timeout: float,
) -> IpInfo:
    ips = _Joined(_IP_ADDR_MAX)
    subnets = _Joined(_SUB_NET_MAX)
    family = 0
    for a in addrs:
        if a.family == socket.AF_INET:
            subnet = _prefix_to_netmask4(a.prefixlen)
            bit = ADDR_FAMILY_IPV4
        else:
            subnet = f"/{a.prefixlen}"
            bit = ADDR_FAMILY_IPV6
        # Address and subnet lists stay in lock-step: the host pairs them by position.
        if not (ips.fits(a.address) and subnets.fits(subnet)):
            log.warning("GET_IP_INFO: too many addresses on %s; list truncated", link.name)
            break
        ips.add(a.address)
        subnets.add(subnet)
        family |= bit
    gateways = _Joined(_GATE_WAY_MAX, trailing=True)
    for gw in _gateways(state, link.index):
        if not gateways.add(gw):
            break
    return IpInfo(
        adapter_id=adapter_id,
        addr_family=family,
        dhcp_enabled=_dhcp_enabled(link.name, paths, timeout),
        ip_addr=ips.text(),
        sub_net=subnets.text(),
        gate_way=gateways.text(),
        dns_addr=_dns_servers(link.name, paths, timeout),
    )


def get_ip_info(
    adapter_id: str,
    addr_family: int,
    paths: KvpPaths,
    *,
    timeout: float = GET_HELPER_TIMEOUT,
) -> tuple[int, IpInfo | None]:
    """KVP_OP_GET_IP_INFO: (HV status, info) for the adapter with MAC adapter_id.

    addr_family is ignored, as by the reference: both families are always
    reported and addr_family in the answer says which were seen.
    """
    del addr_family
    wanted = _mac_key(adapter_id)
    if not wanted:
        log.error("GET_IP_INFO: empty adapter id")
        return _status("HV_E_FAIL"), None
    candidates = [
        name
        for name in _interfaces(paths)
        if _mac_key(_read_first_line(os.path.join(paths.sys_class_net, name, "address")) or "")
        == wanted
    ]
    if not candidates:
        log.info("GET_IP_INFO: no interface has MAC address %s", adapter_id)
        return _status("HV_E_FAIL"), None
    try:
        state = netlink.snapshot()
    except OSError as e:
        log.error("GET_IP_INFO: cannot read network state: %s", e)
        return _status("HV_E_FAIL"), None
    # A VF shares the synthetic NIC's MAC but has no address: take the first
    # match with an address, else the last match (as the reference's loop ends).
    chosen: tuple[netlink.Link, list[netlink.Address]] | None = None
    for name in candidates:
        link = state.link_by_name(name)
        if link is None:
            continue  # vanished between the sysfs scan and the netlink dump
        chosen = (link, _link_addresses(state, link))
        if chosen[1]:
            break
    if chosen is None:
        log.info("GET_IP_INFO: interface with MAC address %s vanished", adapter_id)
        return _status("HV_E_FAIL"), None
    info = _gather(adapter_id, state, chosen[0], chosen[1], paths, timeout)
    return _status("HV_S_OK"), info


def address_lists() -> tuple[str, str]:
    """(NetworkAddressIPv4, NetworkAddressIPv6) for the auto pool.

    Every address of every non-loopback interface in getifaddrs() order,
    ';'-joined.  Capped at whole addresses within what the kernel passes to
    the host for an ENUMERATE value (1022 UTF-16 units), where the reference
    would let the kernel cut the last address in half.
    """
    try:
        state = netlink.snapshot(with_routes=False)
    except OSError as e:
        log.error("cannot read interface addresses: %s", e)
        return "", ""
    loopback = {link.index for link in state.links if link.is_loopback}
    lists: dict[int, _Joined] = {
        socket.AF_INET: _Joined(_ENUM_VALUE_MAX),
        socket.AF_INET6: _Joined(_ENUM_VALUE_MAX),
    }
    for a in state.addresses:
        joined = lists.get(a.family)
        if joined is None or a.index in loopback:
            continue
        joined.add(a.address)
    return lists[socket.AF_INET].text(), lists[socket.AF_INET6].text()


# ------------------------------------------------------------ SET_IP_INFO


class InvalidArgument(ValueError):
    """An address or mask from the host that cannot be configured."""


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _ipv6_bytes(text: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None


def _expand_ipv6(raw: bytes) -> str:
    # Reference expand_ipv6(): 8 groups of 4 lower-case digits, no "::".
    return ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))


def _entries(text: str) -> list[str]:
    # parse_ip_val_buffer() splits at ';' and strips leading spaces.  We also
    # strip trailing blanks and skip empty entries instead of stopping there.
    return [e.strip() for e in text.split(";") if e.strip()]


def _leading_ones(raw: bytes) -> int:
    n = 0
    for byte in raw:
        if byte == 0xFF:
            n += 8
            continue
        while byte & 0x80:
            n += 1
            byte = (byte << 1) & 0xFF
        break
    return n


_PREFIX_RE = re.compile(r"/?([0-9]{1,3})")


def ifcfg_text(ifname: str, mac: str, info: IpInfo) -> str:
    """The ifcfg file of kvp_set_ip_info(), line for line.  Raises InvalidArgument."""
    lines = [
        f"HWADDR={mac}",
        f"DEVICE={ifname}",
        f"BOOTPROTO={'dhcp' if info.dhcp_enabled else 'none'}",
    ]

    def field(text: str, v4_name: str, v6_name: str, kind: str) -> None:
        i = 0  # IPv4 counter (and the shared DNS counter)
        j = 0  # IPv6 counter
        for entry in _entries(text):
            if _is_ipv4(entry):
                value = entry
                if kind == "dns":
                    i += 1
                    name = f"DNS{i}"
                elif kind == "gateway" and i == 0:
                    i += 1
                    name = v4_name
                else:
                    name = f"{v4_name}{i}"
                    i += 1
            else:
                raw = _ipv6_bytes(entry)
                if raw is not None:
                    value = _expand_ipv6(raw)
                elif kind == "netmask" and _PREFIX_RE.fullmatch(entry):
                    # The reference writes any non-address netmask verbatim;
                    # we only let prefix lengths ("64", "/64") through.
                    value = entry
                else:
                    raise InvalidArgument(f"{kind} {entry!r} is not an IPv4 or IPv6 address")
                if kind == "dns":
                    i += 1
                    name = f"DNS{i}"
                elif j == 0:
                    j += 1
                    name = v6_name
                else:
                    name = f"{v6_name}_{j}"
                    j += 1
            lines.append(f"{name}={value}")

    field(info.ip_addr, "IPADDR", "IPV6ADDR", "address")
    field(info.sub_net, "NETMASK", "IPV6NETMASK", "netmask")
    field(info.gate_way, "GATEWAY", "IPV6_DEFAULTGW", "gateway")
    field(info.dns_addr, "DNS", "DNS", "dns")
    return "".join(f"{line}\n" for line in lines)


def _ipv4_plen(mask: str) -> int:
    try:
        raw = socket.inet_pton(socket.AF_INET, mask)
    except (OSError, ValueError):
        raise InvalidArgument(f"subnet {mask!r} is not an IPv4 netmask") from None
    return _leading_ones(raw)


def _ipv6_plen(mask: str) -> int:
    m = _PREFIX_RE.fullmatch(mask)
    if m is not None:
        plen = int(m.group(1))
    else:
        raw = _ipv6_bytes(mask)
        if raw is None:
            raise InvalidArgument(f"subnet {mask!r} is not an IPv6 prefix length")
        plen = _leading_ones(raw)
    if plen > 128:
        raise InvalidArgument(f"IPv6 prefix length {plen} is out of range")
    return plen


def _keyfile_escape(value: str) -> str:
    # GKeyFile unescapes backslashes in values.
    return value.replace("\\", "\\\\")


def keyfile_text(ifname: str, mac: str, info: IpInfo) -> str:
    """The NetworkManager keyfile of kvp_set_ip_info().  Raises InvalidArgument.

    Same layout as the reference; lists use NetworkManager's syntax
    (`dns=a;b;`) and only the first gateway of a family is written,
    because keyfile `gateway=` takes one address.
    """
    out = [
        "",
        "[connection]",
        f"interface-name={_keyfile_escape(ifname)}",
        "",
        "[ethernet]",
        f"mac-address={mac}",
    ]
    ips = _entries(info.ip_addr)
    subnets = _entries(info.sub_net)
    for section, family in (("ipv4", socket.AF_INET), ("ipv6", socket.AF_INET6)):
        out += ["", f"[{section}]"]
        n = 0
        # Addresses pair with subnets by position, across both families.
        for addr, mask in zip(ips, subnets):
            is4 = _is_ipv4(addr)
            if (family == socket.AF_INET) != is4:
                continue
            if not is4 and _ipv6_bytes(addr) is None:
                continue  # rejected by ifcfg_text() already
            plen = _ipv4_plen(mask) if is4 else _ipv6_plen(mask)
            n += 1
            out.append(f"address{n}={addr}/{plen}")
        if family == socket.AF_INET:
            method = "auto" if info.dhcp_enabled else ("manual" if n else "disabled")
        else:
            # dhcp_enabled is IPv4 only; without addresses let SLAAC work.
            method = "manual" if n else "auto"
        out.append(f"method={method}")
        gateways = [g for g in _entries(info.gate_way) if _family_of(g) == family]
        if gateways:
            out.append(f"gateway={gateways[0]}")
            if len(gateways) > 1:
                log.info(
                    "SET_IP_INFO: keyfile takes one %s gateway; ignoring %s",
                    section,
                    ";".join(gateways[1:]),
                )
        dns = [d for d in _entries(info.dns_addr) if _family_of(d) == family]
        if dns:
            out.append("dns=" + "".join(f"{d};" for d in dns))
    return "".join(f"{line}\n" for line in out)


def _family_of(text: str) -> int:
    if _is_ipv4(text):
        return socket.AF_INET
    if _ipv6_bytes(text) is not None:
        return socket.AF_INET6
    return 0


def _guid_key(text: str) -> str:
    return text.strip().strip("{}").strip().lower()


def _find_by_guid(paths: KvpPaths, guid: str) -> str | None:
    wanted = _guid_key(guid)
    if not wanted:
        return None
    for name in _interfaces(paths):
        found = _read_first_line(os.path.join(paths.sys_class_net, name, "device", "device_id"))
        if found is not None and _guid_key(found) == wanted:
            return name
    return None


def _write_private(path: str, text: str) -> None:
    """Replace path with text, mode 0600 whatever the umask, never half-written."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)


def set_ip_info(
    info: IpInfo,
    paths: KvpPaths,
    *,
    timeout: float = SET_HELPER_TIMEOUT,
) -> int:
    """KVP_OP_SET_IP_INFO: write ifcfg + keyfile and run hv_set_ifconfig; HV status."""
    ifname = _find_by_guid(paths, info.adapter_id)
    if ifname is None:
        log.error("SET_IP_INFO: no interface has device GUID %s", info.adapter_id)
        return _status("HV_GUID_NOTFOUND")
    if ifname in (".", "..") or "/" in ifname:
        log.error("SET_IP_INFO: refusing interface name %r", ifname)
        return _status("HV_E_FAIL")
    mac_raw = _read_first_line(os.path.join(paths.sys_class_net, ifname, "address"))
    if not mac_raw:
        log.error("SET_IP_INFO: cannot read the MAC address of %s", ifname)
        return _status("HV_E_FAIL")
    mac = mac_raw.upper()
    try:
        ifcfg = ifcfg_text(ifname, mac, info)
        keyfile = keyfile_text(ifname, mac, info)
    except InvalidArgument as e:
        log.error("SET_IP_INFO for %s: %s", ifname, e)
        return _status("HV_INVALIDARG")
    ifcfg_path = os.path.join(paths.state_dir, f"ifcfg-{ifname}")
    keyfile_path = os.path.join(paths.state_dir, f"{ifname}.nmconnection")
    try:
        _write_private(ifcfg_path, ifcfg)
        _write_private(keyfile_path, keyfile)
    except OSError as e:
        log.error(
            "Failed to write config file %s: %s", e.filename or paths.state_dir, e.strerror or e
        )
        return _status("HV_E_FAIL")
    argv = [_script(paths, "hv_set_ifconfig"), ifcfg_path, keyfile_path]
    result = run_helper(argv, timeout)
    if result.failure:
        # The reference's wording: "Failed to execute cmd '%s'; error: ...".
        log.error("Failed to execute cmd '%s'; %s", _command_text(argv), result.failure)
        return _status("HV_E_FAIL")
    return _status("HV_S_OK")
