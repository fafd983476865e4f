"""The No-U-Turn Sampler for ebmkit, backed by BlackJAX, with Stan's window adaptation.

One transition on every chain (row) of the batch, independently: BlackJAX's
iterative NUTS (multinomial sampling from a trajectory that doubles, up to
``max_num_doublings`` times, until it turns back on itself), with a diagonal
inverse mass matrix. Exact for ``p(x) ∝ exp(-E(x))``.

The transition is :func:`blackjax.mcmc.nuts.build_kernel`, vmapped over chains
(one key per chain) with ``logdensity = -E``. ``step_size`` is a scalar or
``[B]``; ``inverse_mass_matrix`` a scalar, ``[D]`` or ``[B, D]`` (``D``
coordinates per chain).

The sampler is :class:`ebmkit.types.Adaptive`: ``warmup_steps`` steps of Stan's
window adaptation tune the step size (dual averaging towards
``target_acceptance``) and the diagonal inverse mass matrix (the variance of
each coordinate over expanding windows), for every chain on its own, inside
the compiled chain. The pieces are BlackJAX's own:
:func:`blackjax.adaptation.window_adaptation.base` (``init``/``update``/
``final``) and :func:`~blackjax.adaptation.window_adaptation.build_schedule`,
built once for ``warmup_steps``. The adaptation state counts the adapting
steps it has taken; once it has taken ``warmup_steps`` (the schedule is
spent), further ``adapt`` calls (continued adaptation during training) leave
it frozen, and :meth:`NUTSSampler.adapted_tunables` gives what ``final``
gives: the averaged step size and the last window's inverse mass matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp
from blackjax.adaptation import window_adaptation
from blackjax.mcmc import nuts as blackjax_nuts

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import in_range, non_negative_int, positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler
from ebmkit.types import Array, BuildContext, EnergyFn, PRNGKey, SamplerState
from ebmkit_blackjax._common import (
    hamiltonian_transition,
    init,
)

__all__ = [
    "NUTSConfig",
    "NUTSState",
    "NUTSInfo",
    "NUTSAdaptation",
    "NUTSSampler",
    "init",
    "build_kernel",
    "spec",
]

#: What the next transition needs: position ``[B, *event]``, energy ``[B]``, ``dE/dx``.
NUTSState = SamplerState


class NUTSInfo(NamedTuple):
    """Per-chain diagnostics of one NUTS transition.

    Attributes:
        acceptance_rate: ``[B]`` mean Metropolis acceptance probability over
            the trajectory (what the step-size adaptation targets).
        grad_norm: ``[B]`` L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: ``[B]`` the new state has a non-finite position, energy or gradient.
        is_divergent: ``[B]`` the trajectory diverged (an energy error above 1000).
        num_integration_steps: ``[B]`` leapfrog steps taken, i.e. gradient
            evaluations spent on this transition (for ESS per gradient).
        num_grad_evals: ``[B]`` the same as float32, under the name
            ``run_chain`` sums into its summary.
        position: ``[B, *event]`` the new position, which the mass-matrix
            adaptation reads.
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_divergent: Array
    num_integration_steps: Array
    num_grad_evals: Array
    position: Array


class NUTSAdaptation(NamedTuple):
    """The window adaptation's state.

    Attributes:
        window: BlackJAX's ``WindowAdaptationState``, one per chain (leading axis ``B``).
        step: adapting steps taken so far (int32 scalar), saturating at
            ``warmup_steps``; indexes the schedule.
    """

    window: Any
    step: Array


@config_class
class NUTSConfig(SamplerConfig):
    """The No-U-Turn Sampler (BlackJAX) with Stan's window adaptation.

    Attributes:
        num_steps: K, NUTS transitions per chain (per training update).
        step_size: leapfrog step size without adaptation, and the initial
            step size of the adaptation.
        max_num_doublings: the trajectory doubles at most this many times
            (at most ``2**max_num_doublings`` leapfrog steps; structural).
        warmup_steps: adapting steps of the adaptation phase (Stan's schedule:
            a fast window, expanding slow windows, a final fast window; below
            20 steps only the step size adapts); 0 turns adaptation off.
        target_acceptance: the mean acceptance the step size is tuned towards.
    """

    num_steps: int = attrs.field(default=10, validator=positive_int)
    step_size: float = attrs.field(default=0.5, validator=positive)
    max_num_doublings: int = attrs.field(default=10, validator=positive_int)
    warmup_steps: int = attrs.field(default=500, validator=non_negative_int)
    target_acceptance: float = attrs.field(
        default=0.8, validator=in_range(0, 1, low_open=True, high_open=True)
    )


def build_kernel(max_num_doublings: int = 10) -> Callable[..., tuple[NUTSState, NUTSInfo]]:
    """A batched NUTS kernel with the maximum trajectory length fixed.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size, inverse_mass_matrix) -> (state, info)``.
    """
    one_chain = blackjax_nuts.build_kernel()

    def kernel(
        rng_key: PRNGKey,
        state: NUTSState,
        energy_fn: EnergyFn,
        step_size: float | Array,
        inverse_mass_matrix: float | Array = 1.0,
    ) -> tuple[NUTSState, NUTSInfo]:
        new_state, info, grad_norm, non_finite = hamiltonian_transition(
            one_chain, max_num_doublings, rng_key, state, energy_fn, step_size, inverse_mass_matrix
        )
        x, energy, grad = new_state.position, new_state.energy, new_state.grad
        # BlackJAX averages min(1, exp(-ΔH)) over the trajectory in float32,
        # which can land a rounding error above 1.
        acceptance_rate = jnp.clip(info.acceptance_rate.astype(jnp.float32), 0.0, 1.0)
        return NUTSState(position=x, energy=energy, grad=grad), NUTSInfo(
            acceptance_rate=acceptance_rate,
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_divergent=info.is_divergent,
            num_integration_steps=info.num_integration_steps,
            num_grad_evals=info.num_integration_steps.astype(jnp.float32),
            position=x,
        )

    return kernel


def _window_adaptation(target_acceptance: float):
    # ``base`` is BlackJAX's Stan window adaptation as separate init/update/final
    # functions, which is what adapting inside ebmkit's own scan needs. BlackJAX
    # 1.7 keeps it "at its released API for downstream code that calls it
    # directly" but warns that it is deprecated; the warning is not the user's
    # to act on, so it is silenced here (and only here).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"window_adaptation\.base")
        return window_adaptation.base(is_mass_matrix_diagonal=True, target_acceptance_rate=target_acceptance)


class NUTSSampler(BoundSampler):
    """NUTS bound to a :class:`NUTSConfig` (what ``spec.create`` returns):
    ``tunables = {"step_size", "inverse_mass_matrix"}``, K = ``num_steps``,
    and an :class:`ebmkit.types.Adaptive` window adaptation over
    ``warmup_steps`` steps."""

    def __init__(self, config: NUTSConfig, ctx: BuildContext | None = None):
        super().__init__(
            config,
            init=init,
            kernel=build_kernel(config.max_num_doublings),
            tunables={"step_size": config.step_size, "inverse_mass_matrix": 1.0},
        )
        self.warmup_steps = int(config.warmup_steps)
        self._adapt_init, self._adapt_update, self._adapt_final = _window_adaptation(
            config.target_acceptance
        )
        # Stage (0 fast, 1 slow) and end-of-slow-window flag of each step.
        self._schedule = (
            window_adaptation.build_schedule(self.warmup_steps).reshape(self.warmup_steps, 2)
            if self.warmup_steps > 0
            else None
        )

    def init_adaptation(self, position: Array) -> NUTSAdaptation:
        """A fresh adaptation for chains at ``position`` (``[B, *event]``):
        the config's step size and a unit inverse mass matrix per chain."""
        step_size = jnp.asarray(self.config.step_size, jnp.float32)
        window = jax.vmap(self._adapt_init, in_axes=(0, None))(position, step_size)
        return NUTSAdaptation(window=window, step=jnp.zeros((), jnp.int32))

    def adapted_tunables(self, adaptation: NUTSAdaptation) -> Mapping[str, Array]:
        """During the adaptation phase the current step size and inverse mass
        matrix; once it is over, what ``final`` gives (``[B]`` and ``[B, D]``)."""
        window = adaptation.window
        if self._schedule is None:
            return {"step_size": window.step_size, "inverse_mass_matrix": window.inverse_mass_matrix}
        final_step_size, final_imm = jax.vmap(self._adapt_final)(window)
        done = adaptation.step >= self.warmup_steps
        return {
            "step_size": jnp.where(done, final_step_size, window.step_size),
            "inverse_mass_matrix": jnp.where(done, final_imm, window.inverse_mass_matrix),
        }

    def adapt(self, adaptation: NUTSAdaptation, info: NUTSInfo, step_index: Array) -> NUTSAdaptation:
        """One step of the schedule on every chain; frozen once the schedule is spent.

        The schedule is indexed by the adaptation's own step count, which is
        ``step_index`` during a warm-up from a fresh state and keeps counting
        across calls (``run_chain`` restarts ``step_index`` at 0 on each).
        """
        if self._schedule is None:
            return adaptation
        schedule = self._schedule
        step = adaptation.step

        def update(window: Any) -> Any:
            stage = schedule[jnp.minimum(step, self.warmup_steps - 1)]
            return jax.vmap(self._adapt_update, in_axes=(0, None, 0, 0))(
                window, (stage[0], stage[1]), info.position, info.acceptance_rate
            )

        window = jax.lax.cond(step < self.warmup_steps, update, lambda w: w, adaptation.window)
        return NUTSAdaptation(window=window, step=jnp.minimum(step + 1, self.warmup_steps))


spec = ComponentSpec(
    kind="sampler",
    name="blackjax_nuts",
    config=NUTSConfig,
    build=NUTSSampler,
    summary="No-U-Turn Sampler (BlackJAX) with Stan's window adaptation per chain",
)
