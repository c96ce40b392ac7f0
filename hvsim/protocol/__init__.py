# SPDX-License-Identifier: GPL-2.0-only
"""The kernel and host sides of the messages: pure, bytes in, dataclasses out."""
