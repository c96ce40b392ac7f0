# SPDX-License-Identifier: GPL-2.0-only
"""hv_kvp_daemon: the Hyper-V KVP (data exchange) daemon.

Mirrors main() of tools/hv/hv_kvp_daemon.c: same flags (-n/--no-daemon,
-h/--help, -d/--debug), syslog ident "KVP", log texts, startup order
(options, daemonize, OS info, FQDN, pools, device, registration) and
replies.  Added options: --device (the kernel device or a simulator socket),
--state-dir (KVP_CONFIG_LOC) and --scripts-dir (KVP_SCRIPTS_PATH).

Deliberate differences from the reference (the protocol module and
hvdaemons.kvp.pool, ipinfo and ipinject list theirs):

* GET answers where the kernel reads (offset 532), so the host gets the
  value instead of an empty string (docs/protocol.md, "The answer to a GET").
* A pool number above 4 gets HV_E_FAIL (the reference indexes past its
  array); an ENUMERATE index past the end HV_S_CONT, however large.
* key_size above 512 or 0 gets HV_S_CONT for GET, SET and DELETE (the
  reference checks only GET/SET and compares out of bounds for DELETE).
* An unknown operation gets HV_E_FAIL (the reference answers HV_S_OK,
  which the kernel turns into an empty ENUMERATE-style item).
* NetworkAddressIPv4/IPv6 come from one address dump reused for up to a
  second (the host asks for both in one sweep), not one getifaddrs() each.
* A message that is not 7432 bytes is answered HV_E_FAIL instead of
  closing and reopening the device; an unreadable pool file or a full disk
  gets a logged failure status (HV_E_FAIL, HV_ERROR_DISK_FULL) instead of
  exit().
"""

from __future__ import annotations

import errno
import os
import time

from .. import cli
from ..errors import ProtocolError
from ..log import get
from ..notify import StatusLine
from ..protocol import kvp
from ..protocol.status import HvStatus
from ..service import Service, Stopper
from ..transport import FdChannel
from . import osinfo
from .paths import KvpPaths
from .pool import Pool, PoolSet, PoolUnavailable

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Callable

log = get(__name__)

PROG = "hv_kvp_daemon"
IDENT = "KVP"
DEVICE = "/dev/vmbus/hv_kvp"
# How long the auto pool's address lists may be reused (seconds).
ADDRESS_MAX_AGE = 1.0
# Module globals for the GET hot path (one lookup instead of two).
_POOL_COUNT, _MAX_KEY_SIZE, _MAX_VALUE_SIZE = kvp.POOL_COUNT, kvp.MAX_KEY_SIZE, kvp.MAX_VALUE_SIZE


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _ipinfo() -> ModuleType:
    # Imported on first use: it brings subprocess and netlink, which a daemon
    # that is only asked for pool items never needs.
    from . import ipinfo

    return ipinfo


def _ipinject() -> ModuleType:
    # Imported on first use, as _ipinfo().
    from . import ipinject

    return ipinject


class KvpHandler:
    """hvdaemons.service.Handler for KVP."""

    def __init__(
        self,
        pools: PoolSet,
        info: osinfo.OsInfo,
        fqdn: Callable[[], str],
        paths: KvpPaths,
        *,
        debug: bool = False,
        status: StatusLine | None = None,
    ) -> None:
        self.pools = pools
        self.info = info
        self.fqdn = fqdn
        self.paths = paths
        self.debug = debug
        self.lic_version = osinfo.UNKNOWN_VERSION
        self._addresses: tuple[str, str] | None = None
        self._addresses_at = 0.0
        self.status = status if status is not None else StatusLine(enabled=False)

    # -- registration ------------------------------------------------------------

    def registration(self) -> bytes:
        return kvp.encode_registration()

    def registration_reply(self, msg: bytes) -> bool:
        if len(msg) != kvp.KVP_MSG_SIZE:
            raise ProtocolError(f"registration reply of {len(msg)} bytes")
        reply = kvp.decode_request(msg)
        if not isinstance(reply, kvp.RegisterReply):
            # As the reference: anything else is handled as a request
            # (docs/protocol.md, "Registration").
            return False
        self.lic_version = reply.version.decode("utf-8", "surrogateescape")
        log.info("KVP LIC Version: %s", self.lic_version)
        self.status.set("registered", f"registered with protocol version {self.lic_version}")
        return True

    def describe(self, msg: bytes) -> str:
        """The request for the STATUS= line, e.g. "GET pool 1"."""
        op = msg[kvp.OFF_OP] if len(msg) > kvp.OFF_OP else -1
        try:
            name = kvp.KvpOp(op).name
        except ValueError:
            name = f"op {op}"
        if op in (kvp.KvpOp.GET_IP_INFO, kvp.KvpOp.SET_IP_INFO):
            return name
        return f"{name} pool {msg[kvp.OFF_POOL]}" if len(msg) > kvp.OFF_POOL else name

    # -- requests -----------------------------------------------------------------

    def failure_reply(self, msg: bytes) -> bytes:
        return kvp.encode_status_reply(msg, HvStatus.E_FAIL)

    def reset(self) -> None:
        pass

    def stop(self) -> None:
        self.pools.close()

    def handle(self, msg: bytes) -> bytes:
        if len(msg) != kvp.KVP_MSG_SIZE:
            log.error(
                "malformed request: %d bytes, expected %d; answering HV_E_FAIL",
                len(msg),
                kvp.KVP_MSG_SIZE,
            )
            return kvp.encode_status_reply(msg, HvStatus.E_FAIL)
        req = kvp.decode_request(msg)
        # The most frequent first: the host polls with GET and ENUMERATE.
        if isinstance(req, kvp.GetRequest):
            return self._get(msg, req)
        if isinstance(req, kvp.SetRequest):
            return self._set(msg, req)
        if isinstance(req, kvp.EnumerateRequest):
            return self._enumerate(msg, req)
        if isinstance(req, kvp.DeleteRequest):
            return self._delete(msg, req)
        if isinstance(req, kvp.GetIpInfoRequest):
            return self._get_ip_info(msg, req)
        if isinstance(req, kvp.SetIpInfoRequest):
            return self._set_ip_info(msg, req)
        op = msg[kvp.OFF_OP]
        log.error("unknown operation %d (pool %d); answering HV_E_FAIL", op, msg[kvp.OFF_POOL])
        return kvp.encode_status_reply(msg, HvStatus.E_FAIL)

    def _pool(self, op: str, number: int) -> Pool | None:
        if number >= kvp.POOL_COUNT:
            log.error(
                "%s: no pool %d (there are %d); answering HV_E_FAIL", op, number, kvp.POOL_COUNT
            )
            return None
        return self.pools[number]

    def _bad_key(self, op: str, pool: int, key_size: int) -> bool:
        if 0 < key_size <= kvp.MAX_KEY_SIZE:
            return False
        log.error("%s: pool %d: bad key_size %d; answering HV_S_CONT", op, pool, key_size)
        return True

    def _io_status(self, op: str, pool: int, e: Exception) -> int:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error(
                "Failed to write file, pool: %d; error: %d %s", pool, e.errno, os.strerror(e.errno)
            )
            return HvStatus.ERROR_DISK_FULL
        if isinstance(e, OSError) and e.errno is not None:
            log.error("%s: pool %d: error: %d %s", op, pool, e.errno, os.strerror(e.errno))
        else:
            log.error("%s: pool %d: %s", op, pool, e)
        return HvStatus.E_FAIL

    def _set(self, msg: bytes, req: kvp.SetRequest) -> bytes:
        if self.debug:
            log.debug(
                "kvp_key_add_or_modify: got a KVP: pool=%d key=%s val=%s",
                req.pool,
                _show(req.key),
                _show(req.value),
            )
        pool = self._pool("SET", req.pool)
        if pool is None:
            return kvp.encode_status_reply(msg, HvStatus.E_FAIL)
        if req.key_size > kvp.MAX_KEY_SIZE or req.value_size > kvp.MAX_VALUE_SIZE:
            log.error(
                "kvp_key_add_or_modify: Too long key or value: key=%s, val=%s",
                _show(req.key),
                _show(req.value),
            )
            return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        if self._bad_key("SET", req.pool, req.key_size):
            return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        try:
            pool.set(req.key, req.value)
        except (OSError, PoolUnavailable) as e:
            return kvp.encode_status_reply(msg, self._io_status("SET", req.pool, e))
        return kvp.encode_status_reply(msg, HvStatus.S_OK)

    def _get(self, msg: bytes, req: kvp.GetRequest) -> bytes:
        number = req.pool
        # The checks of _pool() and _bad_key() inline when they pass (hot path).
        if (
            number < _POOL_COUNT
            and 0 < req.key_size <= _MAX_KEY_SIZE
            and req.value_size <= _MAX_VALUE_SIZE
        ):
            pool: Pool | None = self.pools.pools[number]
        else:
            pool = self._pool("GET", number)
            if pool is None:
                return kvp.encode_status_reply(msg, HvStatus.E_FAIL)
            if req.value_size > kvp.MAX_VALUE_SIZE or self._bad_key("GET", number, req.key_size):
                return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        assert pool is not None
        try:
            value = pool.get(req.key)
        except (OSError, PoolUnavailable) as e:
            return kvp.encode_status_reply(msg, self._io_status("GET", number, e))
        if value is None:
            return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        return kvp.encode_get_reply(msg, value)

    def _delete(self, msg: bytes, req: kvp.DeleteRequest) -> bytes:
        pool = self._pool("DELETE", req.pool)
        if pool is None:
            return kvp.encode_status_reply(msg, HvStatus.E_FAIL)
        if self._bad_key("DELETE", req.pool, req.key_size):
            return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        try:
            found = pool.delete(req.key)
        except (OSError, PoolUnavailable) as e:
            return kvp.encode_status_reply(msg, self._io_status("DELETE", req.pool, e))
        return kvp.encode_status_reply(msg, HvStatus.S_OK if found else HvStatus.S_CONT)

    def _enumerate(self, msg: bytes, req: kvp.EnumerateRequest) -> bytes:
        pool = self._pool("ENUMERATE", req.pool)
        if pool is None:
            return kvp.encode_status_reply(msg, HvStatus.E_FAIL)
        if req.pool == kvp.KvpPool.AUTO:
            item = self.auto_item(req.index)
            if item is None:
                return kvp.encode_status_reply(msg, HvStatus.S_CONT)
            key, value = item
            return kvp.encode_enumerate_strings_reply(
                msg, key.encode(), value.encode("utf-8", "surrogateescape")
            )
        try:
            record = pool.record(req.index)
        except (OSError, PoolUnavailable) as e:
            return kvp.encode_status_reply(msg, self._io_status("ENUMERATE", req.pool, e))
        if record is None:
            return kvp.encode_status_reply(msg, HvStatus.S_CONT)
        return kvp.encode_enumerate_record_reply(
            msg, record[: kvp.MAX_KEY_SIZE], record[kvp.MAX_KEY_SIZE :]
        )

    def auto_item(self, index: int) -> tuple[str, str] | None:
        """The auto pool's item index (key, value), or None past the last one."""
        if index >= len(osinfo.AUTO_KEYS):
            return None
        key = osinfo.AUTO_KEYS[index]
        info = self.info
        if index == osinfo.FQDN:
            value = self.fqdn()
        elif index == osinfo.LIC_VERSION:
            value = self.lic_version
        elif index in (osinfo.NET_IPV4, osinfo.NET_IPV6):
            v4, v6 = self._address_lists()
            value = v4 if index == osinfo.NET_IPV4 else v6
        else:
            value = (
                info.os_build,
                info.os_name,
                info.os_major,
                info.os_minor,
                info.os_version,
                info.processor_arch,
            )[index - 4]
        return key, value

    def _address_lists(self) -> tuple[str, str]:
        # The host asks for both lists in one sweep: one netlink dump serves
        # both (the reference runs getifaddrs() per item).  At most
        # ADDRESS_MAX_AGE seconds old.
        now = time.monotonic()
        if self._addresses is None or now - self._addresses_at > ADDRESS_MAX_AGE:
            v4, v6 = _ipinfo().address_lists()
            self._addresses, self._addresses_at = (v4, v6), now
        return self._addresses

    def _get_ip_info(self, msg: bytes, req: kvp.GetIpInfoRequest) -> bytes:
        status, info = _ipinfo().get_ip_info(req.adapter_id, req.addr_family, self.paths)
        return kvp.encode_ip_info_reply(msg, status, info)

    def _set_ip_info(self, msg: bytes, req: kvp.SetIpInfoRequest) -> bytes:
        status: int = _ipinject().set_ip_info(req.value, self.paths)
        return kvp.encode_status_reply(msg, status)


class KvpArgs(cli.Args):
    __slots__ = ("no_daemon", "device", "debug", "state_dir", "scripts_dir")
    no_daemon: bool
    device: str
    debug: bool
    state_dir: str
    scripts_dir: str


def command_line() -> cli.CommandLine:
    options = [
        *cli.common_options(DEVICE),
        cli.Option("debug", "log the pools at start and every change at LOG_DEBUG", short="d"),
        cli.Option(
            "state-dir",
            f"where the pool files live (default {KvpPaths.state_dir})",
            metavar="DIR",
            default=KvpPaths.state_dir,
        ),
        cli.Option(
            "scripts-dir",
            f"hv_get_dhcp_info, hv_get_dns_info, hv_set_ifconfig (default {KvpPaths.scripts_dir})",
            metavar="DIR",
            default=KvpPaths.scripts_dir,
        ),
    ]
    return cli.CommandLine(PROG, "Hyper-V KVP (key/value pair data exchange) daemon", options)


def parse_args(argv: Sequence[str] | None) -> KvpArgs:
    return command_line().parse(argv, KvpArgs)


def serve(args: KvpArgs, stopper: Stopper) -> int:
    """Everything after daemonizing, in the reference's order."""
    log.info("KVP starting; pid is:%d", os.getpid())
    paths = KvpPaths(state_dir=args.state_dir, scripts_dir=args.scripts_dir)
    info = osinfo.collect(paths)
    # Cached because getaddrinfo takes an unpredictable time (as upstream),
    # and resolved in the background so registering does not wait for DNS.
    resolver = osinfo.FqdnResolver()
    resolver.start()
    if args.debug:
        log.info("Logging debug info in syslog(debug)")
    pools = PoolSet(paths.state_dir, debug=args.debug)
    try:
        pools.open()
        if args.debug:
            for pool in pools.pools:
                pool.dump()
    except (OSError, PoolUnavailable) as e:
        log.error("%s: %s", paths.state_dir, e)
        log.error("Failed to initialize the pools")
        pools.close()
        return 1
    status = StatusLine()
    handler = KvpHandler(pools, info, resolver.result, paths, debug=args.debug, status=status)
    service = Service(
        FdChannel(path=args.device),
        handler,
        stopper=stopper,
        device_name=args.device,
        status=status,
    )
    return service.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, IDENT, args, lambda stopper: serve(args, stopper), debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
