# SPDX-License-Identifier: GPL-2.0-only
# cffi's out-of-line API mode needs setup() to know about the builder.
from setuptools import setup

setup(cffi_modules=["bindings/build.py:ffibuilder"])
