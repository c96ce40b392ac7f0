# SPDX-License-Identifier: GPL-2.0-only
"""The daemons' command lines, as a person types them: the installed console scripts.

Exit codes are upstream's (tools/hv's getopt_long() loops), checked against
Debian's builds of the C daemons where theirs and ours share a flag.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hvdaemons import cli
from tests.reference.refdaemons import DAEMONS as REFERENCE
from tests.reference.refdaemons import ref_daemon

DAEMONS = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon")
_FCOPY = ("-h, --help", "-n, --no-daemon", "--device PATH", "--sysfs-root DIR", "--dev-root DIR")
# What --help lists, as the man pages (packaging/man) document it.
OPTIONS = {
    "hv_kvp_daemon": (
        *("-h, --help", "-n, --no-daemon", "--device PATH", "-d, --debug"),
        *("--state-dir DIR", "--scripts-dir DIR"),
    ),
    "hv_vss_daemon": (
        *("-h, --help", "-n, --no-daemon", "--device PATH", "--list", "--thaw"),
        *("--thaw-deadline SECONDS", "--state-file PATH"),
    ),
    "hv_fcopy_daemon": _FCOPY,
    "hv_fcopy_uio_daemon": _FCOPY,
}


def console_script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{path} missing: the tests run against the installed package (tox)"
    return str(path)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,  # hang guard
    )


def refused(name: str, tmp_path: Path, *args: str) -> tuple[int, str, str, str]:
    """Exit code, stdout, the first and the last line on stderr of `name args`.

    A --device that does not exist comes last: a command line taken by
    mistake ends in "no such device" instead of starting a daemon.
    """
    res = run([console_script(name), *args, "--device", str(tmp_path / "absent")])
    lines = res.stderr.splitlines()
    return res.returncode, res.stdout, lines[0] if lines else "", lines[-1] if lines else ""


@pytest.mark.parametrize("name", DAEMONS)
def test_a_mistyped_device_exits_1_at_once(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no" / "hv_kvp"
    # Without the check the daemon logged one line and waited for the path forever.
    res = run([console_script(name), "-n", "--device", str(missing)])
    assert (res.returncode, res.stdout, res.stderr) == (
        1,
        "",
        f"{name}: no such device: {missing}\n",
    )


@pytest.mark.parametrize("name", DAEMONS)
def test_help_lists_every_option_on_stdout(name: str) -> None:
    res = run([console_script(name), "--help"])
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout.startswith(f"usage: {name} [-h] [-n] [--device PATH]")
    listed = [line.split("  ")[1] for line in res.stdout.splitlines() if line[:3] == "  -"]
    assert listed == list(OPTIONS[name])
    # Every option has its help text (the man pages say the same).
    assert "show this help message and exit" in res.stdout
    assert "stay in foreground, don't daemonize" in res.stdout
    assert run([console_script(name), "-h"]).stdout == res.stdout


@pytest.mark.parametrize("name", DAEMONS)
def test_long_options_may_be_abbreviated(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "absent"
    # Both taken: the device is checked, and nothing else is said.  (--dev
    # could be the file-copy daemon's --dev-root too.)
    res = run([console_script(name), "--no-dae", "--devi", str(missing)])
    assert (res.returncode, res.stderr) == (1, f"{name}: no such device: {missing}\n")
    res = run([console_script(name), "--he"])
    assert res.returncode == 0 and res.stdout.startswith(f"usage: {name} ")


@pytest.mark.parametrize("name", DAEMONS)
def test_an_unknown_option_prints_the_usage_and_exits_1(tmp_path: Path, name: str) -> None:
    usage = f"usage: {name} [-h] [-n] [--device PATH]"
    code, out, first, last = refused(name, tmp_path, "-n", "--bogus")
    assert (code, out, first[: len(usage)], last) == (
        *(1, "", usage),
        f"{name}: option --bogus not recognized",
    )
    code, out, first, last = refused(name, tmp_path, "-nx")
    assert (code, out, first[: len(usage)], last) == (
        *(1, "", usage),
        f"{name}: option -x not recognized",
    )
    code, out, first, last = refused(name, tmp_path, "--no-daemon=yes")
    assert (code, out, first[: len(usage)], last) == (
        *(1, "", usage),
        f"{name}: option --no-daemon must not have an argument",
    )


@pytest.mark.parametrize("name", DAEMONS)
def test_a_missing_argument_prints_the_usage_and_exits_1(name: str) -> None:
    for option in ("--device", "--devi"):
        res = run([console_script(name), "-n", option])
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and res.stdout == ""
        assert lines[0].startswith(f"usage: {name} [-h]")
        assert lines[-1] == f"{name}: option --device requires argument"


@pytest.mark.parametrize("name", DAEMONS)
def test_a_stray_argument_prints_the_usage_and_exits_1(tmp_path: Path, name: str) -> None:
    absent = tmp_path / "absent"
    # getopt permutes as glibc's does: the stray word may come first.  After
    # "--" everything is stray, refused()'s --device too.
    for args, stray in (
        (["-n", "stray"], "stray"),
        (["stray", "-n"], "stray"),
        (["-n", "--", "-x"], f"-x --device {absent}"),
    ):
        code, out, first, last = refused(name, tmp_path, *args)
        assert (code, out, first.startswith(f"usage: {name} ")) == (1, "", True), args
        assert last == f"{name}: unrecognized arguments: {stray}"


def test_kvp_takes_debug_and_vss_refuses_it(tmp_path: Path) -> None:
    # -d/--debug is KVP's (upstream since 6.16); nothing upstream gives VSS one.
    missing = tmp_path / "absent"
    res = run([console_script("hv_kvp_daemon"), "-nd", "--device", str(missing)])
    assert (res.returncode, res.stderr) == (1, f"hv_kvp_daemon: no such device: {missing}\n")
    code, _, _, last = refused("hv_vss_daemon", tmp_path, "-nd")
    assert (code, last) == (1, "hv_vss_daemon: option -d not recognized")


def test_vss_options_that_share_a_prefix(tmp_path: Path) -> None:
    code, _, _, last = refused("hv_vss_daemon", tmp_path, "--th")
    assert (code, last) == (1, "hv_vss_daemon: option --th not a unique prefix")
    code, _, _, last = refused("hv_vss_daemon", tmp_path, "--thaw-deadline", "soon")
    assert (code, last) == (1, "hv_vss_daemon: argument --thaw-deadline: invalid value: 'soon'")
    # A whole name is never a prefix of another: --thaw is not --thaw-deadline.
    code, _, _, last = refused("hv_vss_daemon", tmp_path, "--thaw", "--thaw-dead=5")
    assert (code, last) == (1, f"hv_vss_daemon: no such device: {tmp_path / 'absent'}")


# Command lines the C daemons settle in getopt_long(), before touching anything.
_HELP_ARGV = (["-h"], ["--help"], ["--he"], ["--no-dae", "-h"], ["-nh"])
_BAD_ARGV = (["--bogus"], ["-x"], ["-n", "--bogus"])


@pytest.mark.parametrize(
    ("release", "name"),
    [(release, name) for release, names in REFERENCE.items() for name in names],
)
def test_exit_codes_are_the_reference_daemons(release: str, name: str) -> None:
    reference = str(ref_daemon(release, name))
    for argv in _BAD_ARGV:
        theirs = run([reference, *argv]).returncode
        assert (argv, run([console_script(name), *argv]).returncode) == (argv, theirs)
    for argv in _HELP_ARGV:
        theirs = run([reference, *argv]).returncode
        if name == "hv_fcopy_daemon":
            # tools/hv/hv_fcopy_daemon.c shares -h's case with an unknown
            # option's (exit 1); ours exits 0 like the other daemons.
            assert (argv, theirs) == (argv, 1)
            theirs = 0
        assert (argv, run([console_script(name), *argv]).returncode) == (argv, theirs)


def test_an_existing_device_path_is_taken_and_the_default_is_not_checked(tmp_path: Path) -> None:
    class Args(cli.Args):
        __slots__ = ("no_daemon", "device")

    command_line = cli.CommandLine(
        "hv_kvp_daemon", "d", cli.common_options(str(tmp_path / "absent-default"))
    )
    sock = tmp_path / "hv_kvp"
    sock.touch()
    assert command_line.parse(["-n", "--device", str(sock)], Args) == Args(
        no_daemon=True, device=str(sock)
    )
    # udev starts the daemon when the default device appears: it is waited for.
    assert command_line.parse(["-n"], Args) == Args(
        no_daemon=True, device=str(tmp_path / "absent-default")
    )
    assert command_line.parse([], Args) == Args(
        no_daemon=False, device=str(tmp_path / "absent-default")
    )


def test_the_result_has_a_field_for_every_option_and_no_other() -> None:
    class Missing(cli.Args):
        __slots__ = ("no_daemon", "device", "debug")

    class Extra(cli.Args):
        __slots__ = ("no_daemon",)

    command_line = cli.CommandLine("p", "d", cli.common_options("/dev/null"))
    with pytest.raises(KeyError):
        command_line.parse([], Missing)
    with pytest.raises(TypeError, match="has no field device"):
        command_line.parse([], Extra)
