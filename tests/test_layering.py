# SPDX-License-Identifier: GPL-2.0-only
"""The layers of docs/ARCHITECTURE.md, held to the code.

Checked on the packages under test (the installed wheel under tox) by
reading every module's imports, lazy ones inside functions included: what
each layer may import, that only the two _ffi modules touch the compiled
modules, and that the product does not contain the simulator -- hvdaemons
never imports hvsim (also checked by importing every module in a fresh
interpreter) and its compiled module carries no simulated-host code.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import hvdaemons
import hvsim

PACKAGE = Path(hvdaemons.__file__).resolve().parent
SIM = Path(hvsim.__file__).resolve().parent


def modules() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, files  # the whole package, not an empty directory
    return files


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_hvdaemons_source_imports_hvsim() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            n for n in imported_names(path) if n.split(".")[0] == "hvsim"
        )
        for path in modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_hvdaemons_module_loads_no_hvsim_module() -> None:
    code = """
import importlib, json, pkgutil, sys
import hvdaemons
names = [m.name for m in pkgutil.walk_packages(hvdaemons.__path__, "hvdaemons.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""
    # From / so that only the installed package can be found.
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    assert "hvdaemons.kvp.daemon" in result["imported"]
    assert "hvdaemons.fcopy.uio" in result["imported"]
    assert "hvdaemons._ffi" in result["loaded"]
    assert [m for m in result["loaded"] if m.split(".")[0] == "hvsim"] == []


def test_the_daemons_compiled_module_has_no_host_code() -> None:
    spec = importlib.util.find_spec("hvdaemons._hv")
    assert spec is not None and spec.origin is not None
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", spec.origin], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "hvr_send" in symbols and "hvr_fcopy_writes" in symbols  # the listing is real
    assert [s for s in symbols if s.startswith("hvs_") or "host" in s] == []
    sim = importlib.util.find_spec("hvsim._hvsim")
    assert sim is not None and sim.origin is not None
    assert Path(sim.origin).parent != Path(spec.origin).parent


# -- the layers ------------------------------------------------------------------------

FOUNDATION = {
    "hvdaemons._ffi",
    "hvdaemons.errors",
    "hvdaemons.log",
    "hvdaemons.notify",
    "hvdaemons.daemonize",
    "hvdaemons.vmbus",
    "hvdaemons.value",
}
CORE = {"hvdaemons.transport", "hvdaemons.service", "hvdaemons.cli"}
DAEMONS = ("hvdaemons.kvp", "hvdaemons.vss", "hvdaemons.fcopy")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """The hvdaemons and hvsim modules (or packages) a file imports, relative imports resolved."""
    me = module_name(path, root).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                # "from . import kvp" names a module; "from .kvp import X" a name in one.
                sub = f"{module}.{alias.name}"
                top = root.parent / sub.replace(".", "/")
                found.add(sub if top.with_suffix(".py").exists() or top.is_dir() else module)
    return {n for n in found if n.split(".")[0] in ("hvdaemons", "hvsim")}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for root in (PACKAGE, SIM):
        for path in sorted(root.rglob("*.py")):
            graph[module_name(path, root)] = imports_of(path, root)
    assert {"hvdaemons.kvp.daemon", "hvdaemons.ctl.main", "hvsim.uio"} <= set(graph)
    return graph


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(allowed: object) -> dict[str, list[str]]:
    """{importer: [what it may not import]} under allowed(importer, imported) -> bool | None
    (None: no rule for that importer)."""
    assert callable(allowed)
    bad: dict[str, list[str]] = {}
    for importer, imported in import_graph().items():
        for name in sorted(imported):
            if allowed(importer, name) is False:
                bad.setdefault(importer, []).append(name)
    return bad


def test_the_graph_is_read() -> None:
    graph = import_graph()
    # A known import of each kind: relative module, relative name, absolute.
    assert "hvdaemons.protocol.kvp" in graph["hvdaemons.kvp.daemon"]
    assert "hvdaemons.kvp.pool" in graph["hvdaemons.kvp.daemon"]
    assert "hvdaemons.kvp.pool" in graph["hvdaemons.ctl.kvp"]  # imported inside a function
    assert "hvdaemons.protocol.kvp" in graph["hvsim.protocol.kvp"]


def test_only_the_ffi_modules_touch_the_compiled_ones() -> None:
    def allowed(importer: str, name: str) -> bool:
        if name == "hvdaemons._hv":
            return importer == "hvdaemons._ffi"
        if name == "hvsim._hvsim":
            return importer == "hvsim._ffi"
        return True

    assert offenders(allowed) == {}


def test_the_foundation_imports_nothing_of_hvdaemons() -> None:
    def allowed(importer: str, name: str) -> bool | None:
        if importer not in FOUNDATION:
            return None
        return name in ("hvdaemons", "hvdaemons._hv")  # the version; the compiled module

    assert offenders(allowed) == {}


def test_protocol_code_imports_only_ffi_errors_value_and_status() -> None:
    def allowed(importer: str, name: str) -> bool | None:
        if within(importer, "hvdaemons.protocol"):
            return name in (
                "hvdaemons._ffi",
                "hvdaemons.errors",
                "hvdaemons.value",
                "hvdaemons.protocol.status",
            )
        if within(importer, "hvsim.protocol"):
            return name in ("hvdaemons._ffi", "hvdaemons.errors") or within(
                name, "hvdaemons.protocol"
            )
        return None

    assert offenders(allowed) == {}


def test_the_shared_core_stands_on_the_foundation_only() -> None:
    def allowed(importer: str, name: str) -> bool | None:
        if importer not in CORE:
            return None
        return name in FOUNDATION | CORE

    assert offenders(allowed) == {}


def test_a_daemon_imports_neither_another_daemon_nor_ctl_nor_hvsim() -> None:
    def allowed(importer: str, name: str) -> bool | None:
        mine = next((d for d in DAEMONS if within(importer, d)), None)
        if mine is None:
            return None
        others = [d for d in DAEMONS if d != mine]
        return not within(name, *others, "hvdaemons.ctl", "hvsim")

    assert offenders(allowed) == {}


def test_nothing_outside_ctl_imports_ctl() -> None:
    def allowed(importer: str, name: str) -> bool:
        return within(importer, "hvdaemons.ctl") or not within(name, "hvdaemons.ctl")

    assert offenders(allowed) == {}
