"""ebmkit: a plugin-based framework for energy-based models on JAX.

Components (energies, samplers, losses, buffers, data sets) are chosen by
name and resolved from Python entry points; see :mod:`ebmkit.registry`.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _metadata_version

from ebmkit import registry
from ebmkit.config import (
    Config,
    DistributedConfig,
    TrainConfig,
    config_class,
    dump_config,
    load_config,
)
from ebmkit.errors import (
    ComponentConflictError,
    ConfigError,
    EbmkitError,
    PluginLoadError,
    UnknownComponentError,
)
from ebmkit.registry import ComponentSpec, get_spec, overlay, register

try:
    __version__ = _metadata_version("ebmkit-jax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# JAX and Flax load only when a model-level name is first used, so that
# `ebmkit plugins` and config validation start fast.
_LAZY_MODULES = {
    "ebmkit.assemble": ("assemble",),
    "ebmkit.evaluate": (
        "diagnose", "grid_nll", "GridNLL", "ais_log_z", "reverse_ais_log_z", "AISResult", "mmd",
        "frechet_distance", "label_entropy", "nearest_neighbour_distance",
    ),
    "ebmkit.model": ("EBM", "DeepEBM", "TrainState"),
    "ebmkit.guide": (
        "SAMPLING_PRESETS", "DeepEBMConfig", "DeviceManager", "EBMConfig", "EnergyNetworkConfig",
        "EnergyTrainer", "EnergyTrainingConfig", "MCMCConfig", "SampleBufferConfig",
        "create_cifar_ebm", "create_mnist_ebm", "create_simple_ebm", "sampling_preset",
    ),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebmkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ComponentConflictError",
    "ComponentSpec",
    "Config",
    "ConfigError",
    "DistributedConfig",
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
    *_LAZY,
]
