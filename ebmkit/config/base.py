"""Base classes for configuration objects.

Every configuration class in ebmkit, built-in or third-party, is a frozen,
keyword-only attrs class deriving from :class:`ConfigBase`. Component configs
derive from the base of their kind (:class:`EnergyConfig`, ...), which is how the
registry checks that a plugin's config fits the slot it is registered for.

Use :func:`config_class` as the decorator: it is ``attrs.frozen(kw_only=True)``.
"""

from __future__ import annotations

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
    "config_class",
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
