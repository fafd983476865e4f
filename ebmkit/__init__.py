"""ebmkit: a plugin-based framework for energy-based models on JAX."""

from ebmkit import registry
from ebmkit.config import Config, TrainConfig, config_class, dump_config, load_config
from ebmkit.errors import (
    ComponentConflictError,
    ConfigError,
    EbmkitError,
    PluginLoadError,
    UnknownComponentError,
)
from ebmkit.registry import ComponentSpec, get_spec, overlay, register

__version__ = "0.1.0"

__all__ = [
    "ComponentConflictError",
    "ComponentSpec",
    "Config",
    "ConfigError",
    "EbmkitError",
    "PluginLoadError",
    "TrainConfig",
    "UnknownComponentError",
    "config_class",
    "dump_config",
    "get_spec",
    "load_config",
    "overlay",
    "register",
    "registry",
]
