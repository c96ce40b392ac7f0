# SPDX-License-Identifier: GPL-2.0-only
"""Suite-wide set-up.

Nothing changes the working directory: tox runs the suite from the
repository root, and every process a test starts must still run the
installed package (hvsim.launch starts them in a neutral directory), so the
whole suite checks that no child imports the source tree.
"""
