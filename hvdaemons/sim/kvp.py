# SPDX-License-Identifier: GPL-2.0-only
"""Simulated host for kvp (placeholder until written)."""

from __future__ import annotations

import argparse

from .server import SimServer


def install(server: SimServer, args: argparse.Namespace) -> None:
    raise NotImplementedError("kvp simulator")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def demo(args: argparse.Namespace) -> int:
    raise NotImplementedError("kvp demo")
