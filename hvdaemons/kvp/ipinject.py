# SPDX-License-Identifier: GPL-2.0-only
"""IP injection: SET_IP_INFO writes the host's configuration and has hv_set_ifconfig apply it.

Mirrors kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c (Linux >= 6.10): find
the interface by its VMBus device GUID (HV_GUID_NOTFOUND if none), write
/var/lib/hyperv/ifcfg-IFNAME and /var/lib/hyperv/IFNAME.nmconnection, run
`hv_set_ifconfig IFCFG KEYFILE` and report its exit status (HV_E_FAIL
unless 0).  Added: the configuration of the detected network configuration
system (hvdaemons.kvp.renderers), staged for hv_set_ifconfig to install.

Deliberate differences from the reference:

* Everything is validated before anything is written (HV_INVALIDARG); both
  files are written mode 0600 via rename, and the keyfile uses
  NetworkManager's own list syntax (renderers.keyfile).
* hv_set_ifconfig runs without a shell, with a timeout below the kernel's
  30 s (hvdaemons.kvp.helper).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..log import get
from ..protocol.kvp import IpValue
from ..protocol.status import HvStatus
from . import helper, nics
from .paths import KvpPaths
from .renderers import detect, ifcfg, keyfile
from .renderers.base import Backend, System
from .renderers.model import InvalidArgument, IpConfig, parse

log = get(__name__)

# hv_set_ifconfig must finish well within the kernel's 30 s KVP timeout
# (HV_UTIL_TIMEOUT), after a possible nmcli probe.
SET_HELPER_TIMEOUT = 20.0


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


def _stage(backend: Backend, cfg: IpConfig, system: System, state_dir: str) -> str:
    """Write the backend's configuration for hv_set_ifconfig to install; its path."""
    for note in backend.notes(system, cfg.ifname):
        log.warning("SET_IP_INFO: %s", note)
    staged = os.path.join(state_dir, f"{cfg.ifname}.{backend.name}")
    _write_private(staged, backend.render(cfg))
    return staged


def set_ip_info(
    info: IpValue,
    paths: KvpPaths,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = SET_HELPER_TIMEOUT,
) -> HvStatus:
    """KVP_OP_SET_IP_INFO: the HV status for the host.

    environ (default: the daemon's) is what hv_set_ifconfig runs with; the
    backend is detected the way it sees the machine (HV_KVP_ROOT,
    HV_KVP_NETSTACK, PATH).
    """
    env = os.environ if environ is None else environ
    ifname = nics.by_guid(paths, info.adapter_id)
    if ifname is None:
        log.error("SET_IP_INFO: no interface has device GUID %s", info.adapter_id)
        return HvStatus.GUID_NOTFOUND
    if ifname in (".", "..") or "/" in ifname:
        log.error("SET_IP_INFO: refusing interface name %r", ifname)
        return HvStatus.E_FAIL
    mac = nics.mac_of(paths, ifname)
    if mac is None:
        log.error("SET_IP_INFO: cannot read the MAC address of %s", ifname)
        return HvStatus.E_FAIL
    try:
        cfg = parse(ifname, mac.upper(), info)
    except InvalidArgument as e:
        log.error("SET_IP_INFO for %s: %s", ifname, e)
        return HvStatus.INVALIDARG
    system = System.from_environ(env)
    backend = detect.select(system, ifname)
    ifcfg_path = os.path.join(paths.state_dir, f"ifcfg-{ifname}")
    keyfile_path = os.path.join(paths.state_dir, f"{ifname}.nmconnection")
    helper_env = dict(env)
    # Only a configuration staged now may be installed.
    helper_env.pop("HV_KVP_CONFIG", None)
    staged: str | None = None
    try:
        # Both files, whatever the backend, deliberately: they are the
        # arguments of every hv_set_ifconfig since Linux 6.10 (the
        # distributions' and administrators' scripts read one or the
        # other), not only of ours, which installs the staged file.
        _write_private(ifcfg_path, ifcfg.handoff_text(cfg))
        _write_private(keyfile_path, keyfile.handoff_text(cfg))
        if backend is not None:
            staged = _stage(backend, cfg, system, paths.state_dir)
            # A third-party hv_set_ifconfig ignores these.
            helper_env.update(HV_KVP_NETSTACK=backend.name, HV_KVP_CONFIG=staged)
    except OSError as e:
        log.error(
            "Failed to write config file %s: %s", e.filename or paths.state_dir, e.strerror or e
        )
        return HvStatus.E_FAIL
    argv = [helper.script(paths, "hv_set_ifconfig"), ifcfg_path, keyfile_path]
    try:
        result = helper.run(argv, timeout, env=helper_env)
    finally:
        if staged is not None:
            try:
                os.unlink(staged)
            except OSError:
                pass
    if result.failure:
        # The reference's wording: "Failed to execute cmd '%s'; error: ...".
        log.error("Failed to execute cmd '%s'; %s", helper.command_text(argv), result.failure)
        return HvStatus.E_FAIL
    return HvStatus.S_OK
