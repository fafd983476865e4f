"""Validators and converters for config fields, for built-ins and plugins alike.

Each validator is an attrs validator: it raises ``ValueError`` with a message
that names the field; the config converter turns it into a problem at the
field's dotted path (``sampler.step_size: must be a finite number > 0``).

Use them in ``attrs.field(validator=...)``::

    step_size: float = attrs.field(default=0.01, validator=positive)
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ebmkit.suggest import did_you_mean

__all__ = [
    "positive",
    "non_negative",
    "probability",
    "finite",
    "in_range",
    "one_of",
    "positive_int",
    "non_negative_int",
    "positive_ints",
    "box",
    "optional",
    "as_tuple",
]

Validator = Callable[[Any, attrs.Attribute, Any], None]


#: The largest float32: every number runs in float32, so a larger one is infinite there.
FLOAT32_MAX = 3.4028234663852886e38


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(pred: Callable[[Any], bool], what: str) -> Validator:
    def validator(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not pred(value):
            raise ValueError(f"{attribute.name}: must be {what}, got {value!r}")

    validator.__doc__ = f"Value must be {what}."
    return validator


def _in_float32(validator: Validator) -> Validator:
    """``validator``, after refusing numbers that are infinite in float32 (every
    computation runs in float32, so 1e39 would be inf there)."""

    def guarded(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if _is_number(value) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise ValueError(f"{attribute.name}: must be finite in float32 (|x| <= 3.4e38), got {value!r}")
        validator(inst, attribute, value)

    guarded.__doc__ = validator.__doc__
    return guarded


positive = _in_float32(_check(lambda v: _is_finite(v) and v > 0, "a finite number > 0"))
non_negative = _in_float32(_check(lambda v: _is_finite(v) and v >= 0, "a finite number >= 0"))
probability = _check(lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]")
finite = _in_float32(_check(_is_finite, "a finite number"))
positive_int = _check(lambda v: _is_int(v) and v > 0, "an integer > 0")
non_negative_int = _check(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
positive_ints = _check(
    lambda v: isinstance(v, tuple) and bool(v) and all(_is_int(d) and d > 0 for d in v),
    "a non-empty list of positive integers",
)


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Validator:
    """A number in the interval between ``low`` and ``high`` (closed unless
    ``low_open``/``high_open``), e.g. ``in_range(0, 1, high_open=True)`` for [0, 1)."""
    left, right = ("(" if low_open else "["), (")" if high_open else "]")

    def pred(v: Any) -> bool:
        if not _is_number(v) or math.isnan(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    return _check(pred, f"a number in {left}{low:g}, {high:g}{right}")


def one_of(choices: Sequence[str]) -> Validator:
    """Value must be one of ``choices``; the error suggests the closest one."""
    choices = tuple(choices)

    def validator(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            hint = did_you_mean(str(value), choices)
            raise ValueError(
                f"{attribute.name}: must be one of {', '.join(map(repr, choices))}, got {value!r}"
                + (f"; {hint}" if hint else "")
            )

    validator.choices = choices  # type: ignore[attr-defined]
    return validator


def box(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A pair of finite numbers ``(low, high)`` with ``low < high``."""
    value = as_tuple(value)
    ok = isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) and math.isfinite(v) for v in value)
    if not ok:
        raise ValueError(f"{attribute.name}: must be a pair of finite numbers [low, high], got {value!r}")
    if not value[0] < value[1]:
        raise ValueError(f"{attribute.name}: must have low < high, got low={value[0]!r}, high={value[1]!r}")


def optional(validator: Validator) -> Validator:
    """Accept ``None`` or whatever ``validator`` accepts."""

    def wrapped(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            validator(inst, attribute, value)

    wrapped.__doc__ = f"None, or: {validator.__doc__ or ''}".strip()
    return wrapped


def as_tuple(value: Any) -> Any:
    """attrs converter: lists (TOML arrays, Python lists) become tuples, so
    configs stay hashable and comparable."""
    return tuple(value) if isinstance(value, list) else value
