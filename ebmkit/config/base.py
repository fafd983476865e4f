"""Base classes for configuration objects and small reusable validators.

Every configuration class in ebmkit, built-in or third-party, is a frozen,
keyword-only attrs class deriving from :class:`ConfigBase`. Component configs
derive from the base of their kind (:class:`EnergyConfig`, ...), which is how the
registry checks that a plugin's config fits the slot it is registered for.

Use :func:`config_class` as the decorator: it is ``attrs.frozen(kw_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs

__all__ = [
    "ConfigBase",
    "ComponentConfig",
    "EnergyConfig",
    "SamplerConfig",
    "BufferConfig",
    "LossConfig",
    "DatasetConfig",
    "KIND_BASES",
    "config_class",
    "positive",
    "non_negative",
    "probability",
    "finite",
    "one_of",
    "positive_ints",
    "positive_int",
    "non_negative_int",
    "optional",
    "as_tuple",
    "kind_of_config",
]


def config_class(cls: type | None = None, **kwargs: Any):
    """Decorator for configuration classes: ``attrs.frozen(kw_only=True)``."""
    kwargs.setdefault("kw_only", True)

    def wrap(c: type) -> type:
        return attrs.frozen(c, **kwargs)

    return wrap if cls is None else wrap(cls)


@config_class
class ConfigBase:
    """Root of every ebmkit configuration class."""


@config_class
class ComponentConfig(ConfigBase):
    """Root of the per-kind component config bases. Never registered itself."""


@config_class
class EnergyConfig(ComponentConfig):
    """Base of energy network configs (entry-point group ``ebmkit.energies``)."""


@config_class
class SamplerConfig(ComponentConfig):
    """Base of MCMC sampler configs (entry-point group ``ebmkit.samplers``)."""


@config_class
class BufferConfig(ComponentConfig):
    """Base of replay buffer configs (entry-point group ``ebmkit.buffers``)."""


@config_class
class LossConfig(ComponentConfig):
    """Base of loss configs (entry-point group ``ebmkit.losses``)."""


@config_class
class DatasetConfig(ComponentConfig):
    """Base of data set configs (entry-point group ``ebmkit.datasets``)."""


#: kind name -> the base class every config of that kind must derive from.
KIND_BASES: dict[str, type[ComponentConfig]] = {
    "energy": EnergyConfig,
    "sampler": SamplerConfig,
    "buffer": BufferConfig,
    "loss": LossConfig,
    "dataset": DatasetConfig,
}


# ---------------------------------------------------------------------------
# Validators. Each raises ValueError with a message that names the field; the
# converter turns it into a ConfigProblem at the field's dotted path.


def _check(pred: Callable[[Any], bool], what: str):
    def validator(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not pred(value):
            raise ValueError(f"{attribute.name}: must be {what}, got {value!r}")

    validator.__doc__ = f"Value must be {what}."
    return validator


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


positive = _check(lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a finite number > 0")
non_negative = _check(lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = _check(lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]")
finite = _check(lambda v: _is_number(v) and math.isfinite(v), "a finite number")


def one_of(choices: Sequence[str]):
    """Value must be one of ``choices``; the error suggests the closest one."""
    choices = tuple(choices)

    def validator(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            from ebmkit._suggest import did_you_mean

            hint = did_you_mean(str(value), choices)
            raise ValueError(
                f"{attribute.name}: must be one of {', '.join(map(repr, choices))}, got {value!r}"
                + (f"; {hint}" if hint else "")
            )

    validator.choices = choices  # type: ignore[attr-defined]
    return validator


def positive_ints(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A non-empty sequence of positive integers (layer widths, shapes)."""
    if not isinstance(value, tuple) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ValueError(f"{attribute.name}: must be a non-empty list of positive integers, got {value!r}")


def positive_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An integer > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name}: must be a positive integer, got {value!r}")


def non_negative_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name}: must be an integer >= 0, got {value!r}")


def as_tuple(value: Any) -> Any:
    """attrs converter: lists become tuples, so configs stay hashable."""
    return tuple(value) if isinstance(value, list) else value


def optional(validator: Callable[..., None]):
    """Accept ``None`` or whatever ``validator`` accepts."""

    def wrapped(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return wrapped


def kind_of_config(cls: type) -> str | None:
    """The kind whose base ``cls`` derives from, or ``None``."""
    for kind, base in KIND_BASES.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    return None
