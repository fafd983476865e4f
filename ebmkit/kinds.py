"""The one table of component kinds.

A *kind* is a slot of a run (the energy, the sampler, ...). Everything that
varies by kind is read from :data:`KINDS`: the registry (entry-point groups),
the config converter (config bases), ``ebmkit plugins`` (listing order), the
conformance kit (protocols) and the compatibility check of a run (supports).
A new kind is one new row here.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ebmkit.config.base import (
    BufferConfig,
    ComponentConfig,
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
)
from ebmkit.types import SUPPORT_KINDS, Buffer, Sampler

__all__ = ["Kind", "KINDS", "KIND_NAMES", "get_kind", "kind_of_config", "groups"]


@attrs.frozen(kw_only=True)
class Kind:
    """One kind of component.

    Attributes:
        name: the config key and CLI word (``"sampler"``).
        group: the entry-point group plugins declare (``"ebmkit.samplers"``).
        config_base: the class every config of the kind derives from.
        builds: what ``spec.build(config, ctx)`` returns, in words.
        protocol: the runtime-checkable protocol of the built object, if any.
        default_supports: the data supports a spec that declares none accepts.
        optional: a run may leave the slot empty (``"none"``) when nothing needs it.
    """

    name: str
    group: str
    config_base: type[ComponentConfig]
    builds: str
    protocol: type | None = None
    default_supports: tuple[str, ...] = SUPPORT_KINDS
    optional: bool = False


KINDS: tuple[Kind, ...] = (
    Kind(
        name="energy", group="ebmkit.energies", config_base=EnergyConfig,
        builds="an nnx.Module mapping x[B, *event] (and an optional condition y) to E[B]",
    ),
    Kind(
        name="sampler", group="ebmkit.samplers", config_base=SamplerConfig,
        builds="a Sampler: tunables, num_steps, init(x, energy_fn), kernel(key, state, energy_fn, **tunables)",
        protocol=Sampler, default_supports=("continuous",), optional=True,
    ),
    Kind(
        name="buffer", group="ebmkit.buffers", config_base=BufferConfig,
        builds="a Buffer: capacity, init(key, example), sample(key, state, n), update(state, x, slots)",
        protocol=Buffer, default_supports=("continuous",), optional=True,
    ),
    Kind(
        name="loss", group="ebmkit.losses", config_base=LossConfig,
        builds="a Loss: (key, energy_fn, batch, ctx) -> (loss, metrics, ctx)",
    ),
    Kind(
        name="dataset", group="ebmkit.datasets", config_base=DatasetConfig,
        builds="an ebmkit.data.Dataset",
    ),
)

#: Kind names in table order.
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
_BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` called ``name``.

    Raises:
        KeyError: no such kind (the message lists the known ones).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown component kind {name!r}; known: {', '.join(KIND_NAMES)}") from None


def groups() -> Mapping[str, str]:
    """``{kind name: entry-point group}`` in table order."""
    return {k.name: k.group for k in KINDS}


def kind_of_config(cls: type) -> str | None:
    """The kind whose config base ``cls`` derives from, or ``None``."""
    if not isinstance(cls, type):
        return None
    for k in KINDS:
        if issubclass(cls, k.config_base):
            return k.name
    return None
