# SPDX-License-Identifier: GPL-2.0-only
"""The project's address and maintainer, defined once in pyproject.toml, in
every package field (debian/, hvdaemons.spec, the nfpm packages); versions in
step with hvdaemons/__init__.py; what debian/ shares with packaging/; and the
Debian source package, which lintian must pass without errors or warnings."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import PACKAGING, REPO, Packages, run, version
from .distro import build_sdist, homepage, maintainer

DEBIAN = REPO / "debian"
SPEC = REPO / "hvdaemons.spec"


def control_field(text: str, name: str) -> str:
    m = re.search(rf"^{name}:[ \t]*(.*)$", text, re.M)
    assert m, f"no {name}: field"
    return m.group(1).strip()


def test_debian_fields_are_the_projects() -> None:
    control = (DEBIAN / "control").read_text()
    assert control_field(control, "Homepage") == homepage()
    assert control_field(control, "Vcs-Browser") == homepage()
    assert control_field(control, "Vcs-Git") == homepage() + ".git"
    assert control_field(control, "Maintainer") == maintainer()
    changelog = (DEBIAN / "changelog").read_text()
    assert re.search(rf"^ -- {re.escape(maintainer())}  \S", changelog, re.M), changelog
    for copyright_file in (DEBIAN / "copyright", PACKAGING / "copyright"):
        assert control_field(copyright_file.read_text(), "Source") == homepage()
    assert homepage() + "/releases" in (DEBIAN / "watch").read_text()


def test_spec_fields_are_the_projects() -> None:
    spec = SPEC.read_text()
    assert control_field(spec, "URL") == homepage()
    assert control_field(spec, "Source0").startswith("%{url}/")
    entry = spec.split("%changelog\n", 1)[1].splitlines()[0]
    assert f" {maintainer()} - {version()}-1" in entry, entry


def test_nfpm_packages_carry_the_project_fields(packages: Packages) -> None:
    assert "kernel.org" not in (PACKAGING / "nfpm.yaml").read_text()
    debs = sorted(packages.deb.parent.glob("*.deb"))
    rpms = sorted(packages.rpm.parent.glob("*.rpm"))
    assert debs and rpms
    for deb in debs:
        assert run(["dpkg-deb", "-f", deb, "Homepage"]).stdout.strip() == homepage(), deb
        assert run(["dpkg-deb", "-f", deb, "Maintainer"]).stdout.strip() == maintainer(), deb
    for rpm in rpms:
        q = run(["rpm", "-qp", "--qf", "%{URL}\n%{PACKAGER}", rpm]).stdout.splitlines()
        assert q == [homepage(), maintainer()], (rpm, q)


def test_versions_follow_the_package() -> None:
    top = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"hvdaemons \(([^-)]+)-(\d+)\) unstable; urgency=medium", top)
    assert m and m.group(1) == version(), top
    assert control_field(SPEC.read_text(), "Version") == version()


def test_debian_shares_the_packaging_files() -> None:
    # lintian wants a real file; the copy must stay the same text.
    assert (DEBIAN / "copyright").read_bytes() == (PACKAGING / "copyright").read_bytes()
    for script in ("postinst", "prerm", "postrm"):
        link = DEBIAN / f"hvdaemons.{script}"
        assert link.is_symlink(), link
        assert link.resolve() == (PACKAGING / "scripts" / "deb" / script).resolve()
        # dh (debian/) and build.py (nfpm) each fill exactly one token.
        assert link.read_text().count("#DEBHELPER#") == 1, script
    for pkg, overrides in (
        ("hvdaemons", "lintian-overrides"),
        ("hvdaemons-sim", "lintian-overrides-sim"),
    ):
        link = DEBIAN / f"{pkg}.lintian-overrides"
        assert link.resolve() == (PACKAGING / overrides).resolve()


def test_debian_source_package_lints_clean(tmp_path: Path) -> None:
    """The source package from the release tarball plus debian/ (no build
    dependencies needed): dpkg-source, then lintian on the .dsc."""
    sdist = build_sdist(tmp_path / "sdist")
    v = version()
    work = tmp_path / "src"
    work.mkdir()
    orig = work / f"hvdaemons_{v}.orig.tar.gz"
    orig.write_bytes(sdist.read_bytes())
    run(["tar", "-xzf", orig, "-C", work])
    names = run(["tar", "-tzf", orig]).stdout.split()
    # debian/ is not in the release tarball ("3.0 (quilt)", packaging/README.md).
    assert not [n for n in names if n.startswith(f"hvdaemons-{v}/debian/")]
    assert f"hvdaemons-{v}/hvdaemons.spec" in names
    run(["cp", "-a", DEBIAN, work / f"hvdaemons-{v}" / "debian"])
    run(["dpkg-source", "-b", f"hvdaemons-{v}"], cwd=work)
    dsc = work / f"hvdaemons_{v}-1.dsc"
    assert control_field(dsc.read_text(), "Format") == "3.0 (quilt)"
    cp = run(
        ["lintian", "--fail-on", "error,warning", "--display-level", ">=warning", dsc], check=False
    )
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0 and not re.search(r"^[EW]: ", out, re.M), out
