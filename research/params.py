"""Typed parameters: what a workload or scheduler option accepts, and the check of a value.

Workload shapes (:mod:`research.workloads`) and scheduler adapters (``options_spec``) declare
their keys with :class:`Param`; :func:`check_param` validates one value and raises
:class:`~research.errors.ParamError` naming the key and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ParamError

#: The default of a parameter that must be given.
REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One workload parameter or scheduler option: its kind, default (or REQUIRED) and an
    allowed-values text."""

    # "bool", "int>0", "int>=0", "float>0", "float>=0", "float", "str", "floats>=0", "ints",
    # "list" (a non-empty list of anything: checked by the shape)
    kind: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    help: str = ""
    #: A scheduler option left out of the validated options while at its default: an option
    #: added after results were stored, whose trials (their keys hash the options) must keep
    #: the keys they had, and stay resumable. Its adapter reads it with ``.get``.
    omit_default: bool = False


def check_param(key: str, spec: Param, value: Any) -> Any:
    """Validate one value against its :class:`Param`; raises :class:`ParamError`."""
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(key, f"expected true or false, got {value!r}")
        return value
    if kind in ("floats>=0", "ints"):
        if not isinstance(value, list) or not value and kind == "floats>=0":
            raise ParamError(key, f"expected a non-empty list, got {value!r}")
        item = Param("int>=0" if kind == "ints" else "float>=0")
        return [check_param(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(key, f"expected an integer, got {value!r}")
        if kind == "int>0" and value < 1:
            raise ParamError(key, f"must be >= 1, got {value}")
        if kind == "int>=0" and value < 0:
            raise ParamError(key, f"must be >= 0, got {value}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(key, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ParamError(key, f"must be finite, got {value}")
        if kind == "float>0" and value <= 0:
            raise ParamError(key, f"must be > 0, got {value}")
        if kind == "float>=0" and value < 0:
            raise ParamError(key, f"must be >= 0 (a duration cannot be negative), got {value}")
        return value
    if kind == "list":
        if not isinstance(value, list) or not value:
            raise ParamError(key, f"expected a non-empty list, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ParamError(key, f"expected a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ParamError(key, f"{value!r} is not allowed; allowed: {', '.join(spec.choices)}")
        return value
    raise AssertionError(kind)


__all__ = ["REQUIRED", "Param", "check_param"]
