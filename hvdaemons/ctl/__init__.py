# SPDX-License-Identifier: GPL-2.0-only
"""hvctl: the guest's own view of its Hyper-V integration services.

One module per subcommand (status, kvp, vss, timesync) over small shared
pieces: the service table (services), what udev knows (devices), whether
the daemons run (daemons).  It reuses the daemons' code (the KVP pool
files and locks, the VSS planner) and is never imported by them.
"""
