# SPDX-License-Identifier: GPL-2.0-only
"""Pure protocol code: bytes in, values (hvdaemons.value) out; no file descriptors."""
