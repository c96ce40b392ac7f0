# SPDX-License-Identifier: GPL-2.0-only
# cffi's out-of-line API mode needs setup() to know about the builders.
from setuptools import setup

setup(cffi_modules=["bindings/build.py:ffibuilder", "bindings/build.py:hvsim_ffibuilder"])
