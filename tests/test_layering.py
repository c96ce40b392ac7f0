# SPDX-License-Identifier: GPL-2.0-only
"""The product does not contain the simulator.

hvdaemons (what the hvdaemons package installs) never imports hvsim, and
its compiled module carries no simulated-host code: both are checked on the
package under test (the installed wheel under tox), by reading every
module's imports, by importing every module in a fresh interpreter, and by
listing the compiled module's symbols.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import hvdaemons

PACKAGE = Path(hvdaemons.__file__).resolve().parent


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
