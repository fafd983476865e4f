"""ebmkit: a plugin-based framework for energy-based models on JAX.

Components (energies, samplers, losses, buffers, data sets) are chosen by
name and resolved from Python entry points; see :mod:`ebmkit.registry`.
"""

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
    CheckpointError,
    ClassifierWeightsError,
    ComponentConflictError,
    ConfigError,
    ConfigProblem,
    EbmkitError,
    InvalidComponentError,
    PluginLoadError,
    RunDirectoryError,
    RunError,
    ShardingError,
    TrainingDiverged,
    UnknownComponentError,
)
from ebmkit.registry import ComponentSpec, get_spec, overlay, register
from ebmkit.version import __version__ as __version__

# JAX and Flax load only when a model-level name is first used, so that
# `ebmkit plugins` and config validation start fast.
_LAZY_MODULES = {
    "ebmkit.assemble": ("assemble",),
    "ebmkit.components": ("build_dataset", "build_component", "data_context"),
    "ebmkit.job": ("train_job",),
    "ebmkit.run": ("open_run", "Run"),
    "ebmkit.training": ("Trainer", "TrainResult", "TrainState"),
    "ebmkit.evaluate": (
        "diagnose", "grid_nll", "GridNLL", "ais_log_z", "reverse_ais_log_z", "AISResult", "mmd",
        "frechet_distance", "label_entropy", "nearest_neighbour_distance",
    ),
    "ebmkit.model": ("EBM", "DeepEBM"),
    "ebmkit.compat.artifex": (
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
    "CheckpointError",
    "ClassifierWeightsError",
    "ComponentConflictError",
    "ComponentSpec",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DistributedConfig",
    "EbmkitError",
    "InvalidComponentError",
    "PluginLoadError",
    "RunDirectoryError",
    "RunError",
    "ShardingError",
    "TrainConfig",
    "TrainingDiverged",
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
