"""The Gaussian base measure: it confines any energy, and costs nothing inside the data."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ebmkit
from ebmkit.evaluate import grid_nll
from ebmkit.nn import BoxBaseMeasure, GaussianBaseMeasure


class Flat(nnx.Module):
    """An energy that never rises: exp(-E) is not integrable on its own."""

    def __call__(self, x):
        return jnp.zeros(x.shape[:1], jnp.float32)


def test_a_flat_energy_becomes_a_gaussian_of_the_chosen_width():
    measure = GaussianBaseMeasure(Flat(), mean=[1.0, -1.0], std=[0.5, 2.0], scale=3.0)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    expected = 0.5 * ((x[:, 0] - 1.0) ** 2 / 1.5**2 + (x[:, 1] + 1.0) ** 2 / 6.0**2)
    np.testing.assert_allclose(measure(jnp.asarray(x)), expected, rtol=1e-5)
    # Normalised over the plane it is exactly that Gaussian: log Z = log(2π σ1 σ2).
    result = grid_nll(lambda p: np.asarray(measure(jnp.asarray(p))), np.zeros((1, 2)), bounds=(-4.0, 4.0), n=256)
    assert result.decayed
    assert result.log_z == pytest.approx(math.log(2 * math.pi * 1.5 * 6.0), abs=2e-3)


def test_base_measure_from_the_data_and_in_the_config():
    model = ebmkit.assemble(base_measure={"kind": "gaussian", "scale": 2.0}, energy={"name": "mlp", "hidden_dims": [8]})
    net = model.energy_net
    assert isinstance(net, GaussianBaseMeasure) and net.scale == 2.0
    ds = ebmkit.build_dataset(model.config.dataset)
    x = ds.sample(np.random.default_rng(1), 10_000)
    np.testing.assert_allclose(net.mean, x.mean(axis=0), atol=0.1)
    np.testing.assert_allclose(1 / np.sqrt(np.asarray(net.inv_var)) / 2.0, x.std(axis=0), rtol=0.05)
    far = model.energy(jnp.array([[0.0, 0.0], [40.0, 0.0]]))
    assert float(far[1] - far[0]) > 10.0  # confined far away
    text = ebmkit.dump_config(model.config)
    assert "[base_measure]" in text and 'kind = "gaussian"' in text


def test_base_measure_needs_statistics_or_data():
    # Without data, the config's own data set gives the statistics when it fits the event shape...
    model = ebmkit.EBM(ebmkit.load_config(base_measure={"kind": "gaussian"}), event_shape=(2,))
    assert abs(model.energy_net.mean[0]) < 0.2
    # ... and nothing else does.
    with pytest.raises(ValueError, match="mean and std are unknown"):
        ebmkit.EBM(ebmkit.load_config(base_measure={"kind": "gaussian"}), event_shape=(3,))
    model = ebmkit.EBM(
        ebmkit.load_config(base_measure={"kind": "gaussian", "mean": [0.0, 0.0], "std": [1.0, 1.0]}), event_shape=(2,)
    )
    assert model.energy_net.mean == (0.0, 0.0)
    with pytest.raises(ebmkit.ConfigError, match="std"):
        ebmkit.load_config(base_measure={"kind": "gaussian", "std": [1.0, -1.0]})


def test_replay_fresh_starts_can_cover_more_than_the_data_box():
    model = ebmkit.assemble(buffer={"name": "replay", "capacity": 4096, "init_margin": 0.5})
    x = np.asarray(model.buffer.fresh(__import__("jax").random.key(0), 4096))
    assert x.min() < -7.0 and x.max() > 7.0 and np.all(np.abs(x) <= 8.0)  # [-4, 4] widened to [-8, 8]


def test_box_walls_are_zero_inside_and_have_a_closed_form_normaliser():
    measure = BoxBaseMeasure(Flat(), low=[-4.0, -2.0], high=[4.0, 2.0], width=[0.08, 0.05])
    inside = jnp.array([[0.0, 0.0], [3.99, -1.99], [-4.0, 2.0]])
    np.testing.assert_allclose(measure(inside), 0.0, atol=1e-6)
    # Quadratic to three widths deep, linear beyond with the same slope.
    outside = jnp.array([[4.2, 0.0], [0.0, -2.1], [4.5, 2.5]])
    expected = [0.2**2 / (2 * 0.08**2), 0.1**2 / (2 * 0.05**2), (4.5 + 3 * (0.5 / 0.08 - 3)) + (4.5 + 3 * (0.5 / 0.05 - 3))]
    np.testing.assert_allclose(measure(outside), expected, rtol=1e-4)
    # ∫ exp(−walls) factorises: Π (2hᵢ + 2 wᵢ (√(π/2) erf(3/√2) + e^{−4.5}/3)); the
    # evaluator's band integrates the walls finely.
    result = grid_nll(lambda p: np.asarray(measure(jnp.asarray(p))), np.zeros((1, 2)), bounds=([-4.0, -2.0], [4.0, 2.0]), n=256)
    per_width = 2 * (math.sqrt(math.pi / 2) * math.erf(3 / math.sqrt(2)) + math.exp(-4.5) / 3)
    sides = [8.0 + 0.08 * per_width, 4.0 + 0.05 * per_width]
    assert result.log_z == pytest.approx(math.log(sides[0] * sides[1]), abs=1e-5)
    assert result.tail_mass == pytest.approx(1.0 - 32.0 / (sides[0] * sides[1]), rel=1e-4)
    # A wall a tenth of the grid's cell wide (checkerboard's): a grid that
    # sampled it once per cell would put its mass (1e-3) at 1e-13.
    thin = BoxBaseMeasure(Flat(), low=-4.0, high=4.0, width=0.0016)
    result = grid_nll(lambda p: np.asarray(thin(jnp.asarray(p))), np.zeros((1, 2)), bounds=(-4.0, 4.0), n=512)
    side = 8.0 + 0.0016 * per_width
    assert result.log_z == pytest.approx(math.log(side * side), abs=1e-6)
    assert result.tail_mass == pytest.approx(1.0 - 64.0 / side**2, rel=1e-3)
    with pytest.raises(ValueError, match="low < high"):
        BoxBaseMeasure(Flat(), low=[1.0, 0.0], high=[0.0, 1.0], width=0.1)
    with pytest.raises(ValueError, match="width"):
        BoxBaseMeasure(Flat(), low=0.0, high=1.0, width=0.0)


def test_box_base_measure_from_the_data_bounds_and_in_the_config():
    model = ebmkit.assemble(base_measure={"kind": "box", "width": 0.02}, energy={"name": "mlp", "hidden_dims": [8]})
    net = model.energy_net
    assert isinstance(net, BoxBaseMeasure)
    assert net.centre == (0.0, 0.0) and net.half == (4.0, 4.0)  # the toy's bounds (-4, 4)
    np.testing.assert_allclose(net.inv_width_sq, 1.0 / (0.02 * 8.0) ** 2)
    e = model.energy(jnp.array([[0.0, 0.0], [4.0, 0.0], [6.0, 0.0]]))
    assert float(e[2] - e[1]) > 25.0  # a wall two units beyond the edge (12.5 widths: 33 nats)
    text = ebmkit.dump_config(model.config)
    assert 'kind = "box"' in text and "width = 0.02" in text
    again = ebmkit.load_config(__import__("tomllib").loads(text))
    assert again.base_measure == model.config.base_measure
    # An explicit box, one number for every coordinate.
    model = ebmkit.EBM(ebmkit.load_config(base_measure={"kind": "box", "low": -1.0, "high": [2.0, 3.0]}), event_shape=(2,))
    assert model.energy_net.centre == (0.5, 1.0) and model.energy_net.half == (1.5, 2.0)
    with pytest.raises(ebmkit.ConfigError, match="low"):
        ebmkit.load_config(base_measure={"kind": "box", "low": [1.0, 0.0], "high": [0.0, 1.0]})
    with pytest.raises(ValueError, match="box is unknown"):
        ebmkit.EBM(ebmkit.load_config(base_measure={"kind": "box"}), event_shape=(3,))
