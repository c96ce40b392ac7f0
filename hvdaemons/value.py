# SPDX-License-Identifier: GPL-2.0-only
"""Value: the base of the small records the daemons pass around (messages, mounts, devices).

A subclass names its fields in __slots__ and sets each once, in __init__;
Value adds equality (same type, equal fields), a hash to match and a repr
naming the fields.  A value never changes afterwards: setting or deleting
a field raises AttributeError (a request cannot change once decoded).

Not dataclasses: importing them loads inspect, ast and dis, about 1 MiB of
a daemon's resident memory for its life (README.md, "Memory";
benchmarks/bench_rss.py --imports measures it).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import TypeVar

    _V = TypeVar("_V", bound="Value")

# What a field holds until __init__ sets it.
_UNSET = object()
_set = object.__setattr__


class Value:
    __slots__: tuple[str, ...] = ()

    def __new__(cls: type[_V], *args: object, **kwargs: object) -> _V:
        self = object.__new__(cls)
        for name in cls.__slots__:
            _set(self, name, _UNSET)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, name, None) is not _UNSET:
            raise AttributeError(f"{type(self).__name__}.{name} cannot change")
        _set(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} cannot change")

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
