"""Unadjusted Langevin dynamics (ULA), the workhorse sampler of EBM training.

One step on every chain (row) of the batch::

    x' = clamp(x - step_size * clip(grad E(x)) / temperature + noise_scale * xi),  xi ~ N(0, I)

With ``noise_scale = sqrt(2 * step_size)`` (the default) and ``temperature = 1``
this is the Euler-Maruyama discretisation of the Langevin diffusion whose
stationary law is ``p(x) ∝ exp(-E(x))`` (biased by O(step_size), no
Metropolis correction). A separate ``noise_scale`` gives the "short-run" EBM
recipe of Du & Mordatch (2019), as in Artifex's EBM guide. ``temperature`` is
used by :mod:`ebmkit_builtins.annealed_langevin`; the ``langevin`` sampler
itself always runs at ``temperature = 1``.

Nothing is masked: a non-finite energy, gradient or position flows on and is
reported per chain in ``info.non_finite``.

Noise generator (``prng``): the Gaussian draw ``xi`` is a large share of a
step on CPU (about 40 % of a 784-d MLP step with JAX's default Threefry-2x32
bits, which XLA emits as a loop over rounds). By default (``prng = "auto"``)
each step's key is re-typed as a Philox-4x32-10 key (the same two words, no
extra work) and ``xi`` is drawn with ``jax.random.normal`` on it: the same
exact inverse-CDF transform, fed by Random123's Philox bits, which XLA fuses
into one loop and generates about twice as fast on CPU. Draws of fewer than
1,024 numbers a step (a 2-d toy batch) keep the key's own generator, whose
fixed cost is lower there; the choice depends only on the static shape.
``prng = "key"`` always uses the key as given (the stream of
``jax.random.normal(rng_key, ...)``); docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config.base import (
    SamplerConfig,
    config_class,
    non_negative,
    one_of,
    optional,
    positive,
)
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad, tunables_for
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerInfo, SamplerState

__all__ = [
    "LangevinConfig",
    "LangevinState",
    "LangevinInfo",
    "LangevinSampler",
    "init",
    "build_kernel",
    "noise_key",
    "resolve_prng",
    "PRNGS",
    "DEFAULT_PRNG",
    "AUTO_MIN_SIZE",
    "spec",
]

#: ``prng`` settings: ``"auto"``, ``"key"`` (the key's own implementation) or
#: a JAX implementation name. ``philox2x32`` is left out on purpose: its key is
#: 32 bits, so a long run would draw the same noise twice (birthday bound).
PRNGS = ("auto", "key", "philox4x32", "threefry2x32", "threefry4x32", "rbg", "unsafe_rbg")
#: ``"auto"``: Philox-4x32-10 (Crush-resistant, Salmon et al., SC 2011; a 64-bit
#: key like JAX's default) for draws of at least :data:`AUTO_MIN_SIZE` numbers,
#: where its bits are the cheapest exact choice on CPU; the key's own
#: implementation below that, where Threefry's smaller fixed cost wins.
DEFAULT_PRNG = "auto"
#: The draw size (numbers per step) from which ``"auto"`` uses Philox-4x32.
AUTO_MIN_SIZE = 1024

#: What the next step needs: position, energy ``[B]`` and ``dE/dx``.
LangevinState = SamplerState
#: Per-chain diagnostics; ``acceptance_rate`` is always 1 (no MH correction).
LangevinInfo = SamplerInfo


# -- configuration -------------------------------------------------------------------


def positive_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An integer > 0 (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be an integer > 0, got {value!r}")


def as_box(value: Any) -> Any:
    """Lists (TOML arrays) become tuples so configs stay hashable and comparable."""
    return tuple(value) if isinstance(value, list) else value


def box(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """``None`` or a pair of finite numbers ``(low, high)`` with ``low < high``."""
    if value is None:
        return
    value = as_box(value)
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok:
        raise ValueError(f"must be a pair of finite numbers [low, high], got {value!r}")
    if not value[0] < value[1]:
        raise ValueError(f"must have low < high, got low={value[0]!r}, high={value[1]!r}")


@config_class
class LangevinConfig(SamplerConfig):
    """Unadjusted Langevin dynamics.

    Attributes:
        num_steps: K, steps per chain (per training update).
        step_size: the drift coefficient ``step_size`` in the update.
        noise_scale: std of the injected noise; ``None`` means
            ``sqrt(2 * step_size)`` (exact Langevin), a number gives the
            Du & Mordatch style update with independent noise.
        grad_clip: clip each element of ``grad E`` to ``[-grad_clip, grad_clip]``
            before the step; ``None`` (default) does not clip.
        clamp: ``(low, high)``: clamp every sample into this box after each
            step (and the chain start at ``init``); ``None`` (default) does not.
        prng: the bit generator of the Gaussian noise: ``"auto"`` (default:
            ``"philox4x32"`` for draws of at least 1,024 numbers a step,
            ``"key"`` below), ``"philox4x32"``, ``"threefry2x32"``,
            ``"threefry4x32"``, ``"rbg"``, ``"unsafe_rbg"``, or ``"key"`` for
            the key's own implementation (JAX's default Threefry unless the
            caller chose another). Every choice draws exact ``N(0, I)`` noise
            (the same transform); they differ only in the random stream and
            speed.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float | None = attrs.field(default=None, validator=optional(non_negative))
    grad_clip: float | None = attrs.field(default=None, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_box, validator=box)
    prng: str = attrs.field(default=DEFAULT_PRNG, validator=one_of(PRNGS))


# -- the noise generator -------------------------------------------------------------


def _impl_name(rng_key: PRNGKey) -> str:
    impl = jax.random.key_impl(rng_key)
    return impl if isinstance(impl, str) else str(getattr(impl, "name", impl))


@functools.cache
def _key_shape(impl: str) -> tuple[int, ...] | None:
    """Shape of the key data of ``impl``, or ``None`` if this JAX lacks it."""
    try:
        return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)
    except (ValueError, TypeError, KeyError):
        return None


def resolve_prng(prng: str) -> str:
    """``prng``, or ``"key"`` (with a warning) when this JAX does not provide it.

    ``"auto"`` needs ``philox4x32`` and quietly means ``"key"`` without it.
    """
    if prng == "auto":
        return prng if _key_shape("philox4x32") is not None else "key"
    if prng != "key" and _key_shape(prng) is None:
        warnings.warn(
            f"langevin: this JAX ({jax.__version__}) has no PRNG implementation {prng!r}; "
            "the noise uses the key's own implementation (prng = \"key\")",
            RuntimeWarning,
            stacklevel=3,
        )
        return "key"
    return prng


def noise_key(rng_key: PRNGKey, prng: str = DEFAULT_PRNG, size: int | None = None) -> PRNGKey:
    """``rng_key`` as a key of the implementation ``prng`` (``"key"``: unchanged).

    ``"auto"`` stands for ``"philox4x32"`` when ``size`` (the numbers to draw)
    is at least :data:`AUTO_MIN_SIZE`, else for ``"key"``.

    When the key data has the shape the new implementation wants (Threefry-2x32
    and Philox-4x32 both use two words), the same words are re-typed: free, and
    sound, since Philox (like Threefry) is a keyed bijection meant to take any
    key, sequential ones included (Salmon et al., SC 2011). Otherwise the new
    key's data is drawn from ``rng_key``. Legacy ``uint32`` keys count as JAX's
    default implementation.
    """
    if prng == "auto":
        prng = "philox4x32" if size is not None and size >= AUTO_MIN_SIZE else "key"
    if prng == "key":
        return rng_key
    if not jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.wrap_key_data(rng_key)
    if _impl_name(rng_key) == prng:
        return rng_key
    shape = _key_shape(prng)
    data = jax.random.key_data(rng_key)
    if data.shape != shape or data.dtype != jnp.uint32:
        data = jax.random.bits(rng_key, shape, jnp.uint32)
    return jax.random.wrap_key_data(data, impl=prng)


# -- the algorithm -------------------------------------------------------------------


def _event_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def per_chain_diagnostics(position: Array, energy: Array, grad: Array) -> tuple[Array, Array]:
    """``(grad_norm[B], non_finite[B])`` of one state, shared by the built-in samplers."""
    axes = _event_axes(position)
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=axes))
    # ``v * 0`` is 0 for a finite ``v`` and NaN for an infinite or NaN one, so
    # one sum flags every non-finite entry of position and gradient exactly (no
    # overflow: the sum is of zeros), in a pass XLA fuses with the gradient
    # norm's. Separate isfinite/all reductions cost ~15 % of a 784-d step on CPU.
    poisoned = jnp.sum(position * 0 + grad * 0, axis=axes)
    non_finite = jnp.isnan(poisoned) | ~jnp.isfinite(energy)
    return grad_norm, non_finite


def init(position: Array, energy_fn: EnergyFn) -> LangevinState:
    """The state at ``position`` (``[B, *event]``): one energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return LangevinState(position=position, energy=energy, grad=grad)


def build_kernel(
    grad_clip: float | None = None,
    clamp: tuple[float, float] | None = None,
    prng: str = DEFAULT_PRNG,
) -> Callable[..., tuple[LangevinState, LangevinInfo]]:
    """A Langevin kernel with the structural options fixed.

    Args:
        grad_clip: elementwise gradient clip, or ``None``.
        clamp: ``(low, high)`` box for the new position, or ``None``.
        prng: the noise's bit generator (see :data:`PRNGS`); ``"key"`` uses
            the key as given. An implementation this JAX lacks falls back
            to ``"key"`` with a warning.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size, noise_scale=None,
        temperature=1.0) -> (state, info)``. ``noise_scale=None`` means
        ``sqrt(2 * step_size)``; the drift is divided by ``temperature``, so the
        stationary law (for exact noise) is ``exp(-E / temperature)``.
    """
    prng = resolve_prng(prng)

    def kernel(
        rng_key: PRNGKey,
        state: LangevinState,
        energy_fn: EnergyFn,
        step_size: float | Array,
        noise_scale: float | Array | None = None,
        temperature: float | Array = 1.0,
    ) -> tuple[LangevinState, LangevinInfo]:
        x = state.position
        if noise_scale is None:
            noise_scale = jnp.sqrt(2.0 * step_size)
        grad = state.grad
        if grad_clip is not None:
            # jnp.clip keeps NaN, so clipping never hides a non-finite gradient.
            grad = jnp.clip(grad, -grad_clip, grad_clip)
        noise = jax.random.normal(noise_key(rng_key, prng, x.size), x.shape, x.dtype)
        drift = (step_size / temperature) * grad
        new_x = (x - drift + noise_scale * noise).astype(x.dtype)
        if clamp is not None:
            new_x = jnp.clip(new_x, clamp[0], clamp[1])
        energy, new_grad = per_row_energy_and_grad(energy_fn, new_x)
        grad_norm, non_finite = per_chain_diagnostics(new_x, energy, new_grad)
        new_state = LangevinState(position=new_x, energy=energy, grad=new_grad)
        info = LangevinInfo(
            acceptance_rate=jnp.ones(energy.shape, jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
        )
        return new_state, info

    return kernel


class LangevinSampler:
    """Langevin bound to a :class:`LangevinConfig` (the object ``spec.build`` returns).

    Attributes:
        config: the config it was built from.
        num_steps: K from the config.
        tunables: ``{"step_size", "noise_scale"}`` defaults from the config;
            each ``kernel`` call may override them (``None`` keeps the default).
        prng: the noise's bit generator in use (the config's, or ``"key"``
            where this JAX lacks it).
    """

    def __init__(self, config: LangevinConfig):
        self.config = config
        self.num_steps = config.num_steps
        self.tunables: dict[str, float | None] = {
            "step_size": config.step_size,
            "noise_scale": config.noise_scale,
        }
        self._clamp = config.clamp
        self.prng = resolve_prng(config.prng)
        self._kernel = build_kernel(grad_clip=config.grad_clip, clamp=config.clamp, prng=self.prng)

    def init(self, position: Array, energy_fn: EnergyFn) -> LangevinState:
        if self._clamp is not None:
            position = jnp.clip(position, self._clamp[0], self._clamp[1])
        return init(position, energy_fn)

    def kernel(
        self, rng_key: PRNGKey, state: LangevinState, energy_fn: EnergyFn, **tunables: Any
    ) -> tuple[LangevinState, LangevinInfo]:
        return self._kernel(rng_key, state, energy_fn, **tunables_for(self, tunables))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


spec = ComponentSpec(
    kind="sampler",
    name="langevin",
    config=LangevinConfig,
    build=LangevinSampler,
    summary="Unadjusted Langevin dynamics (optional Du & Mordatch noise, grad clip, clamp)",
)
