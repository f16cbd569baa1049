"""Record: the base of the small value objects on the CLI's hot path.

dataclasses would do the same, but importing it pulls in inspect, ast and dis: about
15 ms of every `hermes gateway status` on a small machine. A subclass names its fields
in `__slots__` and sets them in a typed `__init__`; equality, repr and `to_dict` come
from the slots. Defining __eq__ makes a Record unhashable (it may be mutable) unless a
subclass defines __hash__.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}
