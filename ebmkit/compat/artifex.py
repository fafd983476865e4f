"""The surface of Artifex's EBM user guide, as thin layers over the registries.

Users of that guide change only their import lines::

    from ebmkit import EBM, EBMConfig, EnergyNetworkConfig, MCMCConfig, SampleBufferConfig

Every class here translates to an :class:`ebmkit.Config` (components chosen by
name through the registries) and builds the same :class:`ebmkit.EBM` that
``ebmkit.assemble`` builds. Nothing is implemented twice.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import jax
import jax.numpy as jnp
from flax import nnx

from ebmkit.components import build_component
from ebmkit.config import Config, ConfigBase, config_class, structure
from ebmkit.config.validators import (
    as_tuple,
    non_negative,
    one_of,
    optional,
    positive,
    positive_int,
    positive_ints,
    probability,
)
from ebmkit.data import check_batch
from ebmkit.errors import ConfigError, ConfigProblem
from ebmkit.model import EBM, SAMPLING_PRESETS, DeepEBM, sampling_preset
from ebmkit.nn import eval_view
from ebmkit.registry import get_registry
from ebmkit.sampling import run_chain, tunables_for
from ebmkit.training import make_loss_context
from ebmkit.types import Batch

__all__ = [
    "EnergyNetworkConfig",
    "MCMCConfig",
    "SampleBufferConfig",
    "EBMConfig",
    "DeepEBMConfig",
    "EnergyTrainingConfig",
    "EnergyTrainer",
    "DeviceManager",
    "SAMPLING_PRESETS",
    "sampling_preset",
    "create_simple_ebm",
    "create_mnist_ebm",
    "create_cifar_ebm",
]


@config_class
class EnergyNetworkConfig(ConfigBase):
    """The energy network (guide fields; ``network_type`` is any energy name).

    Attributes:
        name: a label (kept for the guide's code; not used).
        hidden_dims: layer widths (MLP) or channels per stage (CNN).
        activation: activation name (relu, gelu, silu, swish, elu, leaky_relu, tanh, ...).
        network_type: the registry name of the energy, ``"mlp"`` or ``"cnn"`` or a plugin's.
        dropout_rate: dropout inside the network (off during sampling).
        use_bias: kept for compatibility; the built-in networks always use biases.
        use_residual: residual blocks (CNN).
        use_spectral_norm: spectral normalisation of the weights.
    """

    name: str = "energy_network"
    hidden_dims: tuple[int, ...] = attrs.field(default=(128, 128), converter=as_tuple, validator=positive_ints)
    activation: str = "gelu"
    network_type: str = "mlp"
    dropout_rate: float = attrs.field(default=0.0, validator=probability)
    use_bias: bool = True
    use_residual: bool = True
    use_spectral_norm: bool = False


@config_class
class MCMCConfig(ConfigBase):
    """Langevin sampling settings (the guide's ``x ← x − ε∇E + σξ``).

    Attributes:
        name: a label.
        n_steps: chain length K.
        step_size: ε.
        noise_scale: σ.
        temperature: sample ``exp(−E/T)``; 1 is the model density.
        sampler: the sampler's registry name (``langevin``; ``hmc`` uses step_size only).
    """

    name: str = "mcmc"
    n_steps: int = attrs.field(default=60, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float = attrs.field(default=0.005, validator=non_negative)
    temperature: float = attrs.field(default=1.0, validator=positive)
    sampler: str = "langevin"

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> MCMCConfig:
        """``quick``, ``standard`` or ``quality`` (see :data:`SAMPLING_PRESETS`)."""
        p = sampling_preset(preset)
        return cls(n_steps=p["n_steps"], step_size=p["step_size"], noise_scale=p["noise_scale"], **overrides)


@config_class
class SampleBufferConfig(ConfigBase):
    """The replay buffer.

    Attributes:
        name: a label.
        capacity: stored chains.
        reinit_prob: probability that a drawn chain restarts from noise.
    """

    name: str = "buffer"
    capacity: int = attrs.field(default=8192, validator=positive_int)
    reinit_prob: float = attrs.field(default=0.05, validator=probability)


def _energy_table(net: EnergyNetworkConfig, input_shape: tuple[int, ...] | None) -> dict[str, Any]:
    """Map the guide's network fields onto the chosen energy's config fields."""
    spec = get_registry("energy").get(net.network_type)
    fields = {a.name for a in attrs.fields(spec.config)}
    defaults = EnergyNetworkConfig()
    table: dict[str, Any] = {"name": net.network_type}
    problems = []
    for field in ("hidden_dims", "activation", "dropout_rate", "use_residual", "use_spectral_norm", "use_bias"):
        value = getattr(net, field)
        if field in fields:
            table[field] = list(value) if isinstance(value, tuple) else value
        elif value != getattr(defaults, field) and not (field == "use_bias" and value):
            problems.append(
                ConfigProblem(
                    path=f"energy_network.{field}",
                    message=f"energy {net.network_type!r} has no setting {field!r}",
                    suggestion=f"its fields: {', '.join(sorted(fields))}",
                )
            )
    if problems:
        raise ConfigError(problems)
    if input_shape is not None and "input_shape" in fields:
        table["input_shape"] = list(input_shape)
    return table


def _sampler_table(mcmc: MCMCConfig) -> dict[str, Any]:
    if mcmc.temperature != 1.0:
        return {
            "name": "annealed_langevin",
            "num_steps": mcmc.n_steps,
            "step_size": mcmc.step_size,
            "noise_scale": mcmc.noise_scale,
            "initial_temperature": mcmc.temperature,
            "final_temperature": mcmc.temperature,
        }
    if mcmc.sampler == "langevin":
        return {"name": "langevin", "num_steps": mcmc.n_steps, "step_size": mcmc.step_size, "noise_scale": mcmc.noise_scale}
    return {"name": mcmc.sampler, "num_steps": mcmc.n_steps, "step_size": mcmc.step_size}


@config_class
class EBMConfig(ConfigBase):
    """An MLP-style EBM over vectors of ``input_dim`` (or any ``input_shape``).

    Attributes:
        name: a label.
        input_dim: size of one (flat) sample.
        input_shape: shape of one sample, overrides ``input_dim`` when set.
        energy_network: the network.
        mcmc: the sampler settings.
        sample_buffer: the replay buffer.
        alpha: weight of the energy regulariser ``α(E(x⁺)² + E(x⁻)²)``.
        training_method: ``pcd`` (replay buffer) or ``cd`` (chains from data).
        learning_rate: Adam step size of ``model.train_step``.
        max_grad_norm: gradient clipping of ``model.train_step`` (off if unset).
        seed: default seed when no ``rngs`` is given.
    """

    name: str = "ebm"
    input_dim: int | None = attrs.field(default=None, validator=optional(positive_int))
    input_shape: tuple[int, ...] | None = attrs.field(default=None, converter=as_tuple, validator=optional(positive_ints))
    energy_network: EnergyNetworkConfig = attrs.field(factory=EnergyNetworkConfig)
    mcmc: MCMCConfig = attrs.field(factory=MCMCConfig)
    sample_buffer: SampleBufferConfig = attrs.field(factory=SampleBufferConfig)
    alpha: float = attrs.field(default=0.01, validator=non_negative)
    training_method: str = attrs.field(default="pcd", validator=one_of(["pcd", "cd"]))
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    max_grad_norm: float | None = attrs.field(default=None, validator=optional(positive))
    seed: int = 0

    def event_shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return tuple(self.input_shape)
        if self.input_dim is None:
            raise ConfigError([ConfigProblem(path="input_dim", message="set input_dim (or input_shape)")])
        return (self.input_dim,)

    def to_ebmkit(self) -> tuple[Config, tuple[int, ...]]:
        """The equivalent :class:`ebmkit.Config` and the event shape."""
        shape = self.event_shape()
        data = {
            "energy": _energy_table(self.energy_network, shape if len(shape) == 3 else None),
            "sampler": _sampler_table(self.mcmc),
            "loss": {"name": self.training_method, "alpha": self.alpha},
            "buffer": {
                "name": "replay",
                "capacity": self.sample_buffer.capacity,
                "reinit_prob": self.sample_buffer.reinit_prob,
                "init_low": -1.0,
                "init_high": 1.0,
            },
            "train": {"learning_rate": self.learning_rate, "seed": self.seed},
        }
        if self.max_grad_norm is not None:
            data["train"]["max_grad_norm"] = self.max_grad_norm
        return structure(data, Config), shape


@config_class
class DeepEBMConfig(EBMConfig):
    """A convolutional EBM over images of ``input_shape`` = (H, W, C).

    Attributes:
        input_shape: (H, W, C).
        energy_network: defaults to ``network_type="cnn"`` with (32, 64, 128) channels.
        alpha: weight of the energy regulariser (0.001 for deep models).
    """

    input_shape: tuple[int, ...] | None = attrs.field(default=(32, 32, 3), converter=as_tuple, validator=optional(positive_ints))
    energy_network: EnergyNetworkConfig = attrs.field(
        factory=lambda: EnergyNetworkConfig(hidden_dims=(32, 64, 128), activation="silu", network_type="cnn")
    )
    alpha: float = attrs.field(default=0.001, validator=non_negative)


# -- factories --------------------------------------------------------------------


def create_simple_ebm(
    input_dim: int,
    *,
    rngs: nnx.Rngs,
    hidden_dims: tuple[int, ...] = (128, 128, 64),
    activation: str = "gelu",
    dropout_rate: float = 0.1,
    mcmc_steps: int = 60,
    step_size: float = 0.01,
    noise_scale: float = 0.005,
    sample_buffer_capacity: int = 2048,
    reinit_prob: float = 0.05,
    alpha: float = 0.01,
    learning_rate: float = 1e-3,
) -> EBM:
    """An MLP EBM for vectors of ``input_dim`` (tabular or 2-D data)."""
    config = EBMConfig(
        name="simple_ebm",
        input_dim=input_dim,
        energy_network=EnergyNetworkConfig(
            hidden_dims=tuple(hidden_dims), activation=activation, dropout_rate=dropout_rate, network_type="mlp"
        ),
        mcmc=MCMCConfig(n_steps=mcmc_steps, step_size=step_size, noise_scale=noise_scale),
        sample_buffer=SampleBufferConfig(capacity=sample_buffer_capacity, reinit_prob=reinit_prob),
        alpha=alpha,
        learning_rate=learning_rate,
    )
    return EBM(config, rngs=rngs)


def _create_image_ebm(input_shape, *, rngs, hidden_dims, activation, use_residual, use_spectral_norm,
                      mcmc_steps, step_size, noise_scale, sample_buffer_capacity, reinit_prob, alpha,
                      learning_rate) -> DeepEBM:
    config = DeepEBMConfig(
        input_shape=input_shape,
        energy_network=EnergyNetworkConfig(
            hidden_dims=tuple(hidden_dims), activation=activation, network_type="cnn",
            use_residual=use_residual, use_spectral_norm=use_spectral_norm,
        ),
        mcmc=MCMCConfig(n_steps=mcmc_steps, step_size=step_size, noise_scale=noise_scale),
        sample_buffer=SampleBufferConfig(capacity=sample_buffer_capacity, reinit_prob=reinit_prob),
        alpha=alpha,
        learning_rate=learning_rate,
    )
    return DeepEBM(config, rngs=rngs)


def create_mnist_ebm(
    *,
    rngs: nnx.Rngs,
    hidden_dims: tuple[int, ...] = (16, 32, 64),
    activation: str = "silu",
    use_residual: bool = True,
    use_spectral_norm: bool = False,
    mcmc_steps: int = 60,
    step_size: float = 0.01,
    noise_scale: float = 0.005,
    sample_buffer_capacity: int = 4096,
    reinit_prob: float = 0.05,
    alpha: float = 0.01,
    learning_rate: float = 1e-4,
) -> DeepEBM:
    """A convolutional EBM for 28×28×1 digits (every argument is honoured)."""
    return _create_image_ebm(
        (28, 28, 1), rngs=rngs, hidden_dims=hidden_dims, activation=activation,
        use_residual=use_residual, use_spectral_norm=use_spectral_norm, mcmc_steps=mcmc_steps,
        step_size=step_size, noise_scale=noise_scale, sample_buffer_capacity=sample_buffer_capacity,
        reinit_prob=reinit_prob, alpha=alpha, learning_rate=learning_rate,
    )


def create_cifar_ebm(
    *,
    rngs: nnx.Rngs,
    hidden_dims: tuple[int, ...] = (32, 64, 128, 256),
    activation: str = "silu",
    use_residual: bool = True,
    use_spectral_norm: bool = True,
    mcmc_steps: int = 100,
    step_size: float = 0.005,
    noise_scale: float = 0.001,
    sample_buffer_capacity: int = 8192,
    reinit_prob: float = 0.05,
    alpha: float = 0.001,
    learning_rate: float = 1e-4,
) -> DeepEBM:
    """A residual, spectrally normalised convolutional EBM for 32×32×3 images."""
    return _create_image_ebm(
        (32, 32, 3), rngs=rngs, hidden_dims=hidden_dims, activation=activation,
        use_residual=use_residual, use_spectral_norm=use_spectral_norm, mcmc_steps=mcmc_steps,
        step_size=step_size, noise_scale=noise_scale, sample_buffer_capacity=sample_buffer_capacity,
        reinit_prob=reinit_prob, alpha=alpha, learning_rate=learning_rate,
    )


# -- the guide's trainer ----------------------------------------------------------


@config_class
class EnergyTrainingConfig(ConfigBase):
    """Settings of :class:`EnergyTrainer`.

    Attributes:
        training_method: ``cd`` (chains start at the data) or ``pcd`` (the
            model's replay buffer), or any registered loss name.
        mcmc_sampler: a sampler name (``langevin``, ``hmc``, ...).
        mcmc_steps: chain length K per update.
        step_size: the sampler's step size.
        noise_scale: Langevin noise (ignored by samplers without one).
        gradient_clipping: clip each MCMC gradient element to ±this (off if unset).
        replay_buffer_size: slots of the trainer's own replay buffer (PCD);
            unset: the chains persist in the model's buffer.
        replay_buffer_init_prob: probability that a chain continues from the
            buffer rather than restarting from noise (1 − reinit probability).
        energy_regularization: the α of ``α(E(x⁺)² + E(x⁻)²)``.
    """

    training_method: str = "cd"
    mcmc_sampler: str = "langevin"
    mcmc_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float = attrs.field(default=0.005, validator=non_negative)
    gradient_clipping: float | None = attrs.field(default=None, validator=optional(positive))
    replay_buffer_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    replay_buffer_init_prob: float = attrs.field(default=0.95, validator=probability)
    energy_regularization: float = attrs.field(default=0.0, validator=non_negative)


_BUFFER_SLOTS = itertools.count()


class EnergyTrainer:
    """The guide's trainer: ``train_step(model, optimizer, batch, rng_key)``.

    Works eagerly or under ``nnx.jit(trainer.train_step)``; the optimizer is an
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)``. Negatives are detached.

    PCD chains live in the trainer's own replay buffer of
    ``replay_buffer_size`` slots, independent of the model's (as in Artifex).
    So that ``nnx.jit`` tracks it, its state rides on the model (an attribute
    named after this trainer, created on the first step); with
    ``replay_buffer_size`` unset the model's own buffer is used.
    """

    def __init__(self, config: EnergyTrainingConfig | None = None, **kwargs: Any):
        if config is None:
            config = EnergyTrainingConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"EnergyTrainer: pass a config or keywords, not both ({sorted(kwargs)})")
        self.config = config
        sampler_table: dict[str, Any] = {"name": config.mcmc_sampler, "num_steps": config.mcmc_steps, "step_size": config.step_size}
        sampler_fields = {a.name for a in attrs.fields(get_registry("sampler").get(config.mcmc_sampler).config)}
        if "noise_scale" in sampler_fields:
            sampler_table["noise_scale"] = config.noise_scale
        if config.gradient_clipping is not None:
            if "grad_clip" not in sampler_fields:
                raise ConfigError(
                    [ConfigProblem(path="gradient_clipping", message=f"sampler {config.mcmc_sampler!r} has no gradient clipping")]
                )
            sampler_table["grad_clip"] = config.gradient_clipping
        parts = structure(
            {
                "sampler": sampler_table,
                "loss": {"name": config.training_method, "alpha": config.energy_regularization},
            },
            Config,
        )
        self._sampler = build_component(parts.sampler)
        self._loss = build_component(parts.loss)
        self._needs = parts.needs
        self._buffers: dict[Any, Any] = {}
        #: The model attribute holding this trainer's buffer state.
        self.buffer_slot = f"energy_trainer_buffer_{next(_BUFFER_SLOTS)}"

    def _buffer_for(self, model: EBM) -> Any:
        """The buffer the chains persist in (built once per model structure)."""
        if "buffer" not in self._needs:
            return None
        key = (self.config.replay_buffer_size, model.event_shape, id(model.buffer))
        if key not in self._buffers:
            if self.config.replay_buffer_size is None:
                if model.buffer is None:
                    raise ValueError(
                        f"EnergyTrainer: loss {self.config.training_method!r} needs a replay buffer; "
                        "set replay_buffer_size or give the model one"
                    )
                base = model.config.buffer
            else:
                base = structure({"buffer": {"name": "replay", "capacity": self.config.replay_buffer_size}}, Config).buffer
                if model.config.buffer is not None and type(model.config.buffer) is type(base):
                    base = attrs.evolve(model.config.buffer, capacity=self.config.replay_buffer_size)
            buffer_config = attrs.evolve(base, reinit_prob=1.0 - self.config.replay_buffer_init_prob)
            self._buffers[key] = build_component(buffer_config, model.data)
        return self._buffers[key]

    def _buffer_vars(self, model: EBM, buffer: Any) -> Any:
        """The nnx Variables holding the buffer state (created on first use)."""
        if self.config.replay_buffer_size is None:
            return model.buffer_state
        if not hasattr(model, self.buffer_slot):
            state = buffer.init(model._next_key(), jnp.zeros(model.event_shape, jnp.float32))
            setattr(model, self.buffer_slot, nnx.data(jax.tree.map(nnx.Variable, state)))
        return getattr(model, self.buffer_slot)

    def train_step(self, model: EBM, optimizer: nnx.Optimizer, batch: Any, rng_key: jax.Array):
        """One update; returns ``(loss, metrics)``."""
        x = check_batch(batch, model.event_shape, "train_step(batch)")
        buffer = self._buffer_for(model)
        eval_graphdef = nnx.graphdef(eval_view(model.energy_net))
        _, params, rest = nnx.split(model.energy_net, nnx.Param, ...)
        frozen = jax.lax.stop_gradient(params)

        def sample_energy_fn(y):
            return nnx.merge(eval_graphdef, frozen, rest)(y)

        is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
        holder = self._buffer_vars(model, buffer) if buffer is not None else None
        buffer_vars = jax.tree.leaves(holder, is_leaf=is_var)
        buffer_state = jax.tree.map(lambda v: v.get_value(), holder, is_leaf=is_var)
        ctx = make_loss_context(
            sampler=self._sampler, sample_energy_fn=sample_energy_fn, buffer=buffer,
            buffer_state=buffer_state, data=model.data,
        )

        def loss_fn(m):
            value, metrics, out = self._loss(rng_key, lambda y: m.energy_net(y), Batch(x), ctx)
            return value, (metrics, out.buffer_state)

        (loss, (metrics, new_buffer)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        for var, value in zip(buffer_vars, jax.tree.leaves(new_buffer), strict=True):
            var.set_value(value)
        return loss, metrics

    def generate_samples(self, model: EBM, batch_size: int, key: jax.Array, shape: tuple[int, ...] | None = None,
                         num_steps: int | None = None) -> jax.Array:
        """Fresh chains with the trainer's sampler (default 10 × ``mcmc_steps`` steps)."""
        if shape is not None and tuple(shape) != model.event_shape:
            raise ValueError(f"generate_samples: shape {tuple(shape)} does not match the model's {model.event_shape}")
        if batch_size <= 0:
            raise ValueError(f"generate_samples: batch_size must be positive, got {batch_size}")
        steps = 10 * self.config.mcmc_steps if num_steps is None else num_steps
        init_key, chain_key = jax.random.split(key)
        eval_graphdef = nnx.graphdef(eval_view(model.energy_net))
        _, params, rest = nnx.split(model.energy_net, nnx.Param, ...)
        x0 = model._starts.fresh(init_key, batch_size)
        x, _ = run_chain(
            chain_key, self._sampler, x0, lambda y: nnx.merge(eval_graphdef, params, rest)(y), steps,
            **tunables_for(self._sampler),
        )
        return x


class DeviceManager:
    """Which accelerator JAX will use (the guide's ``DeviceManager``)."""

    def __init__(self, platform: str | None = None):
        self.platform = platform

    @property
    def devices(self) -> list[jax.Device]:
        return jax.devices(self.platform) if self.platform else jax.devices()

    @property
    def device_count(self) -> int:
        return len(self.devices)

    def get_device(self) -> jax.Device:
        """The first device (a GPU/TPU when present, else the CPU)."""
        return self.devices[0]

    def put(self, tree: Any) -> Any:
        """``jax.device_put`` onto :meth:`get_device`."""
        return jax.device_put(tree, self.get_device())
