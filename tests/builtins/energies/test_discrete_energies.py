"""Energies on bits: ``rbm`` (free energy, conditionals), ``ising``, ``mlp`` on binary input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ebmkit.registry import get_spec
from ebmkit.sampling import per_row_energy_and_grad
from ebmkit.types import BlockGibbs, BuildContext, Support


def _build(name, event_shape, **fields):
    spec = get_spec("energy", name)
    ctx = BuildContext(event_shape=event_shape, support=Support.parse("binary"), rngs=nnx.Rngs(0))
    return spec.create(spec.config(**fields), ctx)


def _bits(n, shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (n, *shape)), jnp.float32)


def test_rbm_free_energy_sums_out_the_hidden_layer():
    rbm = _build("rbm", (2, 3), hidden=4, init_scale=1.0)
    rbm.visible_bias[...] = jnp.linspace(-1, 1, 6)
    rbm.hidden_bias[...] = jnp.array([0.5, -0.3, 1.0, 0.0])
    assert isinstance(rbm, BlockGibbs) and rbm.num_hidden == 4
    x = _bits(5, (2, 3))
    w, b, c = (np.asarray(v[...], np.float64) for v in (rbm.weights, rbm.visible_bias, rbm.hidden_bias))
    flat = np.asarray(x, np.float64).reshape(5, -1)
    hs = np.array(list(itertools.product((0.0, 1.0), repeat=4)))
    joint = flat @ b[:, None] + (hs @ c)[None, :] + flat @ w @ hs.T  # -E(x, h), [5, 16]
    want = -np.log(np.exp(joint).sum(axis=1))
    np.testing.assert_allclose(rbm(x), want, rtol=1e-5)
    np.testing.assert_allclose(rbm.hidden_logits(x), flat @ w + c, rtol=1e-5, atol=1e-6)
    h = jnp.asarray(hs[:3], jnp.float32)
    assert rbm.visible_logits(h).shape == (3, 2, 3)
    np.testing.assert_allclose(rbm.visible_logits(h).reshape(3, -1), hs[:3] @ w.T + b, rtol=1e-5, atol=1e-6)


def test_rbm_conditional_draws_follow_their_probabilities():
    rbm = _build("rbm", (6,), hidden=3, init_scale=1.0)
    x = jnp.tile(_bits(1, (6,)), (20_000, 1))
    h = rbm.sample_hidden(jax.random.key(0), x)
    p = jax.nn.sigmoid(rbm.hidden_logits(x[:1]))[0]
    assert set(np.unique(h)) <= {0.0, 1.0}
    np.testing.assert_allclose(h.mean(axis=0), p, atol=4 * 0.5 / np.sqrt(20_000))
    v = rbm.sample_visible(jax.random.key(1), h[:10])
    assert v.shape == (10, 6) and set(np.unique(v)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        rbm.visible_logits(jnp.zeros((2, 4)))


def test_ising_energy_is_the_quadratic_form_of_its_couplings():
    for structure, shape in (("lattice", (4, 4, 1)), ("lattice", (3, 3)), ("full", (7,))):
        model = _build("ising", shape, structure=structure, init_scale=1.0)
        model.field[...] = jnp.linspace(-0.5, 0.5, int(np.prod(shape)))
        x = _bits(6, shape)
        s = 2.0 * np.asarray(x, np.float64).reshape(6, -1) - 1.0
        j = model.couplings()
        assert np.array_equal(j, j.T) and np.all(np.diag(j) == 0)
        want = -0.5 * np.einsum("bi,ij,bj->b", s, j, s) - s @ np.asarray(model.field[...])
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5)
        if structure == "lattice":
            assert np.all((j != 0).sum(axis=1) == 4)


def test_ising_lattice_needs_a_square_event():
    with pytest.raises(ValueError, match="structure = 'full'"):
        _build("ising", (12,))


def test_mlp_takes_binary_input():
    mlp = _build("mlp", (8, 8, 1), hidden_dims=[16])
    x = _bits(4, (8, 8, 1))
    e, g = per_row_energy_and_grad(mlp, x)
    assert e.shape == (4,) and g.shape == x.shape
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(g))
