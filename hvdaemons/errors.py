# SPDX-License-Identifier: GPL-2.0-only
"""Exceptions shared by the daemons.

OSError from system calls passes through unchanged; these add the two
protocol-level outcomes the service loop decides on.
"""

from __future__ import annotations


class HvError(Exception):
    """Base class of hvdaemons' own errors."""


class ProtocolError(HvError):
    """A message from the kernel or host that does not parse: log it and fail the request."""


class ChannelReset(HvError):
    """The channel is unusable (EOF, short read, rescind): close, reopen, re-register."""
