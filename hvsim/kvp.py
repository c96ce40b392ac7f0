# SPDX-License-Identifier: GPL-2.0-only
"""Simulated host and kernel for KVP (data exchange).

Mirrors drivers/hv/hv_kvp.c on top of the hv_utils transport simulation
(chardev.ChardevKernel): KvpHost turns host-level requests (text keys and
values, REG_SZ/REG_U32/REG_U64) into the zero-filled struct hv_kvp_msg the
kernel hands the daemon, and reads the daemon's replies the way the kernel
does before answering the host (hvsim.protocol.kvp.decode_reply).

`hvsim serve` gets the kvp.* control commands; `hvsim kvp --dir DIR ...` is
their client; `hvsim demo kvp` runs the installed hv_kvp_daemon against the
simulator and prints what a Hyper-V host would see.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import hvdaemons.kvp
from hvdaemons.protocol import kvp
from hvdaemons.protocol.status import HvStatus, describe

from . import launch
from .chardev import HV_UTIL_TIMEOUT, ChardevKernel
from .demo import Part, wait_registered
from .protocol import kvp as sim_kvp
from .server import Json, SimServer, call, stop_daemon

KVP_DEVICE = "hv_kvp"
POOL_NAMES = {
    0: "External",
    1: "Guest",
    2: "Auto (intrinsic)",
    3: "Guest\\Parameter (auto external)",
    4: "auto internal",
}
_VALUE_TYPES = {"sz": sim_kvp.RegType.SZ, "u32": sim_kvp.RegType.U32, "u64": sim_kvp.RegType.U64}


class KvpHost:
    """The host side of the KVP channel, talking through a simulated kernel.

    Every method returns the HostReply the host would receive; raw_reply
    holds the daemon's last reply bytes (None when the kernel answered the
    host itself: no daemon, timeout, hang-up).
    """

    def __init__(self, kernel: ChardevKernel) -> None:
        self.kernel = kernel
        self.raw_reply: bytes | None = None

    def exchange(self, msg: bytes, *, timeout: float | None = None) -> bytes | None:
        """Hand one kernel-format message to the daemon; its raw reply, or None."""
        self.raw_reply = self.kernel.request(msg, timeout=timeout)
        return self.raw_reply

    def _ask(self, msg: bytes, op: int) -> sim_kvp.HostReply:
        reply = self.exchange(msg)
        if reply is None:
            return sim_kvp.HostReply(HvStatus.E_FAIL)
        return sim_kvp.decode_reply(op, reply)

    def set(
        self, pool: int, key: str, value: Any, value_type: int = sim_kvp.RegType.SZ
    ) -> sim_kvp.HostReply:
        return self._ask(sim_kvp.encode_set_request(pool, key, value, value_type), kvp.KvpOp.SET)

    def get(self, pool: int, key: str) -> sim_kvp.HostReply:
        return self._ask(sim_kvp.encode_get_request(pool, key), kvp.KvpOp.GET)

    def delete(self, pool: int, key: str) -> sim_kvp.HostReply:
        return self._ask(sim_kvp.encode_delete_request(pool, key), kvp.KvpOp.DELETE)

    def enumerate(self, pool: int, index: int) -> sim_kvp.HostReply:
        return self._ask(sim_kvp.encode_enumerate_request(pool, index), kvp.KvpOp.ENUMERATE)

    def enumerate_all(self, pool: int, limit: int = 100_000) -> tuple[list[tuple[str, str]], int]:
        """Every item of a pool, as the host enumerates: index 0, 1, ... until a non-zero status.

        Returns the items and the status that ended the enumeration
        (HV_S_CONT normally).
        """
        items: list[tuple[str, str]] = []
        for index in range(limit):
            reply = self.enumerate(pool, index)
            if reply.status != HvStatus.S_OK:
                return items, reply.status
            items.append((reply.key or "", reply.value or ""))
        return items, HvStatus.S_OK

    def get_ip_info(
        self, adapter_id: str, addr_family: int = kvp.ADDR_FAMILY_NONE
    ) -> sim_kvp.HostReply:
        """GET_IP_INFO for a MAC address (upper-case, ':'-separated, as Hyper-V sends it)."""
        return self._ask(
            sim_kvp.encode_get_ip_info_request(adapter_id, addr_family), kvp.KvpOp.GET_IP_INFO
        )

    def set_ip_info(self, value: kvp.IpValue) -> sim_kvp.HostReply:
        """SET_IP_INFO (IP injection) for the NIC whose device GUID is value.adapter_id."""
        return self._ask(sim_kvp.encode_set_ip_info_request(value), kvp.KvpOp.SET_IP_INFO)


# -- `hvsim serve` and its client ---------------------------------------------------


def _reply_json(reply: sim_kvp.HostReply) -> Json:
    out: Json = {"status": reply.status, "status_name": describe(reply.status)}
    if reply.key is not None:
        out["key"] = reply.key
    if reply.value is not None:
        out["value"] = reply.value
    if reply.ip is not None:
        out["ip"] = {
            "adapter_id": reply.ip.adapter_id,
            "addr_family": reply.ip.addr_family,
            "dhcp_enabled": reply.ip.dhcp_enabled,
            "ip_addr": reply.ip.ip_addr,
            "sub_net": reply.ip.sub_net,
            "gate_way": reply.ip.gate_way,
            "dns_addr": reply.ip.dns_addr,
        }
    return out


def install(server: SimServer, args: argparse.Namespace) -> None:
    kernel = server.add_chardev(KVP_DEVICE, timeout=getattr(args, "kvp_timeout", None))
    host = KvpHost(kernel)

    def value_type(req: Json) -> int:
        return _VALUE_TYPES[str(req.get("type") or "sz").lower()]

    server.add_command(
        "kvp.set",
        lambda r: _reply_json(
            host.set(int(r["pool"]), str(r["key"]), r.get("value", ""), value_type(r))
        ),
    )
    server.add_command("kvp.get", lambda r: _reply_json(host.get(int(r["pool"]), str(r["key"]))))
    server.add_command(
        "kvp.delete", lambda r: _reply_json(host.delete(int(r["pool"]), str(r["key"])))
    )
    server.add_command(
        "kvp.enumerate", lambda r: _reply_json(host.enumerate(int(r["pool"]), int(r["index"])))
    )

    def enumerate_all(r: Json) -> Json:
        items, status = host.enumerate_all(int(r["pool"]))
        return {"items": items, "status": status, "status_name": describe(status)}

    server.add_command("kvp.enumerate_all", enumerate_all)
    server.add_command(
        "kvp.get_ip_info",
        lambda r: _reply_json(
            host.get_ip_info(str(r["adapter_id"]), int(r.get("addr_family") or 0))
        ),
    )

    def set_ip_info(r: Json) -> Json:
        value = kvp.IpValue(
            adapter_id=str(r["adapter_id"]),
            addr_family=int(r.get("addr_family") or 0),
            dhcp_enabled=bool(r.get("dhcp_enabled")),
            ip_addr=str(r.get("ip_addr") or ""),
            sub_net=str(r.get("sub_net") or ""),
            gate_way=str(r.get("gate_way") or ""),
            dns_addr=str(r.get("dns_addr") or ""),
        )
        return _reply_json(host.set_ip_info(value))

    server.add_command("kvp.set_ip_info", set_ip_info)
    server.add_command("kvp.status", lambda r: {"registered": kernel.registered})


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kvp-timeout",
        type=float,
        default=None,
        metavar="S",
        help=f"seconds the simulated kernel waits for a KVP reply (default {HV_UTIL_TIMEOUT:g})",
    )


def _call(args: argparse.Namespace, request: Json) -> Json | None:
    try:
        reply = call(args.dir, request)
    except OSError as e:
        print(f"hvsim kvp: cannot reach the simulator in {args.dir}: {e}", file=sys.stderr)
        return None
    if not reply.get("ok"):
        print(f"hvsim kvp: {reply.get('error')}", file=sys.stderr)
        return None
    return reply


def _done(reply: Json | None) -> int:
    """Exit status of a client command: 0 for HV_S_OK, 1 for another status, 2 if it failed."""
    if reply is None:
        return 2
    return 0 if reply.get("status") == HvStatus.S_OK else 1


def _client_set(args: argparse.Namespace) -> int:
    reply = _call(
        args,
        {
            "command": "kvp.set",
            "pool": args.pool,
            "key": args.key,
            "value": args.value,
            "type": args.type,
        },
    )
    if reply is not None:
        print(reply["status_name"])
    return _done(reply)


def _client_get(args: argparse.Namespace) -> int:
    reply = _call(args, {"command": "kvp.get", "pool": args.pool, "key": args.key})
    if reply is not None:
        print(reply["value"] if reply["status"] == HvStatus.S_OK else reply["status_name"])
    return _done(reply)


def _client_delete(args: argparse.Namespace) -> int:
    reply = _call(args, {"command": "kvp.delete", "pool": args.pool, "key": args.key})
    if reply is not None:
        print(reply["status_name"])
    return _done(reply)


def _client_enumerate(args: argparse.Namespace) -> int:
    pools = [args.pool] if args.pool is not None else list(range(kvp.POOL_COUNT))
    worst = 0
    for pool in pools:
        reply = _call(args, {"command": "kvp.enumerate_all", "pool": pool})
        if reply is None:
            return 2
        print(f"pool {pool} ({POOL_NAMES.get(pool, '?')}): {len(reply['items'])} items")
        for key, value in reply["items"]:
            print(f"  {key} = {value}")
        if reply["status"] not in (HvStatus.S_OK, HvStatus.S_CONT):
            print(f"  enumeration ended with {reply['status_name']}")
            worst = 1
    return worst


def _print_ip(reply: Json) -> None:
    ip = reply.get("ip")
    if reply["status"] != HvStatus.S_OK or ip is None:
        print(reply["status_name"])
        return
    for name in (
        "adapter_id",
        "addr_family",
        "dhcp_enabled",
        "ip_addr",
        "sub_net",
        "gate_way",
        "dns_addr",
    ):
        print(f"{name}: {ip[name]}")


def _client_get_ip(args: argparse.Namespace) -> int:
    reply = _call(
        args, {"command": "kvp.get_ip_info", "adapter_id": args.mac, "addr_family": args.family}
    )
    if reply is not None:
        _print_ip(reply)
    return _done(reply)


def _client_set_ip(args: argparse.Namespace) -> int:
    reply = _call(
        args,
        {
            "command": "kvp.set_ip_info",
            "adapter_id": args.guid,
            "addr_family": args.family,
            "dhcp_enabled": args.dhcp,
            "ip_addr": ";".join(args.ip),
            "sub_net": ";".join(args.subnet),
            "gate_way": ";".join(args.gateway),
            "dns_addr": ";".join(args.dns),
        },
    )
    if reply is not None:
        print(reply["status_name"])
    return _done(reply)


def _client_wait(args: argparse.Namespace) -> int:
    """Exit 0 once a daemon has registered with the KVP device, 1 at the timeout.

    For scripts (README.md, "Running against the simulator by hand"): the
    kernel answers the host's requests with HV_E_FAIL until a daemon has
    registered, as drivers/hv/hv_kvp.c does.  The control socket has no
    notifications, so this asks again every 50 ms.
    """
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            if call(args.dir, {"command": "kvp.status"}, timeout=args.timeout).get("registered"):
                return 0
            why = "no daemon has registered"
        except OSError as e:
            why = f"cannot reach the simulator in {args.dir}: {e}"
        if time.monotonic() >= deadline:
            print(f"hvsim kvp: {why} within {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.05)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kvp_cmd", required=True)

    def pool_arg(p: argparse.ArgumentParser, default: int | None = 0) -> None:
        p.add_argument(
            "--pool",
            type=int,
            default=default,
            help="pool number: 0 External, 1 Guest, 2 Auto, 3 Guest\\Parameter, 4"
            + (f" (default {default})" if default is not None else " (default: all)"),
        )

    s = sub.add_parser("set", help="store KEY=VALUE in a pool (KVP_OP_SET)")
    pool_arg(s)
    s.add_argument("--type", choices=sorted(_VALUE_TYPES), default="sz", help="host value type")
    s.add_argument("key")
    s.add_argument("value")
    s.set_defaults(func=_client_set)

    g = sub.add_parser("get", help="read KEY's value (KVP_OP_GET)")
    pool_arg(g)
    g.add_argument("key")
    g.set_defaults(func=_client_get)

    d = sub.add_parser("delete", help="remove KEY (KVP_OP_DELETE)")
    pool_arg(d)
    d.add_argument("key")
    d.set_defaults(func=_client_delete)

    e = sub.add_parser("enumerate", help="list a pool's items as the host does (KVP_OP_ENUMERATE)")
    pool_arg(e, None)
    e.set_defaults(func=_client_enumerate)

    gi = sub.add_parser("get-ip", help="IP configuration of the NIC with this MAC (GET_IP_INFO)")
    gi.add_argument("mac", help="MAC address, e.g. 00:15:5D:01:02:03")
    gi.add_argument("--family", type=int, default=0, help="addr_family: 0 any, 1 IPv4, 2 IPv6")
    gi.set_defaults(func=_client_get_ip)

    si = sub.add_parser("set-ip", help="inject an IP configuration (SET_IP_INFO)")
    si.add_argument(
        "guid", help="the NIC's device GUID, e.g. {f8615163-df3e-46c5-913f-f2d2f965ed0e}"
    )
    si.add_argument("--ip", action="append", default=[], help="address (repeat for more)")
    si.add_argument("--subnet", action="append", default=[], help="netmask or prefix, per --ip")
    si.add_argument("--gateway", action="append", default=[], help="default gateway")
    si.add_argument("--dns", action="append", default=[], help="DNS server")
    si.add_argument("--dhcp", action="store_true", help="enable DHCP")
    si.add_argument("--family", type=int, default=kvp.ADDR_FAMILY_IPV4, help="addr_family (1 or 2)")
    si.set_defaults(func=_client_set_ip)

    w = sub.add_parser("wait", help="wait until a daemon has registered with the KVP device")
    w.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (exit 1)"
    )
    w.set_defaults(func=_client_wait)


# -- the demo ------------------------------------------------------------------------


def packaged_scripts_dir() -> str | None:
    """The helper scripts inside the installed package (a wheel has them; the
    .deb installs them where the daemon looks by default instead)."""
    here = os.path.join(os.path.dirname(os.path.abspath(hvdaemons.kvp.__file__)), "scripts")
    return here if os.path.isdir(here) else None


def first_nic() -> tuple[str, str] | None:
    """(name, MAC upper-case) of the first non-loopback interface with a MAC.

    Interfaces that are up come first (in index order), then the others.
    """
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        return None
    up: list[tuple[str, str]] = []
    down: list[tuple[str, str]] = []
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/address") as f:
                mac = f.read().strip().upper()
            with open(f"/sys/class/net/{name}/flags") as f:
                flags = int(f.read().strip(), 16)
        except (OSError, ValueError):
            continue
        if flags & 0x8 or not mac or mac == "00:00:00:00:00:00":  # IFF_LOOPBACK
            continue
        (up if flags & 0x1 else down).append((name, mac))  # IFF_UP
    nics = up + down
    return nics[0] if nics else None


def demo(part: Part) -> None:
    """`hvsim demo kvp`: the host's view of the installed hv_kvp_daemon."""
    print("== KVP: the host's view of a guest running hv_kvp_daemon ==")
    with tempfile.TemporaryDirectory(prefix="hvsim-kvp-") as tmp:
        server = SimServer(tmp)
        kernel = server.add_chardev(KVP_DEVICE, timeout=HV_UTIL_TIMEOUT)
        host = KvpHost(kernel)
        argv = [
            *launch.daemon_argv("hv_kvp_daemon"),
            "-n",
            "--device",
            kernel.path,
            "--state-dir",
            os.path.join(tmp, "state"),
        ]
        scripts = packaged_scripts_dir()
        if scripts:
            argv += ["--scripts-dir", scripts]
        print(f"  daemon: {' '.join(argv)}")
        proc = launch.popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_registered(kernel, proc, 30)
            print("  registered")

            print("\n  Guest intrinsic exchange items (pool 2, KVP_POOL_AUTO):")
            items, end = host.enumerate_all(kvp.KvpPool.AUTO)
            for key, value in items:
                print(f"    {key:<28} {value}")
            part.check(
                len(items) == 10 and end == HvStatus.S_CONT,
                f"10 intrinsic items, then {describe(end)}",
            )

            nic = first_nic()
            if nic is None:
                print("\n  no non-loopback network interface: GET_IP_INFO skipped")
            else:
                name, mac = nic
                print(f"\n  GET_IP_INFO for {mac} ({name}):")
                reply = host.get_ip_info(mac)
                if reply.ip is not None:
                    ip = reply.ip
                    print(f"    addresses  {ip.ip_addr or '-'}")
                    print(f"    subnets    {ip.sub_net or '-'}")
                    print(f"    gateways   {ip.gate_way or '-'}")
                    print(f"    DNS        {ip.dns_addr or '-'}")
                    print(f"    DHCP       {'enabled' if ip.dhcp_enabled else 'disabled'}")
                part.check(
                    reply.status == HvStatus.S_OK, f"GET_IP_INFO answered {describe(reply.status)}"
                )

            print("\n  A round trip through pool 0 (KVP_POOL_EXTERNAL):")
            key, value = "hvsim-demo", "hello from the host ✓"
            reply = host.set(0, key, value)
            part.check(
                reply.status == HvStatus.S_OK, f"SET {key}={value!r}: {describe(reply.status)}"
            )
            reply = host.set(0, "hvsim-demo-u32", 4_000_000_000, sim_kvp.RegType.U32)
            part.check(
                reply.status == HvStatus.S_OK,
                f"SET hvsim-demo-u32 (REG_U32 4000000000): {describe(reply.status)}",
            )
            items, end = host.enumerate_all(0)
            for k, v in items:
                print(f"      {k} = {v}")
            part.check(
                (key, value) in items and ("hvsim-demo-u32", "4000000000") in items,
                "ENUMERATE lists both items",
            )
            reply = host.get(0, key)
            part.check(
                reply.status == HvStatus.S_OK and reply.value == value,
                f"GET {key} -> {reply.value!r}",
            )
            for k in (key, "hvsim-demo-u32"):
                reply = host.delete(0, k)
                part.check(reply.status == HvStatus.S_OK, f"DELETE {k}: {describe(reply.status)}")
            reply = host.get(0, key)
            part.check(
                reply.status == HvStatus.S_CONT, f"GET after DELETE: {describe(reply.status)}"
            )
            items, end = host.enumerate_all(0)
            part.check(not items, "pool 0 is empty again")
        finally:
            part.daemon_log = stop_daemon(proc).decode(errors="replace").splitlines()
            server.close()
        print("\n  daemon log:")
        for line in part.daemon_log:
            print(f"    {line}")
        part.check(
            proc.returncode == 0, f"the daemon exited with status {proc.returncode} on SIGTERM"
        )


# `hvsim demo kvp`: its part of the summary.
DEMOS = (("KVP", demo),)
