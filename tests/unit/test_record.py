"""Record: value equality, repr and to_dict from __slots__ (the dataclass stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermes_container.home import HermesHome
from hermes_container.record import Record
from hermes_container.state import GatewayState
from hermes_container.supervision.history import History


class Point(Record):
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class Other(Record):
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def test_equality_is_by_type_and_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Other(1, 2)
    assert Point(1, 2) != (1, 2)


def test_repr_and_to_dict_follow_the_slots() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert Point(1, 2).to_dict() == {"x": 1, "y": 2}


def test_no_stray_attributes() -> None:
    with pytest.raises(AttributeError):
        Point(1, 2).z = 3  # type: ignore[attr-defined]


def test_mutable_records_are_unhashable_and_home_is_hashable() -> None:
    with pytest.raises(TypeError):
        hash(Point(1, 2))
    homes = {HermesHome(Path("/a")), HermesHome(Path("/a")), HermesHome(Path("/b"))}
    assert len(homes) == 2


def test_defaults_are_not_shared_between_instances() -> None:
    first, second = GatewayState(), GatewayState()
    first.extra["k"] = 1
    assert second.extra == {}
    one, two = History(), History()
    one.deaths.append(1.0)
    assert two.deaths == []
