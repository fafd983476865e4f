"""``gibbs``: single-site Gibbs sampling on bits, for any energy.

One kernel call is one **sweep**: ``d`` site updates (``d`` = bits per event)
on every chain (row) of the batch at once, so ``num_steps`` counts sweeps. A
site update resamples bit ``i`` from its conditional given the others
(heat bath): with ``x'`` the chain with bit ``i`` flipped,

    P(take x') = σ(E(x) − E(x')),

which needs one energy evaluation of the whole batch at the flipped states.
``scan = "random"`` picks each update's site uniformly at random, per chain
(random-scan Gibbs, reversible); ``scan = "systematic"`` visits sites
``0 .. d−1`` in order. Both leave ``p(x) ∝ exp(−E(x))`` invariant exactly. A
flip whose energy is not finite is never taken.

Updating several sites at once is exact only where they are conditionally
independent, and a generic energy does not say so. An energy that does is
one implementing :class:`~ebmkit.types.BlockGibbs` (the ``rbm``): when the
chains run on it as a bound energy (:func:`ebmkit.sampling.energy_module`:
the trainer's chains and ``generate``) and ``block = true`` (the default), a
step is one **block** update instead: all hidden bits from ``p(h | x)``, then
all visible bits from ``p(x | h)``, exact and ``d`` times cheaper than a sweep.

Chain starts are rounded to bits (``x > 0.5``). ``info`` has the standard
fields (``acceptance_rate`` is 1: Gibbs moves are always accepted;
``grad_norm`` from one gradient at the end of the sweep, a diagnostic only)
and ``flip_rate``, the fraction of updates that changed their bit. No
tunables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import one_of, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    BoundSampler,
    energy_module,
    noise_key,
    per_chain_diagnostics,
    per_row_energy_and_grad,
)
from ebmkit.types import Array, BlockGibbs, EnergyFn, PRNGKey, SamplerState

__all__ = ["GibbsConfig", "GibbsInfo", "GibbsSampler", "SCANS", "build", "build_kernel", "init", "spec"]

SCANS = ("random", "systematic")


class GibbsInfo(NamedTuple):
    """Per-chain diagnostics of one sweep (all ``[B]``).

    Attributes:
        acceptance_rate: 1 (Gibbs updates are always accepted).
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        flip_rate: fraction of the sweep's site updates that flipped their bit
            (block updates: fraction of visible bits that changed).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    flip_rate: Array


@config_class
class GibbsConfig(SamplerConfig):
    """Single-site Gibbs sampling on binary data.

    Attributes:
        num_steps: K, sweeps per chain (per training update); a sweep is ``d``
            site updates.
        scan: ``"random"`` (uniform random site per update) or ``"systematic"``.
        block: on an energy that offers block Gibbs (``BlockGibbs``), a step
            is one block update of all hidden, then all visible bits.
    """

    num_steps: int = attrs.field(default=1, validator=positive_int)
    scan: str = attrs.field(default="random", validator=one_of(SCANS))
    block: bool = True


def init(position: Array, energy_fn: EnergyFn) -> SamplerState:
    """The state at ``position`` rounded to bits: energy and gradient."""
    position = (jnp.asarray(position) > 0.5).astype(jnp.float32)
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return SamplerState(position=position, energy=energy, grad=grad)


def _block_step(rng_key: PRNGKey, x: Array, module: BlockGibbs) -> Array:
    """All hidden bits from ``p(h | x)``, then all visible bits from ``p(x | h)``."""
    hidden_key, visible_key = jax.random.split(noise_key(rng_key, "philox4x32"))
    h = jax.random.bernoulli(hidden_key, jax.nn.sigmoid(module.hidden_logits(x))).astype(jnp.float32)
    return jax.random.bernoulli(visible_key, jax.nn.sigmoid(module.visible_logits(h))).astype(x.dtype).reshape(x.shape)


def build_kernel(scan: str = "random", block: bool = True) -> Callable[..., tuple[SamplerState, GibbsInfo]]:
    """A batched sweep (or block update): ``kernel(rng_key, state, energy_fn) -> (state, info)``."""
    if scan not in SCANS:
        raise ValueError(f"gibbs: scan must be one of {SCANS}, got {scan!r}")

    def kernel(rng_key: PRNGKey, state: SamplerState, energy_fn: EnergyFn) -> tuple[SamplerState, GibbsInfo]:
        x = state.position
        shape, batch = x.shape, x.shape[0]
        module = energy_module(energy_fn)
        if block and isinstance(module, BlockGibbs):
            new = _block_step(rng_key, x, module)
            energy, grad = per_row_energy_and_grad(energy_fn, new)
            grad_norm, non_finite = per_chain_diagnostics(new, energy, grad)
            flips = jnp.mean((new != x).reshape(batch, -1), axis=1).astype(jnp.float32)
            return SamplerState(position=new, energy=energy, grad=grad), GibbsInfo(
                acceptance_rate=jnp.ones((batch,), jnp.float32), grad_norm=grad_norm,
                non_finite=non_finite, flip_rate=flips,
            )
        d = math.prod(shape[1:])
        # Philox bits: cheaper than Threefry to draw, and to compile in a scan.
        site_key, coin_key = jax.random.split(noise_key(rng_key, "philox4x32"))
        if scan == "random":
            sites = jax.random.randint(site_key, (d, batch), 0, d)
        else:
            sites = jnp.broadcast_to(jnp.arange(d)[:, None], (d, batch))
        coins = jax.random.uniform(coin_key, (d, batch))

        def update(i, carry):
            flat, energy, flips = carry
            flip = jax.nn.one_hot(sites[i], d, dtype=flat.dtype)
            proposal = flat + flip * (1.0 - 2.0 * flat)
            e_new = energy_fn(proposal.reshape(shape))
            # The heat-bath probability of the flipped bit; NaN (a non-finite
            # energy difference) compares false and is never taken.
            take = coins[i] < jax.nn.sigmoid(energy - e_new)
            take &= jnp.isfinite(e_new)
            flat = jnp.where(take[:, None], proposal, flat)
            return flat, jnp.where(take, e_new, energy), flips + take.astype(jnp.float32)

        flat, _, flips = jax.lax.fori_loop(
            0, d, update, (x.reshape(batch, d), state.energy, jnp.zeros((batch,), jnp.float32))
        )
        x = flat.reshape(shape)
        energy, grad = per_row_energy_and_grad(energy_fn, x)
        grad_norm, non_finite = per_chain_diagnostics(x, energy, grad)
        return SamplerState(position=x, energy=energy, grad=grad), GibbsInfo(
            acceptance_rate=jnp.ones((batch,), jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
            flip_rate=flips / d,
        )

    return kernel


class GibbsSampler(BoundSampler):
    """Gibbs bound to a :class:`GibbsConfig`: ``tunables = {}``."""

    def __init__(self, config: GibbsConfig, ctx: Any = None):
        super().__init__(config, init=init, kernel=build_kernel(config.scan, config.block), tunables={})


def build(config: GibbsConfig, ctx: Any = None) -> GibbsSampler:
    """Single-site Gibbs bound to ``config``."""
    return GibbsSampler(config, ctx)


spec = ComponentSpec(
    kind="sampler",
    name="gibbs",
    config=GibbsConfig,
    build=build,
    summary="Single-site Gibbs sampling on bits (random or systematic scan; one sweep per step)",
    supports=("binary",),
)
