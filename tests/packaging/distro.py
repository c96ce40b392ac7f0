# SPDX-License-Identifier: GPL-2.0-only
"""Helpers for the tests of the distributions' own builds (debian/,
hvdaemons.spec): the release tarball, the project fields from pyproject.toml,
and package contents in a form that two builds can be compared in."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import metadata
from pathlib import Path

from .conftest import CACHE, PACKAGING, REPO, cached_root_tar, run


def homepage() -> str:
    """pyproject.toml's [project.urls] Homepage, from the installed package's metadata."""
    urls = dict(u.split(", ", 1) for u in metadata("hvdaemons").get_all("Project-URL") or [])
    assert urls.get("Homepage", "").startswith("https://"), urls
    return urls["Homepage"]


def maintainer() -> str:
    """pyproject.toml's maintainers as "Name <mail>", the form of every package field."""
    m = metadata("hvdaemons")["Maintainer-email"]
    assert m and re.fullmatch(r"[^<>,]+ <[^<>@]+@[^<>]+>", m), m
    return str(m)


def build_sdist(outdir: Path) -> Path:
    """The release tarball, made the PyPA way from this checkout by Debian's
    python3 (python3-build; no build isolation, nothing downloaded)."""
    run(["/usr/bin/python3", "-m", "build", "--sdist", "--no-isolation", "--outdir", outdir, REPO])
    (sdist,) = outdir.glob("hvdaemons-*.tar.gz")
    return sdist


@dataclass(frozen=True)
class DebianBuild:
    sdist: Path
    out: Path
    debs: dict[str, Path]


def build_debian(base: Path, host_arch: str | None = None) -> DebianBuild:
    """The release tarball plus debian/ built by packaging/build-debian.sh in a
    clean bookworm root (cached), its build dependencies cached in
    .cache/packaging/apt-buildd[-ARCH]; host_arch: cross-built for it."""
    sdist = build_sdist(base / "sdist")
    out = base / "out"
    cross = ["--host-arch", host_arch] if host_arch else []
    run(
        [
            "sh",
            PACKAGING / "build-debian.sh",
            "--sdist",
            sdist,
            "--root-tar",
            cached_root_tar("buildd", (), variant="buildd"),
            "--apt-cache",
            CACHE / ("apt-buildd" + (f"-{host_arch}" if host_arch else "")),
            *cross,
            out,
        ],
        timeout=1800,
    )
    return DebianBuild(sdist, out, deb_packages(sorted(out.glob("*.deb"))))


@dataclass(frozen=True)
class Entry:
    """One path of a package: kind ("file", "dir", "symlink"), permission
    bits, symlink target, and a digest of the (decompressed, for .gz) content."""

    kind: str
    mode: int
    target: str = ""
    digest: str = ""


def _entries(tar_bytes: bytes) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        for m in tf.getmembers():
            path = "/" + re.sub(r"^\.(/|$)", "", m.name).strip("/")
            if path == "/":
                continue
            if m.issym():
                out[path] = Entry("symlink", 0, m.linkname)
            elif m.isdir():
                out[path] = Entry("dir", stat.S_IMODE(m.mode))
            else:
                f = tf.extractfile(m)
                assert f is not None, path
                data = f.read()
                if path.endswith(".gz"):
                    data = gzip.decompress(data)
                out[path] = Entry(
                    "file", stat.S_IMODE(m.mode), "", hashlib.sha256(data).hexdigest()
                )
    return out


def deb_entries(deb: Path) -> dict[str, Entry]:
    cp = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    return _entries(cp.stdout)


def rpm_entries(rpm: Path) -> dict[str, Entry]:
    with open(rpm, "rb") as f:
        cp = subprocess.run(["rpm2archive", "-"], stdin=f, capture_output=True, check=True)
    return _entries(cp.stdout)


def deb_packages(debs: list[Path]) -> dict[str, Path]:
    """Binary package name -> .deb."""
    return {run(["dpkg-deb", "-f", d, "Package"]).stdout.strip(): d for d in debs}


def rpm_packages(rpms: list[Path]) -> dict[str, Path]:
    return {run(["rpm", "-qp", "--qf", "%{NAME}", r]).stdout.strip(): r for r in rpms}


def differences(
    ours: dict[str, Entry],
    theirs: dict[str, Entry],
    *,
    ignore_content: frozenset[str] = frozenset(),
) -> dict[str, tuple[Entry | None, Entry | None]]:
    """Paths whose entries differ (missing on one side, other kind, mode,
    target or content); content is not compared for paths in ignore_content."""
    out: dict[str, tuple[Entry | None, Entry | None]] = {}
    for path in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(path), theirs.get(path)
        if a is not None and b is not None and path in ignore_content:
            a, b = Entry(a.kind, a.mode, a.target), Entry(b.kind, b.mode, b.target)
        if a != b:
            out[path] = (ours.get(path), theirs.get(path))
    return out


def unexplained(
    ours: dict[str, Entry],
    theirs: dict[str, Entry],
    explained: Callable[[str, Entry | None, Entry | None], bool],
    *,
    ignore_content: frozenset[str] = frozenset(),
) -> dict[str, tuple[Entry | None, Entry | None]]:
    """The differences (see differences()) for which explained(path, ours,
    theirs) gives no reason; a symlink's mode never counts."""
    out = {}
    for path, (a, b) in differences(ours, theirs, ignore_content=ignore_content).items():
        if a and b and a.kind == b.kind == "symlink" and a.target == b.target:
            continue
        if not explained(path, a, b):
            out[path] = (a, b)
    return out
