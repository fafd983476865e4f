"""The top-level run configuration.

A run is five components plus training settings::

    energy = "mlp"
    sampler = { name = "langevin", step_size = 0.05 }
    loss = "pcd"
    buffer = "replay"
    dataset = "8gaussians"

    [train]
    steps = 2000

    [distributed]      # optional: data-parallel over 4 devices
    devices = 4

The core knows only the *names* of the default components; they are resolved
through the registries like any other name.

The sampler and buffer slots are filled only when the loss needs them (its
spec's ``needs``): left out, they take ``langevin``/``replay`` for a loss that
runs chains from a buffer and stay empty for one that does not (score
matching, NCE). ``"none"`` leaves a slot empty explicitly; a sampler set for a
loss that needs none is kept (``generate`` uses it).
"""

from __future__ import annotations

from typing import Any

import attrs

from ebmkit.config.base import (
    BufferConfig,
    ConfigBase,
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
    config_class,
)
from ebmkit.config.converter import AUTO, component_field
from ebmkit.config.validators import (
    as_tuple,
    finite,
    in_range,
    non_negative,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
    probability,
)
from ebmkit.errors import ConfigError, ConfigProblem

__all__ = ["Config", "TrainConfig", "DistributedConfig", "BaseMeasureConfig", "DEFAULT_COMPONENTS", "parse_mesh"]

#: Optimiser names accepted by ``train.optimizer`` (optax aliases; see ebmkit.training.optim).
OPTIMIZER_NAMES = (
    "adam", "adamw", "adamax", "adabelief", "amsgrad", "lamb", "lion", "nadam", "radam", "rmsprop", "sgd", "yogi",
)

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
        lr_schedule: ``constant`` or ``cosine`` (decays to ``final_lr_fraction``
            of the learning rate at ``steps``).
        warmup_steps: linear learning-rate warm-up from 0 over this many steps.
        final_lr_fraction: where the cosine schedule ends, as a fraction.
        max_grad_norm: clip gradients to this global norm; off when unset.
        seed: seeds parameters, data order and every MCMC key.
        log_every: fetch metrics from the device every this many steps.
        eval_every: run evaluation every this many steps (0: only at the end).
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        steps_per_call: training steps fused into one compiled call (a
            ``lax.scan``); 1 runs the bare step, which is faster for conv nets on CPU.
        energy_bound: an energy magnitude above this counts as divergence.
        max_retries: rollbacks to the last good checkpoint before giving up.
        lr_decay_on_retry: factor applied to the learning rate on each rollback.
        data_on_device: where training batches are drawn. ``auto``
            (default): inside the compiled step, with JAX, when the data set
            can (:meth:`ebmkit.data.Dataset.device_sampler`: the 2-D toys and
            in-memory image/table sets) and training runs on one device;
            otherwise on the host with numpy. ``always`` insists (an error
            when it cannot), ``never`` always uses the host. On the device
            there is no host batch, no transfer and no Python work per step;
            the batch of step ``s`` is a function of ``seed`` and ``s``, so a
            resumed run draws what the uninterrupted one would have.
        ema_decay: keep an exponential moving average of the energy's
            parameters, ``ema = ema_decay * ema + (1 - ema_decay) * params``
            after every optimiser step (inside the compiled step), starting
            from the initial parameters. Sampling and evaluation after
            training (``generate``, ``energy``, the summary's figures, the
            plots) then use the average; training's own chains keep the live
            parameters. Unset or 0 turns it off; typical values 0.99-0.9999.
    """

    steps: int = attrs.field(default=2000, validator=[positive_int, in_range(1, 10**12)])
    batch_size: int = attrs.field(default=256, validator=positive_int)
    optimizer: str = attrs.field(default="adam", validator=one_of(OPTIMIZER_NAMES))
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    lr_schedule: str = attrs.field(default="constant", validator=one_of(["constant", "cosine"]))
    warmup_steps: int = attrs.field(default=0, validator=non_negative_int)
    final_lr_fraction: float = attrs.field(default=0.0, validator=probability)
    max_grad_norm: float | None = attrs.field(default=None, validator=optional(positive))
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    seed: int = attrs.field(default=0, validator=in_range(0, 2**32 - 1))
    log_every: int = attrs.field(default=100, validator=positive_int)
    eval_every: int = attrs.field(default=0, validator=non_negative_int)
    checkpoint_every: int = attrs.field(default=500, validator=non_negative_int)
    keep_checkpoints: int = attrs.field(default=3, validator=positive_int)
    steps_per_call: int = attrs.field(default=1, validator=positive_int)
    energy_bound: float = attrs.field(default=1e4, validator=positive)
    max_retries: int = attrs.field(default=2, validator=non_negative_int)
    lr_decay_on_retry: float = attrs.field(default=0.5, validator=in_range(0, 1, low_open=True, high_open=True))
    ema_decay: float | None = attrs.field(default=None, validator=optional(in_range(0, 1, high_open=True)))
    data_on_device: str = attrs.field(default="auto", validator=one_of(["auto", "always", "never"]))

    @property
    def ema(self) -> float | None:
        """The EMA decay in force, or ``None`` when the average is off (unset or 0)."""
        return float(self.ema_decay) if self.ema_decay else None


def parse_mesh(text: str) -> int:
    """The size of the ``data`` axis in a mesh string such as ``"data=4"``.

    Raises:
        ValueError: anything but one ``data=N`` axis with ``N >= 1``.
    """
    if not isinstance(text, str):
        raise ValueError(f"mesh: must be a string such as 'data=4', got {text!r}")
    axes = [part.strip() for part in text.split(",") if part.strip()]
    sizes = {}
    for axis in axes:
        name, sep, size = axis.partition("=")
        name, size = name.strip(), size.strip()
        if not sep or not name or not size.isdigit() or int(size) < 1:
            raise ValueError(f"mesh: expected 'data=N' with N a positive integer, got {text!r}")
        sizes[name] = int(size)
    if set(sizes) != {"data"}:
        other = sorted(set(sizes) - {"data"})
        raise ValueError(
            f"mesh: only a 'data' axis is supported (data-parallel training), got {text!r}"
            + (f"; axes {', '.join(map(repr, other))} (model or tensor parallelism) are not implemented" if other else "")
        )
    return sizes["data"]


def _mesh_string(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        parse_mesh(value)  # raises ValueError naming what is wrong


@config_class
class DistributedConfig(ConfigBase):
    """Data-parallel training over a mesh of devices (see docs/distributed.md).

    The batch and the replay buffer are split along the mesh axis ``data``;
    parameters and optimiser state are replicated; gradients are averaged.

    Attributes:
        devices: devices along the ``data`` axis. Unset: one device and no mesh
            (or every device of every process when several processes run).
        mesh: the same as a mesh string, ``"data=N"``; must agree with
            ``devices`` when both are set.
        multihost: when to call ``jax.distributed.initialize()``: ``auto``
            when a coordinator address is known (``coordinator_address`` or
            ``$JAX_COORDINATOR_ADDRESS``), ``on`` always (JAX then detects
            SLURM, Open MPI, Kubernetes, Cloud TPU), ``off`` never.
        coordinator_address: ``host:port`` of process 0's coordinator; default
            ``$JAX_COORDINATOR_ADDRESS``.
        num_processes: processes in the run; default ``$JAX_NUM_PROCESSES``.
        process_id: this process's index; default ``$JAX_PROCESS_ID``.
    """

    devices: int | None = attrs.field(default=None, validator=optional(positive_int))
    mesh: str | None = attrs.field(default=None, validator=_mesh_string)
    multihost: str = attrs.field(default="auto", validator=one_of(("auto", "on", "off")))
    coordinator_address: str | None = None
    num_processes: int | None = attrs.field(default=None, validator=optional(positive_int))
    process_id: int | None = attrs.field(default=None, validator=optional(non_negative_int))

    def __attrs_post_init__(self) -> None:
        if self.devices is not None and self.mesh is not None:
            if parse_mesh(self.mesh) != self.devices:
                raise ValueError(
                    f"mesh {self.mesh!r} and devices = {self.devices} disagree; set only one of them"
                )

    @property
    def num_devices(self) -> int | None:
        """The requested size of the ``data`` axis, or ``None``."""
        if self.devices is not None:
            return self.devices
        if self.mesh is not None:
            return parse_mesh(self.mesh)
        return None


def _finite_tuple(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not value:
        raise ValueError(f"{attribute.name}: must be a non-empty list of numbers, got {value!r}")
    for v in value:
        finite(_inst, attribute, v)


def _one_or_many(value: Any) -> Any:
    """A number is one entry for every coordinate; lists become tuples."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    return as_tuple(value)


@config_class
class BaseMeasureConfig(ConfigBase):
    """An optional base measure added to the energy, whatever the network
    (see docs/evaluation.md):

    - ``gaussian``: ``E(x) = f(x) + Σ (xᵢ − μᵢ)² / (2 (scale · sᵢ)²)``;
    - ``box``: ``E(x) = f(x) + Σ max(0, |xᵢ − cᵢ| − hᵢ)² / (2 wᵢ²)``, walls at
      the data's box ``c ± h`` (zero inside it), ``wᵢ = width · (highᵢ − lowᵢ)``.

    Either makes ``exp(−E)`` integrable, so the model's mass stays near the
    data and long chains do not drift away.

    Attributes:
        kind: ``"none"`` (default), ``"gaussian"`` or ``"box"``.
        scale: (gaussian) the Gaussian's width in units of the data's standard
            deviation; larger is weaker inside the data.
        mean: (gaussian) ``μ`` per coordinate; unset takes the data set's mean.
        std: (gaussian) ``s`` per coordinate; unset takes the data set's
            standard deviation.
        width: (box) the walls' width as a fraction of the box's width.
        low, high: (box) the box per coordinate (or one number for all);
            unset takes the data set's ``bounds``.
    """

    kind: str = attrs.field(default="none", validator=one_of(("none", "gaussian", "box")))
    scale: float = attrs.field(default=3.0, validator=positive)
    mean: tuple[float, ...] | None = attrs.field(default=None, converter=as_tuple, validator=_finite_tuple)
    std: tuple[float, ...] | None = attrs.field(default=None, converter=as_tuple, validator=_finite_tuple)
    width: float = attrs.field(default=0.01, validator=positive)
    low: float | tuple[float, ...] | None = attrs.field(default=None, converter=_one_or_many, validator=_finite_tuple)
    high: float | tuple[float, ...] | None = attrs.field(default=None, converter=_one_or_many, validator=_finite_tuple)

    def __attrs_post_init__(self) -> None:
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError(f"std: every entry must be > 0, got {self.std}")
        if self.low is not None and self.high is not None and len(self.low) == len(self.high):
            if not all(a < b for a, b in zip(self.low, self.high, strict=True)):
                raise ValueError(f"low, high: every low must be < its high, got {self.low} and {self.high}")


@config_class
class Config(ConfigBase):
    """A complete, resolved run configuration.

    ``sampler`` and ``buffer`` are ``None`` when the run has none (see the
    module docstring for how they are filled).
    """

    energy: EnergyConfig = component_field("energy", DEFAULT_COMPONENTS["energy"])
    sampler: SamplerConfig | None = component_field("sampler", AUTO, fallback=DEFAULT_COMPONENTS["sampler"])
    loss: LossConfig = component_field("loss", DEFAULT_COMPONENTS["loss"])
    buffer: BufferConfig | None = component_field("buffer", AUTO, fallback=DEFAULT_COMPONENTS["buffer"])
    dataset: DatasetConfig = component_field("dataset", DEFAULT_COMPONENTS["dataset"])
    train: TrainConfig = attrs.field(factory=TrainConfig)
    distributed: DistributedConfig = attrs.field(factory=DistributedConfig)
    base_measure: BaseMeasureConfig = attrs.field(factory=BaseMeasureConfig)

    def __attrs_post_init__(self) -> None:
        from ebmkit.config.converter import component_field_value
        from ebmkit.registry import spec_of

        spec = spec_of(self.loss)
        needs = spec.needs_of(self.loss)
        problems = []
        for slot in ("sampler", "buffer"):
            value = getattr(self, slot)
            if value == AUTO:
                value = component_field_value(slot, DEFAULT_COMPONENTS[slot]) if slot in needs else None
                object.__setattr__(self, slot, value)
            elif value is None and slot in needs:
                problems.append(
                    ConfigProblem(
                        path=slot,
                        message=f"loss {spec.name!r} needs a {slot}, but the slot is empty",
                        suggestion=f'set {slot} = "{DEFAULT_COMPONENTS[slot]}", or leave it out',
                    )
                )
        if "noise_level" in needs and getattr(self.energy, "condition", None) != "noise_level":
            problems.append(
                ConfigProblem(
                    path="energy.condition",
                    message=(
                        f"loss {spec.name!r} feeds the energy a noise level as its condition, but energy "
                        f"{spec_of(self.energy).name!r} is not built to take one"
                    ),
                    suggestion='set energy.condition = "noise_level" (mlp), or use one noise level',
                )
            )
        if problems:
            raise ConfigError(problems)

    @property
    def needs(self) -> frozenset[str]:
        """The slots the loss uses (``sampler``, ``buffer``, ``labels``)."""
        from ebmkit.registry import spec_of

        return spec_of(self.loss).needs_of(self.loss)
