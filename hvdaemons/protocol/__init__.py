# SPDX-License-Identifier: GPL-2.0-only
"""Pure protocol code: bytes in, dataclasses out; no file descriptors."""
