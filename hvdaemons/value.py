# SPDX-License-Identifier: GPL-2.0-only
"""Value: the base of the small records the daemons pass around (messages, mounts, devices).

A subclass names its fields in __slots__ and sets them in __init__; Value
adds equality (same type, equal fields), a hash to match and a repr naming
the fields.  Values are not changed after __init__.

Not dataclasses: importing them loads inspect, ast and dis, about 1 MiB of
a daemon's resident memory for its life (README.md, "Memory";
benchmarks/bench_rss.py --imports measures it).
"""

from __future__ import annotations


class Value:
    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
