"""Detectors named in configuration: built-ins by name, others by import path, each checked at
start-up with a message that says what is wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from guard.builtin import BUILTIN
from guard.plugins import DetectorError, load_detector

HERE = "tests.guard.test_plugins"


class Plugged:
    """A well-formed detector of our own; `reach` at each end of its range."""

    name = "plugged"
    category = "pii"
    reach = 1

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        yield from ((m.start(), m.end()) for m in re.finditer("PLUG", text))


class WidestReach(Plugged):
    reach = 65_536


class CallableDetector(Plugged):
    """A detector that can also be called: it is the detector, not a factory of one."""

    def __call__(self) -> Any:
        raise AssertionError("a detector is not called")


def plugged_factory() -> Plugged:
    return Plugged()


PLUGGED = Plugged()
CALLABLE = CallableDetector()
NOT_A_DETECTOR = object()


def attribute_of(**attributes: Any) -> type:
    return type("Made", (Plugged,), attributes)


NO_NAME = attribute_of(name="")
NAME_NOT_STR = attribute_of(name=7)
UNKNOWN_CATEGORY = attribute_of(category="spam")
NO_REACH = attribute_of(reach=0)
TOO_FAR = attribute_of(reach=65_537)
FLOAT_REACH = attribute_of(reach=8.0)
BOOL_REACH = attribute_of(reach=True)
FIND_NOT_CALLABLE = attribute_of(find="find")


class Nameless:
    category = "pii"
    reach = 8

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        return iter(())


class Unreadable(Plugged):
    @property
    def category(self) -> str:  # type: ignore[override]
        raise RuntimeError("a plugin's bug")


class Broken:
    def __init__(self) -> None:
        raise ValueError("cannot start")


def test_a_builtin_is_loaded_by_its_name() -> None:
    assert load_detector("email", BUILTIN) is BUILTIN["email"]


@pytest.mark.parametrize("attribute", ["Plugged", "plugged_factory", "PLUGGED", "CALLABLE",
                                       "WidestReach"])
def test_a_detector_of_our_own_is_a_class_a_factory_or_an_object(attribute: str) -> None:
    detector = load_detector(f"{HERE}:{attribute}", BUILTIN)
    assert (detector.name, detector.category) == ("plugged", "pii")
    assert list(detector.find("a PLUG b")) == [(2, 6)]
    if attribute in ("PLUGGED", "CALLABLE"):
        assert detector is globals()[attribute]


@pytest.mark.parametrize(("spec", "message"), [
    ("emial", "'emial' is not a built-in detector (api_key, credit_card, email, iban, "
              "ip_address, jwt, phone, private_key, us_ssn) nor a module:attribute path"),
    ("tests.guard.no_such_module:Detector", "cannot load 'tests.guard.no_such_module:Detector':"
                                            " ModuleNotFoundError"),
    (f"{HERE}:Plugged:extra", f"cannot load '{HERE}:Plugged:extra': AttributeError"),
    (f"{HERE}:Broken", f"cannot load '{HERE}:Broken': ValueError"),
    (f"{HERE}:NOT_A_DETECTOR", f"'{HERE}:NOT_A_DETECTOR' has no find(text) method"),
    (f"{HERE}:FIND_NOT_CALLABLE", f"'{HERE}:FIND_NOT_CALLABLE' has no find(text) method"),
    (f"{HERE}:Unreadable",
     f"'{HERE}:Unreadable' failed to say its name, category or reach: RuntimeError"),
    (f"{HERE}:NO_NAME", f"'{HERE}:NO_NAME' needs a non-empty str name"),
    (f"{HERE}:Nameless", f"'{HERE}:Nameless' needs a non-empty str name"),
    (f"{HERE}:NAME_NOT_STR", f"'{HERE}:NAME_NOT_STR' needs a non-empty str name"),
    (f"{HERE}:UNKNOWN_CATEGORY",
     f"'{HERE}:UNKNOWN_CATEGORY' has category 'spam'; one of pii, secret, blocked"),
    (f"{HERE}:NO_REACH", f"'{HERE}:NO_REACH' needs an int reach from 1 to 65536"),
    (f"{HERE}:TOO_FAR", f"'{HERE}:TOO_FAR' needs an int reach from 1 to 65536"),
    (f"{HERE}:FLOAT_REACH", f"'{HERE}:FLOAT_REACH' needs an int reach from 1 to 65536"),
    (f"{HERE}:BOOL_REACH", f"'{HERE}:BOOL_REACH' needs an int reach from 1 to 65536"),
])
def test_a_detector_that_cannot_be_used_fails_at_start_up_saying_why(spec: str,
                                                                   message: str) -> None:
    with pytest.raises(DetectorError) as refused:
        load_detector(spec, BUILTIN)
    assert str(refused.value) == message
