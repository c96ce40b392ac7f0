# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons: Hyper-V guest integration daemons (KVP, VSS, file copy) in Python.

Drop-in replacements for the kernel's tools/hv daemons.
"""

# The one place the version lives: setup.py, the compiled module and the
# packages all read it from here.
__version__ = "0.1.0"
