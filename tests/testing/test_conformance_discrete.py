"""The conformance suite's checks of samplers on binary data, fed good and broken samplers.

A sampler whose spec declares ``supports=("binary",)`` is checked on a 4-bit
Ising target (see :mod:`ebmkit.testing.conformance.discrete_sampler`). A
correct random-scan Metropolis sampler passes; each broken one fails the check
its bug breaks, so no binary check is vacuous. (The registered gwg and dmala
are checked by tests/testing/test_conformance.py's suite over every component.)
"""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp
import pytest

from ebmkit.config import SamplerConfig, config_class, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad
from ebmkit.testing import ConformanceError, check_spec
from ebmkit.testing.conformance import BINARY_INVARIANT
from ebmkit.types import SamplerInfo, SamplerState


@config_class
class BitFlipConfig(SamplerConfig):
    """Attributes: num_steps."""

    num_steps: int = attrs.field(default=5, validator=positive_int)


class BitFlipSampler:
    """Random-scan Metropolis on bits (flip one uniform bit, accept with
    ``min(1, exp(−ΔE))``), with switchable bugs."""

    def __init__(self, *, always_accept=False, frozen=False, relaxed=False, fixed_key=False):
        self.num_steps, self.tunables = 5, {}
        self.always_accept, self.frozen, self.relaxed, self.fixed_key = always_accept, frozen, relaxed, fixed_key

    def init(self, x, energy_fn):
        e, g = per_row_energy_and_grad(energy_fn, x)
        return SamplerState(x, e, g)

    def kernel(self, rng_key, state, energy_fn):
        key = jax.random.key(0) if self.fixed_key else rng_key
        site_key, accept_key = jax.random.split(key)
        x = state.position
        batch, dim = x.shape
        site = jax.random.randint(site_key, (batch,), 0, dim)
        proposal = x + jax.nn.one_hot(site, dim, dtype=x.dtype) * (1 - 2 * x)
        if self.relaxed:
            proposal = 0.9 * proposal + 0.05
        new = self.init(proposal, energy_fn)
        accept = jax.random.uniform(accept_key, (batch,)) < jnp.exp(jnp.minimum(state.energy - new.energy, 0.0))
        if self.always_accept:
            accept = jnp.ones((batch,), bool)
        if self.frozen:
            accept = jnp.zeros((batch,), bool)
        out = jax.tree.map(lambda a, b: jnp.where(accept.reshape((batch,) + (1,) * (a.ndim - 1)), a, b), new, state)
        info = SamplerInfo(accept.astype(jnp.float32), jnp.linalg.norm(out.grad, axis=-1), ~jnp.isfinite(out.energy))
        return out, info


def bit_spec(name: str, supports=("binary",), **bugs) -> ComponentSpec:
    return ComponentSpec(kind="sampler", name=name, config=BitFlipConfig,
                         build=lambda cfg, ctx: BitFlipSampler(**bugs), summary="toy", supports=supports)


def failures(spec: ComponentSpec) -> list[str]:
    with pytest.raises(ConformanceError) as info:
        check_spec(spec)
    return list(info.value.failures)


def test_a_correct_binary_sampler_passes_every_binary_check():
    report = check_spec(bit_spec("toy_bits_ok"))
    assert not report.skipped
    assert BINARY_INVARIANT in report.passed
    assert "chains on bits move toward low energy (sign of the gradient)" in report.passed
    # Only the binary checks ran: the Gaussian ones are for continuous samplers.
    assert not any("Gaussian" in name for name in report.passed)


def test_a_sampler_that_ignores_the_target_is_not_invariant():
    # Always flipping a uniform bit targets the uniform law, not the Ising one.
    found = failures(bit_spec("toy_bits_uniform", always_accept=True))
    assert any(f.startswith(BINARY_INVARIANT) and "total variation" in f for f in found)


def test_a_sampler_that_never_moves_fails_the_move_check():
    found = failures(bit_spec("toy_bits_frozen", frozen=True))
    # It passes invariance (a chain that never moves keeps any law) but not this:
    assert any(f.startswith("chains on bits move toward low energy") for f in found)
    assert not any(f.startswith(BINARY_INVARIANT) for f in found)


def test_a_sampler_that_leaves_the_hypercube_fails():
    found = failures(bit_spec("toy_bits_relaxed", relaxed=True))
    assert any("values other than 0 and 1" in f for f in found)


def test_a_binary_sampler_ignoring_its_key_fails_reproducibility():
    found = failures(bit_spec("toy_bits_fixed_key", fixed_key=True))
    assert any("another key gave the same chains" in f for f in found)


def test_a_categorical_only_sampler_is_skipped_with_a_reason():
    report = check_spec(bit_spec("toy_categorical", supports=("categorical",)))
    assert any("no behaviour checks for samplers of categorical data" in s for s in report.skipped)
