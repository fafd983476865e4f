"""Hamiltonian Monte Carlo: leapfrog, diagonal mass matrix, adaptation.

One transition on every chain (row) of the batch, independently:

1. draw a momentum ``p ~ N(0, M)`` with a diagonal mass matrix ``M`` (the
   tunable ``inverse_mass_matrix`` holds ``M⁻¹``: a scalar, ``[*event]`` or
   ``[B, *event]``; Philox-4x32 bits for draws of 1,024 numbers or more, as
   Langevin's ``prng = "auto"``);
2. integrate ``num_integration_steps`` leapfrog steps of size ``step_size`` on
   ``H(x, p) = E(x) + pᵀ M⁻¹ p / 2`` (or, with ``trajectory_length``,
   ``⌈trajectory_length / step_size⌉`` steps: the integration *time* stays
   fixed while adaptation changes the step);
3. accept the end point with probability ``min(1, exp(H(x, p) − H(x', p')))``,
   per chain, else keep ``x``.

Exact for ``p(x) ∝ exp(−E(x))``: no discretisation bias. A proposal whose
position, energy or gradient is non-finite is rejected (its chain keeps a
finite state) and flagged in ``info.non_finite``; a transition whose energy
error ``H(x', p') − H(x, p)`` exceeds ``divergence_threshold`` (or is not
finite) is flagged in ``info.is_divergent``, as Stan does: the integrator left
the region it can follow, which biases the chain where it happens.

**Adaptation** (:class:`~ebmkit.types.Adaptive`, with ``warmup_steps > 0``):
Stan's windowed scheme inside the compiled chain. Dual averaging drives the
step size toward ``target_acceptance`` (0.8) throughout; in the slow windows
(25, 50, 100, ... steps after a 75-step fast window, before a 50-step
terminal one) the positions of all chains are pooled into a running variance,
which at each window's end becomes the inverse mass matrix (shrunk toward
10⁻³ as Stan does), and the step's adaptation restarts. At the end of the
phase the averaged step is kept and nothing adapts any more.
``adaptation = "per_chain"`` gives each chain its own step (the mass matrix
stays pooled: every chain targets the same density).

With ``clamp``, the chain start is projected into the box at ``init`` and
proposals that leave the box are rejected (not flagged), which samples the
target restricted to the box exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import (
    as_tuple,
    box,
    in_range,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
)
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    BoundSampler,
    noise_key,
    per_chain,
    per_chain_diagnostics,
    per_row_energy_and_grad,
)
from ebmkit.sampling.adaptation import (
    DualAveragingState,
    VarianceState,
    dual_averaging_init,
    dual_averaging_update,
    regularized_variance,
    variance_init,
    variance_update,
    window_schedule,
)
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = ["HMCConfig", "HMCState", "HMCInfo", "HMCAdaptation", "HMCSampler", "AdaptiveHMCSampler", "init", "build_kernel", "spec"]

#: What the next transition needs: position, energy ``[B]`` and ``dE/dx``.
HMCState = SamplerState
ADAPTATIONS = ("shared", "per_chain")


class HMCInfo(NamedTuple):
    """Per-chain diagnostics of one HMC transition (``[B]`` unless noted).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability
            ``min(1, exp(-ΔH))``; 0 for a non-finite proposal.
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the proposal or the new state has a non-finite position,
            energy or gradient.
        is_accepted: whether the proposal was taken.
        is_divergent: the energy error ``ΔH`` exceeded the divergence
            threshold or was not finite.
        num_grad_evals: leapfrog steps (gradient evaluations) of the transition.
        step_size: the step each chain ran with.
        position: the chains' new positions ``[B, *event]`` (what mass-matrix
            adaptation pools).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    is_divergent: Array
    num_grad_evals: Array
    step_size: Array
    position: Array


class HMCAdaptation(NamedTuple):
    """The adaptation state: the step's dual averaging (scalars, or ``[B]``
    per chain), the slow window's pooled variance, the inverse mass matrix
    ``[*event]`` and the number of adapting steps taken."""

    step: DualAveragingState
    variance: VarianceState
    inverse_mass_matrix: Array
    count: Array


@config_class
class HMCConfig(SamplerConfig):
    """Hamiltonian Monte Carlo.

    Attributes:
        num_steps: K, HMC transitions per chain (per training update).
        step_size: leapfrog step size (the starting one with adaptation).
        num_integration_steps: leapfrog steps per transition (structural).
        trajectory_length: integration time per transition; when set, each
            transition takes ``⌈trajectory_length / step_size⌉`` leapfrog steps
            (at most ``max_integration_steps``) instead of ``num_integration_steps``.
        max_integration_steps: cap on the leapfrog steps of one transition.
        warmup_steps: steps of the adaptation phase (0, the default: no adaptation).
        target_acceptance: the acceptance rate the step's adaptation aims for.
        adapt_mass_matrix: estimate the diagonal inverse mass matrix in the
            adaptation phase (else it stays the identity).
        max_step_size: the largest step adaptation may reach (``None``: no cap;
            set one when adapting on an untrained, nearly flat energy).
        adaptation: ``"shared"`` (one step for all chains) or ``"per_chain"``.
        divergence_threshold: energy error above which a transition is divergent.
        clamp: ``(low, high)``: keep every sample in this box (start projected,
            proposals outside rejected); ``None`` (default) does not.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.05, validator=positive)
    num_integration_steps: int = attrs.field(default=10, validator=positive_int)
    trajectory_length: float | None = attrs.field(default=None, validator=optional(positive))
    max_integration_steps: int = attrs.field(default=1000, validator=positive_int)
    warmup_steps: int = attrs.field(default=0, validator=non_negative_int)
    target_acceptance: float = attrs.field(default=0.8, validator=in_range(0, 1, low_open=True, high_open=True))
    adapt_mass_matrix: bool = True
    max_step_size: float | None = attrs.field(default=None, validator=optional(positive))
    adaptation: str = attrs.field(default="shared", validator=one_of(ADAPTATIONS))
    divergence_threshold: float = attrs.field(default=1000.0, validator=positive)
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


def init(position: Array, energy_fn: EnergyFn) -> HMCState:
    """The state at ``position`` (``[B, *event]``): one energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return HMCState(position=position, energy=energy, grad=grad)


def _per_chain_or_shared(value: Any, x: Array) -> Array:
    """A scalar or ``[B]`` value as ``[B, 1, ...]`` (per chain) or a scalar."""
    value = jnp.asarray(value, x.dtype)
    return value if value.ndim == 0 else per_chain(value, x)


def build_kernel(
    num_integration_steps: int = 10,
    clamp: tuple[float, float] | None = None,
    *,
    trajectory_length: float | None = None,
    max_integration_steps: int = 1000,
    divergence_threshold: float = 1000.0,
) -> Callable[..., tuple[HMCState, HMCInfo]]:
    """An HMC kernel with the structural options fixed.

    Args:
        num_integration_steps: leapfrog steps per transition.
        clamp: ``(low, high)``: reject proposals outside this box, or ``None``.
        trajectory_length: fixed integration time instead of a fixed step count.
        max_integration_steps: cap on the steps ``trajectory_length`` implies.
        divergence_threshold: energy error that flags a divergent transition.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size, inverse_mass_matrix=1.0)
        -> (state, info)``; ``step_size`` is a scalar or ``[B]``,
        ``inverse_mass_matrix`` a scalar, ``[*event]`` or ``[B, *event]``.
    """

    def kernel(
        rng_key: PRNGKey,
        state: HMCState,
        energy_fn: EnergyFn,
        step_size: float | Array,
        inverse_mass_matrix: float | Array = 1.0,
    ) -> tuple[HMCState, HMCInfo]:
        key_momentum, key_accept = jax.random.split(rng_key)
        x0 = state.position
        batch = x0.shape[0]
        axes = tuple(range(1, x0.ndim))
        eps = _per_chain_or_shared(step_size, x0)
        inv_mass = jnp.asarray(inverse_mass_matrix, x0.dtype)
        eps_b = jnp.broadcast_to(jnp.asarray(step_size, jnp.float32), (batch,))
        if trajectory_length is None:
            steps_b = jnp.full((batch,), num_integration_steps, jnp.int32)
        else:
            steps_b = jnp.clip(jnp.ceil(trajectory_length / eps_b), 1, max_integration_steps).astype(jnp.int32)
        # The momentum comes from the same fast, exact generator as Langevin's
        # noise (Philox-4x32 for large draws; see ``ebmkit.sampling.noise``).
        z = jax.random.normal(noise_key(key_momentum, "auto", x0.size), x0.shape, x0.dtype)
        p0 = z * jax.lax.rsqrt(inv_mass)

        def leapfrog(i: Array, carry: tuple) -> tuple:
            x, p, energy, grad = carry
            half = 0.5 * eps
            p1 = p - half * grad
            x1 = (x + eps * inv_mass * p1).astype(x.dtype)
            e1, g1 = per_row_energy_and_grad(energy_fn, x1)
            p1 = p1 - half * g1
            if trajectory_length is None:
                return x1, p1, e1, g1
            # Chains whose trajectory is complete stand still.
            live = i < steps_b
            m = per_chain(live, x)
            return jnp.where(m, x1, x), jnp.where(m, p1, p), jnp.where(live, e1, energy), jnp.where(m, g1, grad)

        n_loop = num_integration_steps if trajectory_length is None else jnp.max(steps_b)
        x1, p1, e1, g1 = jax.lax.fori_loop(0, n_loop, leapfrog, (x0, p0, state.energy, state.grad))
        h0 = state.energy + 0.5 * jnp.sum(jnp.square(p0) * inv_mass, axis=axes)
        h1 = e1 + 0.5 * jnp.sum(jnp.square(p1) * inv_mass, axis=axes)
        _, proposal_bad = per_chain_diagnostics(x1, e1, g1)
        log_ratio = h0 - h1
        divergent = ~(log_ratio > -divergence_threshold)  # also NaN
        valid = ~proposal_bad & ~jnp.isnan(log_ratio)
        if clamp is not None:
            valid &= jnp.all((x1 >= clamp[0]) & (x1 <= clamp[1]), axis=axes)
        # min(1, exp(log_ratio)) without overflow; an invalid proposal has probability 0.
        accept_prob = jnp.where(valid, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0).astype(jnp.float32)
        u = jax.random.uniform(key_accept, accept_prob.shape)
        accepted = u < accept_prob

        position = jnp.where(per_chain(accepted, x0), x1, x0)
        energy = jnp.where(accepted, e1, state.energy)
        grad = jnp.where(per_chain(accepted, x0), g1, state.grad)
        grad_norm, state_bad = per_chain_diagnostics(position, energy, grad)
        info = HMCInfo(
            acceptance_rate=accept_prob,
            grad_norm=grad_norm,
            non_finite=proposal_bad | state_bad,
            is_accepted=accepted,
            is_divergent=divergent,
            num_grad_evals=steps_b.astype(jnp.float32),
            step_size=eps_b,
            position=position,
        )
        return HMCState(position=position, energy=energy, grad=grad), info

    return kernel


class HMCSampler(BoundSampler):
    """HMC bound to an :class:`HMCConfig`: ``tunables = {"step_size",
    "inverse_mass_matrix"}``, K = ``num_steps``."""

    def __init__(self, config: HMCConfig, ctx: Any = None):
        super().__init__(
            config,
            init=init,
            kernel=build_kernel(
                config.num_integration_steps,
                clamp=config.clamp,
                trajectory_length=config.trajectory_length,
                max_integration_steps=config.max_integration_steps,
                divergence_threshold=config.divergence_threshold,
            ),
            tunables={"step_size": config.step_size, "inverse_mass_matrix": 1.0},
        )



class AdaptiveHMCSampler(HMCSampler):
    """HMC with ``warmup_steps > 0``: an :class:`~ebmkit.types.Adaptive`
    sampler (state :class:`HMCAdaptation`)."""

    def __init__(self, config: HMCConfig, ctx: Any = None):
        super().__init__(config, ctx)
        self.warmup_steps = int(config.warmup_steps)
        self._windows = window_schedule(self.warmup_steps) if config.adapt_mass_matrix else None

    def init_adaptation(self, position: Array) -> HMCAdaptation:
        shape = (position.shape[0],) if self.config.adaptation == "per_chain" else ()
        event = tuple(position.shape[1:])
        return HMCAdaptation(
            step=dual_averaging_init(self.config.step_size, shape),
            variance=variance_init(event),
            inverse_mass_matrix=jnp.ones(event, jnp.float32),
            count=jnp.zeros((), jnp.int32),
        )

    def adapted_tunables(self, adaptation: HMCAdaptation) -> dict[str, Array]:
        return {"step_size": jnp.exp(adaptation.step.log_step), "inverse_mass_matrix": adaptation.inverse_mass_matrix}

    def adapt(self, adaptation: HMCAdaptation, info: HMCInfo, step_index: Array) -> HMCAdaptation:
        c = self.config
        count = adaptation.count
        acceptance = info.acceptance_rate
        if c.adaptation == "shared":
            acceptance = jnp.mean(jnp.where(jnp.isfinite(acceptance), acceptance, 0.0))
        step = dual_averaging_update(adaptation.step, acceptance, c.target_acceptance, c.max_step_size)
        variance, inv_mass = adaptation.variance, adaptation.inverse_mass_matrix
        if self._windows is not None and len(self._windows):
            flags = jnp.asarray(self._windows)[jnp.minimum(count, len(self._windows) - 1)]
            in_slow, ends_slow = flags[0] == 1, flags[1] == 1
            grown = variance_update(variance, info.position)
            variance = jax.tree.map(lambda n, o: jnp.where(in_slow, n, o), grown, variance)
            batch = info.position.shape[0]
            new_inv = regularized_variance(variance, variance.count / batch)
            inv_mass = jnp.where(ends_slow, new_inv, inv_mass)
            # A new metric: forget the window's variance and restart the step's adaptation.
            fresh_var = variance_init(variance.mean.shape)
            variance = jax.tree.map(lambda f, v: jnp.where(ends_slow, f, v), fresh_var, variance)
            restarted = dual_averaging_init(jnp.exp(step.log_step), step.log_step.shape)
            step = jax.tree.map(lambda r, s: jnp.where(ends_slow, r, s), restarted, step)
        # At the end of the phase the chain keeps the averaged step; after it, nothing moves.
        done = count + 1 >= self.warmup_steps
        step = step._replace(log_step=jnp.where(done, step.log_step_avg, step.log_step))
        new = HMCAdaptation(step=step, variance=variance, inverse_mass_matrix=inv_mass, count=count + 1)
        active = count < self.warmup_steps
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, adaptation)


def build(config: HMCConfig, ctx: Any = None) -> HMCSampler:
    """HMC bound to ``config``: adaptive when ``warmup_steps > 0``."""
    return (AdaptiveHMCSampler if config.warmup_steps > 0 else HMCSampler)(config, ctx)


spec = ComponentSpec(
    kind="sampler",
    name="hmc",
    config=HMCConfig,
    build=build,
    summary="Hamiltonian Monte Carlo: leapfrog, diagonal mass matrix, Stan-style adaptation, divergences",
)
