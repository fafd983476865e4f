"""Every contract between ebmkit and its components.

Everything here is pure and jit-able; randomness is always an explicit
``jax.random.key`` passed in as the first argument. Optional capabilities are
explicit protocols (``isinstance(obj, Scheduled)``), never guessed with
``hasattr``. docs/architecture.md draws how they fit together.

Shapes: ``B`` is the batch (or chain) axis, ``event`` the shape of one sample.

This module imports no JAX at run time, so that ``import ebmkit`` (and the
plugin listing) stays fast; the array types are for readers and checkers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import jax

    Array = jax.Array
    PRNGKey = jax.Array
else:
    Array = Any
    PRNGKey = Any

#: ``energy_fn(x[B, *event], y=None) -> E[B]``; rows independent (no batch
#: statistics). ``y`` is an optional per-row condition (labels, a noise level).
EnergyFn = Callable[..., Array]

__all__ = [
    "Array",
    "PRNGKey",
    "EnergyFn",
    "SUPPORT_KINDS",
    "Support",
    "CONTINUOUS",
    "BuildContext",
    "ReferenceDistribution",
    "Batch",
    "SamplerState",
    "SamplerInfo",
    "Sampler",
    "Scheduled",
    "Adaptive",
    "Equilibrating",
    "BufferState",
    "Buffer",
    "FreshStarts",
    "Shardable",
    "LossContext",
    "Loss",
    "DeclaresMetrics",
    "OwnsParameters",
    "OwnsState",
    "EvalMode",
    "BlockGibbs",
    "LOSS_SLOTS",
]


# -- what the data looks like: the build context -------------------------------------

#: The kinds of data support a component may declare.
SUPPORT_KINDS = ("continuous", "binary", "categorical")
_CATEGORICAL = re.compile(r"^categorical\((\d+)\)$")


@attrs.frozen(kw_only=True)
class Support:
    """Where the data lives: ``continuous`` (R^d), ``binary`` ({0, 1}^d) or
    ``categorical`` ({0, .., K-1}^d with ``num_categories = K``)."""

    kind: str = "continuous"
    num_categories: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in SUPPORT_KINDS:
            raise ValueError(f"support must be one of {SUPPORT_KINDS}, got {self.kind!r}")
        if (self.kind == "categorical") != (self.num_categories is not None):
            raise ValueError("num_categories is set for categorical support, and only there")

    @classmethod
    def parse(cls, text: str | Support) -> Support:
        """``"continuous"``, ``"binary"`` or ``"categorical(K)"``."""
        if isinstance(text, Support):
            return text
        match = _CATEGORICAL.match(text)
        if match:
            return cls(kind="categorical", num_categories=int(match.group(1)))
        return cls(kind=text)

    def __str__(self) -> str:
        return f"categorical({self.num_categories})" if self.kind == "categorical" else self.kind


CONTINUOUS = Support()


@runtime_checkable
class ReferenceDistribution(Protocol):
    """A tractable distribution a data set offers (NCE's noise, AIS's base, ...).

    Both methods are pure and jit-able.
    """

    def sample(self, rng_key: PRNGKey, n: int) -> Array:
        """``n`` draws ``[n, *event]``."""

    def log_prob(self, x: Array) -> Array:
        """Normalised log-density ``[B]``."""


@attrs.frozen(kw_only=True, eq=False)
class BuildContext:
    """What every ``build(config, ctx)`` may use.

    A data set is built first (its ``ctx`` has only ``base_dir``); every other
    component then gets the data set's facts.

    Attributes:
        event_shape: the shape of one sample.
        dtype: the dtype samples are fed to the energy in.
        support: continuous, binary or categorical(K).
        bounds: ``(low, high)`` box holding the data (scalars or arrays
            broadcastable to ``event_shape``), or ``None``.
        num_classes: labels per sample take values in ``range(num_classes)``;
            ``None`` for unlabelled data.
        rngs: ``nnx.Rngs`` for parameter initialisation (energies).
        base_dir: the directory relative paths in the config refer to (the
            config file's), or ``None`` for the working directory.
        dataset_name: the data set's registry name, for messages.

    Contexts compare and hash by identity: compiled programs that close over
    one are cached per context.
    """

    event_shape: tuple[int, ...] | None = None
    dtype: str = "float32"
    support: Support = CONTINUOUS
    bounds: tuple[Any, Any] | None = None
    num_classes: int | None = None
    rngs: Any = attrs.field(default=None, repr=False)
    base_dir: Path | None = None
    dataset_name: str | None = None
    _reference: Callable[[], ReferenceDistribution | None] | None = attrs.field(
        default=None, repr=False, alias="reference_factory"
    )
    _cache: dict[str, Any] = attrs.field(factory=dict, repr=False, init=False)

    @property
    def reference(self) -> ReferenceDistribution | None:
        """The data set's reference distribution (computed on first use), or ``None``."""
        if "reference" not in self._cache:
            self._cache["reference"] = self._reference() if self._reference is not None else None
        return self._cache["reference"]

    def replace(self, **changes: Any) -> BuildContext:
        """A copy with ``changes`` (e.g. ``rngs``); the reference is shared."""
        new = attrs.evolve(self, **changes)
        new._cache.update(self._cache)
        return new


class Batch(NamedTuple):
    """One training batch: samples ``x[B, *event]`` and labels ``y[B]`` or ``None``."""

    x: Array
    y: Array | None = None


# -- samplers --------------------------------------------------------------------------


class SamplerState(NamedTuple):
    """What the next MCMC step needs. Samplers may define richer states, but
    every state has ``position`` (``[B, *event]``) and ``energy`` (``[B]``)."""

    position: Array
    energy: Array
    grad: Array


class SamplerInfo(NamedTuple):
    """Per-chain diagnostics of one kernel call (not carried forward).

    Every sampler's info has at least these fields, each of shape ``[B]``.
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array


@runtime_checkable
class Sampler(Protocol):
    """A BlackJAX-shaped MCMC sampler over a batch of independent chains.

    ``tunables`` are the numeric defaults from the config (e.g. ``step_size``);
    callers may pass others to each ``kernel`` call, so schedules work. A
    tunable may be a scalar or an array broadcastable per chain (``[B]``).
    """

    tunables: Mapping[str, Any]
    num_steps: int

    def init(self, position: Array, energy_fn: EnergyFn) -> Any: ...

    def kernel(self, rng_key: PRNGKey, state: Any, energy_fn: EnergyFn, **tunables: Any) -> tuple[Any, Any]: ...


@runtime_checkable
class Scheduled(Protocol):
    """A sampler whose tunables change along the chain (annealing)."""

    def schedule(self, step_index: Array, num_steps: int) -> Mapping[str, Any]:
        """``{tunable: value}`` for step ``step_index`` of a ``num_steps`` chain (traced)."""


@runtime_checkable
class Equilibrating(Protocol):
    """A sampler whose chains carry auxiliary state that starts out of
    equilibrium (e.g. the hot replicas of replica exchange, which start at
    the chain's position): its kernel leaves the target invariant once that
    state has equilibrated, which takes about ``equilibration_steps`` steps
    on a target of unit scale. The conformance kit runs that many steps
    before it checks invariance."""

    equilibration_steps: int


@runtime_checkable
class Adaptive(Protocol):
    """A sampler that tunes itself.

    Its adaptation state (any pytree, e.g. per-chain step sizes ``[B]``)
    persists across calls: the trainer keeps it in
    ``TrainState.sampler_state`` and checkpoints it. Before training and before
    :meth:`~ebmkit.EBM.generate`, ``warmup_steps`` adapting steps run from the
    chain starts (the adaptation phase).
    """

    warmup_steps: int

    def init_adaptation(self, position: Array) -> Any:
        """A fresh adaptation state for chains starting at ``position``."""

    def adapted_tunables(self, adaptation: Any) -> Mapping[str, Any]:
        """The tunables the kernel runs with under ``adaptation``."""

    def adapt(self, adaptation: Any, info: Any, step_index: Array) -> Any:
        """The adaptation state after one kernel step that returned ``info``."""


# -- buffers ---------------------------------------------------------------------------


class BufferState(NamedTuple):
    """A fixed-capacity replay buffer on the device.

    Attributes:
        data: ``[capacity, *event]`` stored chain states.
        filled: ``[capacity]`` bool, which slots hold a written chain.
    """

    data: Array
    filled: Array


@runtime_checkable
class Buffer(Protocol):
    """An optax-shaped replay buffer (pure functions over a state)."""

    capacity: int

    def init(self, rng_key: PRNGKey, example: Array) -> Any:
        """``example`` is one sample, shape ``event`` (its dtype is kept)."""

    def sample(self, rng_key: PRNGKey, state: Any, n: int) -> tuple[Array, Array]:
        """Draw ``n`` chain starts and the slots they came from (``int32[n]``)."""

    def update(self, state: Any, x: Array, slots: Array) -> Any:
        """Write chains ``x`` back into ``slots``."""


@runtime_checkable
class FreshStarts(Protocol):
    """A buffer that can draw fresh chain starts (``generate`` uses them)."""

    def fresh(self, rng_key: PRNGKey, n: int) -> Array:
        """``n`` draws from the init distribution."""


@runtime_checkable
class Shardable(Protocol):
    """A buffer that says how to split itself over ``num_shards`` devices."""

    def shard(self, num_shards: int) -> Any:
        """The buffer each device holds (e.g. ``capacity // num_shards``)."""


# -- losses ----------------------------------------------------------------------------

#: What a loss may need besides the energy: a sampler, a buffer, labelled
#: batches, an energy that takes a noise level as its condition.
LOSS_SLOTS = ("sampler", "buffer", "labels", "noise_level")


class LossContext(NamedTuple):
    """What a loss may use besides the energy and the batch.

    Attributes:
        sampler: the bound sampler, or ``None`` when the loss needs none.
        num_steps: MCMC steps per update (K), static (0 without a sampler).
        tunables: the sampler's numeric settings for this update.
        sample_energy_fn: the energy with parameters detached (eval mode);
            chains must run on it so that no gradient flows through them.
        buffer: the replay buffer, or ``None``.
        buffer_state: its state, or ``None``; a loss returns the updated one.
        params: trainable parameters the loss owns (gradients flow into them),
            or ``None``.
        state: non-trainable state the loss owns; a loss returns the updated one.
        sampler_state: the sampler's persistent adaptation state, or ``None``;
            a loss that runs chains returns the updated one.
        data: the :class:`BuildContext` (event shape, support, bounds, reference).
    """

    sampler: Any = None
    num_steps: int = 0
    tunables: Mapping[str, Any] = {}
    sample_energy_fn: EnergyFn | None = None
    buffer: Any = None
    buffer_state: Any = None
    params: Any = None
    state: Any = None
    sampler_state: Any = None
    data: BuildContext | None = None


class Loss(Protocol):
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)``.

    ``batch`` is a :class:`Batch`; ``metrics`` is a dict of scalars that
    includes ``loss``; the returned ``ctx`` carries the updated
    ``buffer_state``, ``state`` and ``sampler_state``.
    """

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext) -> tuple[Array, dict[str, Array], LossContext]: ...


@runtime_checkable
class DeclaresMetrics(Protocol):
    """A loss that names the metrics it returns (besides ``loss``).

    The progress line, ``ebmkit diagnose`` and the summary show what is
    declared: ``energy_gap`` only where a loss has negatives.
    """

    metrics: tuple[str, ...]


@runtime_checkable
class OwnsParameters(Protocol):
    """A loss with trainable parameters (NCE's log-normaliser, ...).

    They are optimised with the energy's and checkpointed.
    """

    def init_params(self, rng_key: PRNGKey, data: BuildContext) -> Any: ...


@runtime_checkable
class OwnsState(Protocol):
    """A loss with non-trainable state carried from step to step (EMAs, counters)."""

    def init_state(self, rng_key: PRNGKey, data: BuildContext) -> Any: ...


# -- energies --------------------------------------------------------------------------


@runtime_checkable
class EvalMode(Protocol):
    """The one eval-mode contract of energies (see :mod:`ebmkit.nn`).

    ``nnx.view(module, deterministic=True, use_running_average=True)`` turns
    dropout off and freezes statistics; a module tree accepts those keys when
    one of its modules defines ``set_view`` taking them.
    """

    def set_view(self, deterministic: bool | None = None, use_running_average: bool | None = None) -> None: ...


@runtime_checkable
class BlockGibbs(Protocol):
    """An energy over bits that is the free energy of a Bernoulli-Bernoulli RBM.

    With hidden bits ``h[H]``, the joint ``E(x, h) = -b·x - c·h - xᵀ W h`` has
    factorised conditionals, and ``E(x) = -b·x - Σ_j softplus(c + Wᵀx)_j``. The
    module says so by offering the conditionals' logits; samplers can then
    alternate ``h | x`` and ``x | h`` (block Gibbs), and evaluation can sum
    out one layer exactly (``b = visible_logits(0)``, ``c = hidden_logits(0)``).
    """

    num_hidden: int

    def hidden_logits(self, x: Array) -> Array:
        """``[B, H]``: ``c + Wᵀx``, the logits of ``p(h_j = 1 | x)``."""

    def visible_logits(self, h: Array) -> Array:
        """``[B, *event]``: ``b + W h``, the logits of ``p(x_i = 1 | h)``."""
