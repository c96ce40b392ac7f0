# SPDX-License-Identifier: GPL-2.0-only
"""The base of every exception hvdaemons (and hvsim) define.

OSError from system calls passes through unchanged.  ProtocolError and
ChannelReset are the two protocol-level outcomes the service loop decides
on; the other errors subclass HvError where they are defined (a pool that
cannot be used, a file copy refused, a mount that changed under a freeze,
hvctl's failures, the simulator's).  Two stay outside on purpose: the uio
file-copy loop's private stop signal (fcopy/uio.py: not a fault, and no
fault handler may catch it) and hvsim's SocketInUse, an OSError that
carries its errno.
"""

from __future__ import annotations


class HvError(Exception):
    """Base class of hvdaemons' own errors."""


class ProtocolError(HvError):
    """A message that does not parse: log it and fail the request.

    From the kernel or host; in the simulator also from a daemon.
    """


class ChannelReset(HvError):
    """The channel is unusable (EOF, short read, rescind): close, reopen, re-register."""
