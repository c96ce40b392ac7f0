# SPDX-License-Identifier: GPL-2.0-only
"""Mutation testing: break one thing at a time in a module and check that a test goes red.

Not part of the default run (`tox -e mutation`, or `python3 tests/mutation/run.py`).

The suite normally imports the *installed* package; a mutant must be what
the tests import, so the runner works on a scratch copy of the repository
with the cffi modules built in place (setup.py build_ext --inplace) and runs
pytest there with that copy first on PYTHONPATH (hvsim.launch gives every
daemon the tests start the same path).  One coverage run of the module's
test set (cover.py: every process, the spawned daemons included) records
which test runs which line.  Each mutant is one AST change, written into the
scratch copy's file, then the tests that run its line run with -x, in suite
order.  A failing run kills the mutant; a run past the time limit (an
endless loop) counts as killed too; a mutant on a line no test runs
survives without a run.

VSS: only pure modules are mutated (kvp/pool.py and protocol/, see TARGETS);
the VSS tests that run here freeze inside the fsbox sandbox only, as always.

Survivors are listed in the report; each one either gets a test or a reason
it cannot change behaviour in equivalent.json ("module:line:operator" ->
reason), which the report shows beside it.  Exit status 1 if any survivor
has no reason.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# module -> (its own test files, the other tests that exercise it).  Both
# lists are one test set; the split only says which are the module's own.
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "hvdaemons/kvp/pool.py": (
        ["tests/kvp/test_pool.py"],
        [
            "tests/kvp/test_daemon.py",
            "tests/kvp/test_differential.py",
            "tests/ctl/test_kvp.py",
            "tests/ctl/test_kvp_daemon.py",
            # 10 s of waiting for a lock that never comes: no pool code runs.
            "--deselect=tests/ctl/test_kvp.py::test_reads_give_up_on_a_lock_held_for_good",
        ],
    ),
    "hvdaemons/protocol/kvp.py": (
        ["tests/protocol/test_kvp.py", "tests/protocol/test_dataclasses.py"],
        [
            "tests/kvp/test_daemon.py",
            "tests/kvp/test_differential.py",
            "tests/kvp/test_ipinfo_daemon.py",
            "tests/kvp/test_ipinject.py",
            "tests/ctl/test_kvp_daemon.py",
        ],
    ),
    "hvdaemons/protocol/fcopy.py": (
        [
            "tests/protocol/test_fcopy.py",
            "tests/protocol/test_fcopy_write.py",
            "tests/protocol/test_dataclasses.py",
        ],
        [
            "tests/fcopy/test_dispatch.py",
            "tests/fcopy/test_chardev.py",
            "tests/fcopy/test_reference.py",
            "tests/fcopy/test_uio.py",
        ],
    ),
    "hvdaemons/protocol/icmsg.py": (
        ["tests/protocol/test_icmsg.py", "tests/protocol/test_dataclasses.py"],
        ["tests/fcopy/test_uio.py", "tests/fcopy/test_uio_channel.py", "tests/test_ring.py"],
    ),
    "hvdaemons/protocol/vss.py": (
        ["tests/protocol/test_vss.py", "tests/protocol/test_dataclasses.py"],
        [
            # The end-to-end ones freeze loop-mounted images inside the fsbox sandbox only.
            "tests/vss/test_freeze.py",
            "tests/vss/test_status.py",
            "tests/vss/test_e2e.py",
            "tests/vss/test_reference.py",
        ],
    ),
    "hvdaemons/protocol/status.py": (
        ["tests/protocol/"],
        ["tests/kvp/test_daemon.py", "tests/vss/test_freeze.py", "tests/fcopy/test_chardev.py"],
    ),
}

COPY = ["hvdaemons", "hvsim", "tests", "bindings", "setup.py", "pyproject.toml", "README.md"]


# -- mutants -------------------------------------------------------------------------------

_BINOP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
}
_CMP = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutant:
    line: int
    col: int
    end_line: int
    end_col: int
    operator: str  # e.g. "Lt->LtE", "const 1->2", "drop call"
    replacement: str  # source text put in place of the node's text
    scope: str = ""  # the enclosing function or class ("Pool.get"), "" at top level
    stmt_line: int = 0  # first line of the statement it is in (where tracing sees it run)

    def key(self, module: str, source: str) -> str:
        """What equivalent.json names it by: stable while the line's text stays."""
        text = source.splitlines()[self.line - 1].strip()
        return f"{module}:{self.scope}:{self.operator}:{text}"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes that never run: annotations and `if TYPE_CHECKING:` blocks."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for a in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                mark(a.annotation)
            for a in (node.args.vararg, node.args.kwarg):
                if a is not None:
                    mark(a.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            mark(node)
    return skip


def _alias_rhs(tree: ast.Module) -> set[int]:
    """Module-level type aliases (X = tuple[int, ...]), not run as code, and
    __all__, which only a star import reads (the package has none)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and (
            isinstance(node.value, ast.Subscript)
            or any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        ):
            out.update(id(n) for n in ast.walk(node.value))
    return out


def mutants(source: str) -> Iterator[Mutant]:
    tree = ast.parse(source)
    skip = _docstrings(tree) | _type_checking_only(tree) | _alias_rhs(tree)
    scopes: dict[int, str] = {}
    stmts: dict[int, int] = {}

    def name_scopes(node: ast.AST, scope: str, stmt: int) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            line = child.lineno if isinstance(child, ast.stmt) else stmt
            scopes[id(child)] = inner
            stmts[id(child)] = line
            name_scopes(child, inner, line)

    name_scopes(tree, "", 0)

    def at(node: ast.AST, operator: str, new: ast.AST | str) -> Mutant:
        text = new if isinstance(new, str) else ast.unparse(new)
        if isinstance(node, ast.expr):
            text = f"({text})"
        return Mutant(
            node.lineno,  # type: ignore[attr-defined]
            node.col_offset,  # type: ignore[attr-defined]
            node.end_lineno,  # type: ignore[attr-defined]
            node.end_col_offset,  # type: ignore[attr-defined]
            operator,
            text,
            scopes.get(id(node), ""),
            stmts.get(id(node), 0),
        )

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
            new_op = _BINOP[type(node.op)]()
            yield at(
                node,
                f"{type(node.op).__name__}->{type(new_op).__name__}",
                ast.BinOp(node.left, new_op, node.right),
            )
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP:
            new_op = _BINOP[type(node.op)]()
            yield at(
                node,
                f"{type(node.op).__name__}=->{type(new_op).__name__}=",
                ast.AugAssign(node.target, new_op, node.value),
            )
        elif isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP:
                    ops = list(node.ops)
                    ops[i] = _CMP[type(op)]()
                    yield at(
                        node,
                        f"{type(op).__name__}->{type(ops[i]).__name__}",
                        ast.Compare(node.left, ops, node.comparators),
                    )
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield at(
                node,
                f"{type(node.op).__name__}->{type(other).__name__}",
                ast.BoolOp(other, node.values),
            )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield at(node, "drop not", node.operand)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            yield at(node, "drop -", node.operand)
        elif isinstance(node, ast.Constant) and id(node) not in skip:
            v = node.value
            if isinstance(v, bool):
                yield at(node, f"{v}->{not v}", repr(not v))
            elif isinstance(v, int):
                yield at(node, f"const {v}->{v + 1}", repr(v + 1))
                if v != 0:
                    yield at(node, f"const {v}->0", "0")
            elif isinstance(v, str) and v:
                yield at(node, "string XX", repr("XX" + v + "XX"))
            elif isinstance(v, bytes):
                yield at(node, "bytes +X", repr(v + b"X"))
            elif v is None:
                pass
        elif isinstance(node, (ast.If, ast.While)) and not isinstance(
            node.test, (ast.Compare, ast.BoolOp, ast.UnaryOp)
        ):
            yield at(node.test, "negate condition", ast.UnaryOp(ast.Not(), node.test))
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield at(node, "return None", "return None")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield at(node, "drop call", "pass")
        elif isinstance(node, ast.Break):
            yield at(node, "break->continue", "continue")
        elif isinstance(node, ast.Continue):
            yield at(node, "continue->break", "break")


def apply(source: str, m: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    # ast offsets are in UTF-8 bytes.
    head = b"".join(s.encode() for s in lines[: m.line - 1]) + lines[m.line - 1].encode()[: m.col]
    tail = lines[m.end_line - 1].encode()[m.end_col :] + b"".join(
        s.encode() for s in lines[m.end_line :]
    )
    return (head + m.replacement.encode() + tail).decode()


# -- running -------------------------------------------------------------------------------


def prepare(scratch: Path) -> None:
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src,
                scratch / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"),
            )
        else:
            shutil.copy2(src, scratch / name)
    (scratch / ".cache").mkdir()
    ref = REPO / ".cache" / "reference"
    if ref.exists():
        (scratch / ".cache" / "reference").symlink_to(ref.resolve())
    # Every Python process of a coverage run traces the target (see cover.py).
    (scratch / "sitecustomize.py").write_text(
        "import os\n"
        'if os.environ.get("HVMUT_COVER_FILE"):\n'
        "    from tests.mutation import cover\n"
        "\n"
        "    cover.start()\n"
    )
    res = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=scratch,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"building the cffi modules in place failed:\n{res.stdout}{res.stderr}")


def env_for(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Under tox the conftest insists on the installed package: not here.
    for name in [k for k in env if k.startswith("TOX_")]:
        del env[name]
    env["PYTHONPATH"] = str(scratch)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest_run(
    scratch: Path, files: list[str], timeout: float, extra: dict[str, str] | None = None
) -> tuple[str, float, str]:
    """("passed" | "failed" | "timeout", seconds, output tail)."""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--no-header",
        "-o",
        "addopts=-m 'not slow' -rfE --import-mode=append",
        *files,
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=scratch,
        env={**env_for(scratch), **(extra or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        verdict = "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        verdict = "timeout"
    return verdict, time.monotonic() - t0, out.decode(errors="replace")[-5000:]


def check_imports(scratch: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", "import hvdaemons, hvsim; print(hvdaemons.__file__)"],
        cwd="/",
        env=env_for(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    if not res.stdout.strip().startswith(str(scratch)):
        raise SystemExit(f"the tests would import {res.stdout.strip()}, not the scratch copy")


@dataclass
class Result:
    mutant: Mutant
    verdict: str  # killed | timeout | survived | invalid
    by: str  # how many tests ran, or why none did
    seconds: float


def coverage(
    scratch: Path, module: str, files: list[str]
) -> tuple[list[str], dict[int, set[str]], dict[str, float]]:
    """(the tests in run order, line -> the tests that run it ("" = while
    importing), test -> seconds it took)."""
    out = scratch / ".hvmut-cover"
    out.unlink(missing_ok=True)
    extra = {
        "HVMUT_COVER_FILE": str(scratch / module),
        "HVMUT_COVER_OUT": str(out),
    }
    verdict, _, text = pytest_run(scratch, ["-p", "tests.mutation.cover", *files], 7200, extra)
    if verdict != "passed":
        raise SystemExit(f"{module}: the coverage run failed:\n{text}")
    order: list[str] = []
    lines: dict[int, set[str]] = {}
    took: dict[str, float] = {}
    for row in out.read_text().splitlines():
        test, line, *rest = row.split("\t")
        if int(line) == 0:
            if test not in took and test not in order:
                order.append(test)
        elif int(line) == -1:
            took[test] = float(rest[0])
        else:
            lines.setdefault(int(line), set()).add(test)
    return order, lines, took


def run_module(
    scratch: Path,
    module: str,
    only_lines: set[int] | None,
    log: Path,
    reuse: dict[tuple[int, str, str], tuple[str, str]] | None = None,
) -> list[Result]:
    primary, further = TARGETS[module]
    target = scratch / module
    original = target.read_text()
    verdict, base, out = pytest_run(scratch, [*primary, *further], 7200)
    if verdict != "passed":
        raise SystemExit(f"{module}: the tests fail unmutated:\n{out}")
    order, covered, took = coverage(scratch, module, [*primary, *further])
    print(f"{module}: baseline {base:.1f} s, {len(order)} tests", flush=True)
    results = []
    todo = [m for m in mutants(original) if only_lines is None or m.line in only_lines]
    try:
        for n, m in enumerate(todo, 1):
            text = apply(original, m)
            try:
                compile(text, module, "exec")
            except SyntaxError:
                results.append(Result(m, "invalid", "", 0.0))
                continue
            text_of_line = original.splitlines()[m.line - 1].strip()
            earlier = (reuse or {}).get((m.line, m.operator, text_of_line))
            if earlier is not None:
                # Killed before (tests only get stronger): not run again.
                results.append(Result(m, earlier[0], earlier[1] + " (earlier run)", 0.0))
                continue
            runs: set[str] = set()
            for line in {m.stmt_line, *range(m.line, m.end_line + 1)}:
                runs |= covered.get(line, set())
            # Lines run at import time count for every test.
            tests = order if "" in runs else [t for t in order if t in runs]
            if not tests:
                results.append(Result(m, "survived", "no test runs this line", 0.0))
                print(
                    f"[{n}/{len(todo)}] uncovered {m.line}: {m.key(module, original)}", flush=True
                )
                continue
            select = scratch / ".hvmut-select"
            select.write_text("\n".join(tests) + "\n")
            target.write_text(text)
            # An endless loop is what the limit is for; the machine is shared,
            # so it is generous: twice the traced (slower) run, plus 45 s.
            limit = 2 * sum(took.get(t, base) for t in tests) + 45
            verdict, secs, out = pytest_run(
                scratch,
                ["-p", "tests.mutation.cover", *primary, *further],
                limit,
                {"HVMUT_SELECT": str(select)},
            )
            if verdict == "failed" and not re.search(r"\b\d+ (failed|errors?)\b", out):
                raise SystemExit(f"{module}: a run failed without a failing test:\n{out}")
            final = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[verdict]
            by = f"{len(tests)} tests"
            failed = [
                ln.split()[1] for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR "))
            ]
            if failed:
                by += f", red: {failed[0]}"
            elif verdict == "failed":
                by += ", red: " + (out.strip().splitlines() or ["?"])[-1]
            results.append(Result(m, final, by, secs))
            print(
                f"[{n}/{len(todo)}] {final:8} {m.line}: {m.key(module, original)}  {by}, {secs:.1f} s",
                flush=True,
            )
            with open(log, "a") as f:
                row = {"line": m.line, "key": m.key(module, original), "verdict": final, "by": by}
                f.write(json.dumps(row) + "\n")
    finally:
        target.write_text(original)
    return results


def _snippet(source: str, m: Mutant) -> str:
    return source.splitlines()[m.line - 1].strip()


def report(module: str, source: str, results: list[Result], reasons: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    survivors = [r for r in results if r.verdict == "survived"]
    explained = [r for r in survivors if r.mutant.key(module, source) in reasons]
    lines = [
        f"## {module}",
        "",
        f"{len(results)} mutants: {counts.get('killed', 0)} killed, "
        f"{counts.get('timeout', 0)} killed by the time limit, "
        f"{len(survivors)} survived ({len(explained)} equivalent, explained), "
        f"{counts.get('invalid', 0)} not valid Python.",
        "",
    ]
    if survivors:
        lines += ["| line | mutation | code | why it survives |", "|---|---|---|---|"]
        for r in survivors:
            fallback = (
                "**no test runs this line**" if r.by.startswith("no test") else "**needs a test**"
            )
            why = reasons.get(r.mutant.key(module, source), fallback)
            code = _snippet(source, r.mutant).replace("|", "\\|")
            lines.append(f"| {r.mutant.line} | {r.mutant.operator} | `{code}` | {why} |")
        lines.append("")
    return "\n".join(lines)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("modules", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    p.add_argument("--lines", help="only mutants on these lines (comma-separated)")
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    p.add_argument("--report", default=str(HERE / "report.md"), help="where the report goes")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy")
    p.add_argument(
        "--reuse",
        help="a log (.jsonl) of an earlier run: its killed mutants are not run again",
    )
    args = p.parse_args(argv)
    # SIGTERM unwinds like ^C: the module is restored and the scratch copy removed.
    signal.signal(signal.SIGTERM, _interrupt)
    modules = args.modules or list(TARGETS)
    for module in modules:
        if module not in TARGETS:
            p.error(f"no test set for {module}; add it to TARGETS")
    only = {int(x) for x in args.lines.split(",")} if args.lines else None
    if args.list:
        for module in modules:
            source = (REPO / module).read_text()
            for m in mutants(source):
                if only is None or m.line in only:
                    print(m.line, m.key(module, source), "=>", m.replacement)
        return 0
    equivalent = HERE / "equivalent.json"
    reasons: dict[str, str] = json.loads(equivalent.read_text()) if equivalent.exists() else {}
    # (line, operator, the line's text) -> verdict: only while the line is as it was.
    reuse: dict[tuple[int, str, str], tuple[str, str]] = {}
    if args.reuse:
        for row in Path(args.reuse).read_text().splitlines():
            entry = json.loads(row)
            if entry["verdict"] in ("killed", "timeout"):
                _, _, operator, text = entry["key"].split(":", 3)
                reuse[(entry["line"], operator, text)] = (entry["verdict"], entry["by"])
    Path(args.report).with_suffix(".jsonl").write_text("")
    scratch = Path(tempfile.mkdtemp(prefix="hvmut-"))
    sections = []
    unexplained = 0
    try:
        prepare(scratch)
        check_imports(scratch)
        for module in modules:
            log = Path(args.report).with_suffix(".jsonl")
            results = run_module(scratch, module, only, log, reuse)
            source = (REPO / module).read_text()
            sections.append(report(module, source, results, reasons))
            unexplained += sum(
                1
                for r in results
                if r.verdict == "survived" and r.mutant.key(module, source) not in reasons
            )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = "# Mutation testing report\n\n" + "\n".join(sections)
    Path(args.report).write_text(text)
    print(text)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
