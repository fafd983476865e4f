"""The 2-D toys' labels: the part that generated each point, the same points
as the unlabelled draw, and the class-conditional densities where known."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ebmkit
from ebmkit.components import data_context

TOYS = {"8gaussians": 8, "2spirals": 2, "checkerboard": 8, "rings": 4, "moons": 2, "pinwheel": 5}


def _toy(name):
    spec = ebmkit.get_spec("dataset", name)
    return spec.create(spec.config(), None)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_labelled_draws_are_the_unlabelled_draws_with_balanced_labels(name):
    toy = _toy(name)
    assert toy.num_classes == TOYS[name] and data_context(toy).num_classes == TOYS[name]
    x, y = toy.sample_labelled(np.random.default_rng(5), 4000)
    np.testing.assert_array_equal(x, toy.sample(np.random.default_rng(5), 4000))
    assert y.dtype == np.int32
    counts = np.bincount(y, minlength=toy.num_classes)
    assert len(counts) == toy.num_classes
    np.testing.assert_allclose(counts / 4000, 1 / toy.num_classes, atol=0.04)
    hx, hy = toy.held_out_labelled(500)
    np.testing.assert_array_equal(hx, toy.held_out(500))


def test_labels_are_the_generating_parts():
    g = _toy("8gaussians")
    x, y = g.held_out_labelled(2000)
    assert np.all(np.linalg.norm(x - g.centers[y], axis=1) < 5 * g.std)  # P(r > 5 sigma) = exp(-12.5)
    r = _toy("rings")
    x, y = r.held_out_labelled(2000)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), np.asarray(r.RADII)[y], atol=5 * r.STD)
    m = _toy("moons")
    x, y = m.held_out_labelled(2000)
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean() + 1.0  # 0 is the upper half circle
    s = _toy("2spirals")
    x, y = s.held_out_labelled(2000)
    np.testing.assert_allclose(x[y == 0].mean(axis=0), -x[y == 1].mean(axis=0), atol=0.15)  # mirror images
    c = _toy("checkerboard")
    x, y = c.held_out_labelled(2000)
    for k in range(8):
        cells = np.unique(np.floor(x[y == k] / 2.0), axis=0)
        assert len(cells) == 1 and cells[0].sum() % 2 == 0  # one black square per label


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard", "rings", "moons"])
def test_class_densities_are_normalised_and_mix_to_the_density(name):
    toy = _toy(name)
    assert toy.has_class_log_prob
    g = np.linspace(-5, 5, 401)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    lp = toy.class_log_prob(grid)
    assert lp.shape == (len(grid), toy.num_classes)
    np.testing.assert_allclose(np.exp(lp).sum(axis=0) * (g[1] - g[0]) ** 2, 1.0, atol=0.02)
    x, y = toy.held_out_labelled(1000)
    lp = toy.class_log_prob(x)
    if toy.has_log_prob:
        mixed = np.logaddexp.reduce(lp - math.log(toy.num_classes), axis=1)
        np.testing.assert_allclose(mixed, toy.log_prob(x), rtol=1e-9, atol=1e-9)
    assert np.mean(np.argmax(lp, axis=1) == y) > 0.98


def test_bayes_accuracy_where_densities_are_known_and_a_clear_error_elsewhere():
    assert 0.995 < _toy("8gaussians").bayes_accuracy(20_000) < 1.0  # neighbours overlap slightly
    assert _toy("checkerboard").bayes_accuracy(5_000) == 1.0  # disjoint squares
    assert not _toy("pinwheel").has_class_log_prob
    with pytest.raises(NotImplementedError, match="class-conditional"):
        _toy("pinwheel").bayes_accuracy(10)
