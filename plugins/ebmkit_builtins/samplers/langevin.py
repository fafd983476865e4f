"""Unadjusted Langevin dynamics (ULA), the workhorse sampler of EBM training.

One step on every chain (row) of the batch::

    x' = clamp(x - step_size * clip(grad E(x)) / temperature + noise_scale * xi),  xi ~ N(0, I)

With ``noise_scale = sqrt(2 * step_size)`` (the default) and ``temperature = 1``
this is the Euler-Maruyama discretisation of the Langevin diffusion whose
stationary law is ``p(x) ∝ exp(-E(x))`` (biased by O(step_size), no
Metropolis correction). A separate ``noise_scale`` gives the "short-run" EBM
recipe of Du & Mordatch (2019), as in Artifex's EBM guide. ``temperature`` is
what ``annealed_langevin`` (below) lowers along the chain; the ``langevin``
sampler itself always runs at ``temperature = 1``.

Nothing is masked: a non-finite gradient or position flows on and is reported
per chain in ``info.non_finite``. The move reads no energy, so ``non_finite``
does not check it (a NaN energy with a finite gradient leaves the chain
unharmed): the energy the state carries is then dead code wherever nothing
reads it, and XLA skips computing it at every step of a training chain or of
``generate``.

Noise generator (``prng``): by default (``"auto"``) large draws use
Philox-4x32 bits through :func:`ebmkit.sampling.noise_key` (exact, about twice
as fast on CPU); ``prng = "key"`` always uses the key as given (the stream of
``jax.random.normal(rng_key, ...)``).

Annealed Langevin dynamics (``annealed_langevin``) lives here too, since it is
the same kernel on ``E(x) / T`` with ``T`` lowered over the chain. Step ``k``
of a ``K``-step chain runs at temperature ``T_k``, from
``T_0 = initial_temperature`` to ``T_{K-1} = final_temperature``:

* ``geometric``: ``T_k = T_0 * (T_{K-1} / T_0) ** (k / (K - 1))``
* ``linear``:    ``T_k = T_0 + (T_{K-1} - T_0) * k / (K - 1)``

(a one-step chain runs at ``final_temperature``). High temperatures flatten the
landscape so chains cross between modes early. The sampler is
:class:`~ebmkit.types.Scheduled`: ``schedule(step_index, num_steps) ->
{"temperature": T}``, which :func:`ebmkit.sampling.run_chain` evaluates inside
its scan; ``temperature`` is also an ordinary tunable (default
``final_temperature``) for callers that step the kernel themselves. Energies in
the state and info are untempered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import (
    as_tuple,
    box,
    non_negative,
    one_of,
    optional,
    positive,
    positive_int,
)
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    DEFAULT_PRNG,
    PRNGS,
    BoundSampler,
    noise_key,
    per_chain_diagnostics,
    per_row_energy_and_grad,
    resolve_prng,
)
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerInfo, SamplerState

__all__ = [
    "LangevinConfig",
    "LangevinState",
    "LangevinInfo",
    "LangevinSampler",
    "AnnealedLangevinConfig",
    "AnnealedLangevinSampler",
    "init",
    "build_kernel",
    "temperature_schedule",
    "spec",
    "annealed_spec",
]

#: What the next step needs: position, energy ``[B]`` and ``dE/dx``.
LangevinState = SamplerState
#: Per-chain diagnostics; ``acceptance_rate`` is always 1 (no MH correction).
LangevinInfo = SamplerInfo
SCHEDULES = ("geometric", "linear")


# -- configuration -------------------------------------------------------------------


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
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))
    prng: str = attrs.field(default=DEFAULT_PRNG, validator=one_of(PRNGS))



# -- the algorithm -------------------------------------------------------------------


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
    prng = resolve_prng(prng, who="langevin")

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
        grad_norm, non_finite = per_chain_diagnostics(new_x, None, new_grad)
        new_state = LangevinState(position=new_x, energy=energy, grad=new_grad)
        info = LangevinInfo(
            acceptance_rate=jnp.ones(energy.shape, jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
        )
        return new_state, info

    return kernel


class LangevinSampler(BoundSampler):
    """Langevin bound to a :class:`LangevinConfig` (the object ``spec.build`` returns).

    Attributes:
        config: the config it was built from.
        num_steps: K from the config.
        tunables: ``{"step_size", "noise_scale"}`` defaults from the config;
            each ``kernel`` call may override them (``None`` keeps the default).
        prng: the noise's bit generator in use (the config's, or ``"key"``
            where this JAX lacks it).
    """

    def __init__(self, config: LangevinConfig, ctx: Any = None):
        self.prng = resolve_prng(getattr(config, "prng", DEFAULT_PRNG), who="langevin")
        tunables = {"step_size": config.step_size, "noise_scale": config.noise_scale}
        if isinstance(config, AnnealedLangevinConfig):
            tunables["temperature"] = config.final_temperature
        super().__init__(
            config,
            init=init,
            kernel=build_kernel(grad_clip=config.grad_clip, clamp=config.clamp, prng=self.prng),
            tunables=tunables,
        )


# -- annealed Langevin -----------------------------------------------------------------


@config_class
class AnnealedLangevinConfig(SamplerConfig):
    """Annealed Langevin dynamics.

    Attributes:
        num_steps: K, steps per chain (the schedule spans them).
        step_size: drift coefficient (before division by the temperature).
        noise_scale: noise std; ``None`` means ``sqrt(2 * step_size)``.
        initial_temperature: temperature of the first step.
        final_temperature: temperature of the last step.
        schedule: ``"geometric"`` or ``"linear"`` interpolation between them.
        grad_clip: elementwise clip of ``grad E`` (before tempering), or ``None``.
        clamp: ``(low, high)`` box for every sample, or ``None``.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float | None = attrs.field(default=None, validator=optional(non_negative))
    initial_temperature: float = attrs.field(default=10.0, validator=positive)
    final_temperature: float = attrs.field(default=1.0, validator=positive)
    schedule: str = attrs.field(default="geometric", validator=one_of(SCHEDULES))
    grad_clip: float | None = attrs.field(default=None, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


def temperature_schedule(
    step_index: int | Array, num_steps: int, initial: float, final: float, kind: str = "geometric"
) -> Array:
    """``T`` at ``step_index`` of a ``num_steps`` chain (``initial`` at 0, ``final`` at the end).

    ``step_index`` may be traced; ``num_steps`` is static.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if num_steps <= 1:
        return jnp.asarray(final, jnp.float32)
    frac = jnp.asarray(step_index, jnp.float32) / float(num_steps - 1)
    if kind == "geometric":
        temperature = initial * (final / initial) ** frac
    else:
        temperature = initial + (final - initial) * frac
    # Exact endpoint, so a chain always ends at the configured temperature.
    return jnp.where(frac >= 1.0, jnp.float32(final), temperature)


class AnnealedLangevinSampler(LangevinSampler):
    """Annealed Langevin bound to an :class:`AnnealedLangevinConfig` (a
    :class:`~ebmkit.types.Scheduled` sampler).

    Attributes:
        tunables: ``{"step_size", "noise_scale", "temperature"}`` defaults;
            ``temperature`` defaults to ``final_temperature`` and is replaced
            by :meth:`schedule` inside :func:`ebmkit.sampling.run_chain`.
    """

    def schedule(self, step_index: int | Array, num_steps: int) -> dict[str, Array]:
        """``{"temperature": T_k}`` for step ``step_index`` of a ``num_steps`` chain."""
        c = self.config
        return {
            "temperature": temperature_schedule(
                step_index, num_steps, c.initial_temperature, c.final_temperature, c.schedule
            )
        }


spec = ComponentSpec(
    kind="sampler",
    name="langevin",
    config=LangevinConfig,
    build=LangevinSampler,
    summary="Unadjusted Langevin dynamics (optional Du & Mordatch noise, grad clip, clamp)",
)

annealed_spec = ComponentSpec(
    kind="sampler",
    name="annealed_langevin",
    config=AnnealedLangevinConfig,
    build=AnnealedLangevinSampler,
    summary="Langevin dynamics on E/T with a geometric or linear temperature schedule",
)
