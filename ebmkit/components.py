"""Building components from resolved config objects."""

from __future__ import annotations

import functools
from typing import Any

from ebmkit.config.base import ComponentConfig, kind_of_config
from ebmkit.registry import ComponentSpec, get_registry

__all__ = ["spec_for", "build_component", "build_dataset"]


def spec_for(config: ComponentConfig) -> ComponentSpec:
    """The spec whose config class ``config`` is an instance of."""
    kind = kind_of_config(type(config))
    if kind is None:
        raise TypeError(f"{type(config).__name__} is not a component config")
    reg = get_registry(kind)
    return reg.load(reg.provider_of_config(type(config)))


def build_component(config: ComponentConfig, **context: Any) -> Any:
    """``spec.build(config, **context)`` for the spec that owns ``config``."""
    return spec_for(config).build(config, **context)


@functools.lru_cache(maxsize=8)
def build_dataset(config: ComponentConfig) -> Any:
    """Build (once per config) a data set; configs are frozen and hashable."""
    return build_component(config)
