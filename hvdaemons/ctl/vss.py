# SPDX-License-Identifier: GPL-2.0-only
"""hvctl vss plan: what a host backup would freeze, in order, and why the rest is skipped.

The daemon's own planner (hvdaemons.vss.mounts.Planner, the selection of
vss_operate() in tools/hv/hv_vss_daemon.c with loop stacking resolved), as
`hv_vss_daemon --list` prints it.  Reads the mount table and sysfs only;
nothing is frozen.
"""

from __future__ import annotations

import argparse
import json
import sys

MOUNTINFO = "/proc/self/mountinfo"  # hvdaemons.vss.mounts.MOUNTINFO


def cmd_plan(args: argparse.Namespace) -> int:
    from ..vss.mounts import Planner

    try:
        plan = Planner(mountinfo=args.mountinfo).plan()
    except OSError as e:
        print(f"hvctl: cannot read {args.mountinfo}: {e.strerror}", file=sys.stderr)
        return 1
    if not args.json:
        print(plan.describe())
        return 0
    doc = {
        "freeze": [
            {
                "order": n,
                "mount_point": t.mount_point,
                "fstype": t.fstype,
                "source": t.source,
                "device": f"{t.dev[0]}:{t.dev[1]}",
            }
            for n, t in enumerate(plan.targets, 1)
        ],
        "mounts": [
            {
                "mount_point": d.mount.mount_point,
                "fstype": d.mount.fstype,
                "source": d.mount.source,
                "freeze": d.freeze,
                "order": d.order if d.freeze else None,
                "reason": d.reason,
            }
            for d in plan.decisions
        ],
        "notes": list(plan.notes),
    }
    print(json.dumps(doc, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "vss",
        help="what a host backup would freeze",
        description="VSS (backup): what hv_vss_daemon would freeze for a host backup.",
    )
    p.set_defaults(func=lambda a: p.print_help() or 2)
    vsub = p.add_subparsers(metavar="COMMAND")
    sp = vsub.add_parser(
        "plan",
        help="freeze order and why every other mount is skipped (hv_vss_daemon --list)",
    )
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.add_argument(
        "--mountinfo", default=MOUNTINFO, metavar="PATH", help=f"mount table (default {MOUNTINFO})"
    )
    sp.set_defaults(func=cmd_plan)
