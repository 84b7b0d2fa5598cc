"""Detectors named in configuration: a built-in by name, or any object by import path.

`"email"` is the built-in; `"mypackage.pii:PresidioDetector"` imports `PresidioDetector` from
`mypackage.pii` and, if it is a class or factory, calls it with no arguments. Whatever comes
back must look like a `Detector`, which is checked here, at start-up, not at the first request.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from guard.detectors import CATEGORIES, Detector


class DetectorError(ValueError):
    """A detector named in configuration cannot be used; the message says why."""


def load_detector(spec: str, builtin: Mapping[str, Detector]) -> Detector:
    if ":" not in spec:
        if spec not in builtin:
            raise DetectorError(f"{spec!r} is not a built-in detector "
                                f"({', '.join(sorted(builtin))}) nor a module:attribute path")
        return builtin[spec]
    module_name, _, attribute = spec.partition(":")
    try:  # whatever a third-party module raises, start-up reports it as this setting's fault
        target: Any = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, type) or (callable(target) and not hasattr(target, "find")):
            target = target()
    except Exception as exc:
        raise DetectorError(f"cannot load {spec!r}: {type(exc).__name__}") from None
    return _checked(target, spec)


def _checked(detector: Any, spec: str) -> Detector:
    if not callable(getattr(detector, "find", None)):
        raise DetectorError(f"{spec!r} has no find(text) method")
    try:
        name, category, reach = (getattr(detector, attr, None)
                                 for attr in ("name", "category", "reach"))
    except Exception as exc:
        raise DetectorError(f"{spec!r} failed to say its name, category or reach: "
                            f"{type(exc).__name__}") from None
    if not isinstance(name, str) or not name:
        raise DetectorError(f"{spec!r} needs a non-empty str name")
    if category not in CATEGORIES:
        raise DetectorError(f"{spec!r} has category {category!r}; one of "
                            f"{', '.join(CATEGORIES)}")
    if type(reach) is not int or not 1 <= reach <= 65_536:
        raise DetectorError(f"{spec!r} needs an int reach from 1 to 65536")
    detector_: Detector = detector
    return detector_
