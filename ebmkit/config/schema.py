"""The top-level run configuration.

A run is five components plus training settings::

    energy = "mlp"
    sampler = { name = "langevin", step_size = 0.05 }
    loss = "pcd"
    buffer = "replay"
    dataset = "8gaussians"

    [train]
    steps = 2000

The core knows only the *names* of the default components; they are resolved
through the registries like any other name.
"""

from __future__ import annotations

import attrs

from ebmkit.config.base import (
    BufferConfig,
    ConfigBase,
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
    config_class,
    non_negative,
    non_negative_int,
    optional,
    positive,
    positive_int,
)
from ebmkit.config.converter import component_field

__all__ = ["Config", "TrainConfig", "DEFAULT_COMPONENTS"]

#: The default assembly: what `ebmkit train` runs with no config file.
DEFAULT_COMPONENTS = {
    "energy": "mlp",
    "sampler": "langevin",
    "loss": "pcd",
    "buffer": "replay",
    "dataset": "8gaussians",
}


@config_class
class TrainConfig(ConfigBase):
    """Optimisation and bookkeeping settings of a training run.

    Attributes:
        steps: number of optimiser updates.
        batch_size: data points per update (and chains per update for CD/PCD).
        optimizer: an optax alias (``adam``, ``adamw``, ``sgd``, ...).
        learning_rate: the optimiser's step size.
        max_grad_norm: clip gradients to this global norm; off when unset.
        seed: seeds parameters, data order and every MCMC key.
        log_every: fetch metrics from the device every this many steps.
        eval_every: run evaluation every this many steps (0: only at the end).
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        steps_per_call: training steps fused into one compiled call.
        energy_bound: an energy magnitude above this counts as divergence.
        max_retries: rollbacks to the last good checkpoint before giving up.
        lr_decay_on_retry: factor applied to the learning rate on each rollback.
    """

    steps: int = attrs.field(default=2000, validator=positive_int)
    batch_size: int = attrs.field(default=256, validator=positive_int)
    optimizer: str = "adam"
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    max_grad_norm: float | None = attrs.field(default=None, validator=optional(positive))
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    log_every: int = attrs.field(default=100, validator=positive_int)
    eval_every: int = attrs.field(default=0, validator=non_negative_int)
    checkpoint_every: int = attrs.field(default=500, validator=non_negative_int)
    keep_checkpoints: int = attrs.field(default=3, validator=positive_int)
    steps_per_call: int = attrs.field(default=1, validator=positive_int)
    energy_bound: float = attrs.field(default=1e4, validator=positive)
    max_retries: int = attrs.field(default=2, validator=non_negative_int)
    lr_decay_on_retry: float = attrs.field(default=0.5, validator=positive)


@config_class
class Config(ConfigBase):
    """A complete, resolved run configuration."""

    energy: EnergyConfig = component_field("energy", DEFAULT_COMPONENTS["energy"])
    sampler: SamplerConfig = component_field("sampler", DEFAULT_COMPONENTS["sampler"])
    loss: LossConfig = component_field("loss", DEFAULT_COMPONENTS["loss"])
    buffer: BufferConfig = component_field("buffer", DEFAULT_COMPONENTS["buffer"])
    dataset: DatasetConfig = component_field("dataset", DEFAULT_COMPONENTS["dataset"])
    train: TrainConfig = attrs.field(factory=TrainConfig)
