"""Training batches drawn with JAX inside the compiled step follow the data set's own distribution."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ebmkit.data import ArrayDataset, AugmentConfig, augment
from ebmkit.registry import get_spec

TOYS = ("8gaussians", "2spirals", "checkerboard", "rings", "moons", "pinwheel")
N = 20_000


def build(name, **fields):
    spec = get_spec("dataset", name)
    return spec.create(spec.config(**fields))


@pytest.mark.parametrize("name", TOYS)
def test_toy_device_draws_follow_the_host_distribution(name):
    ds = build(name)
    sampler = ds.device_sampler(labelled=True)
    x_dev, y_dev = jax.jit(lambda k: sampler.draw(sampler.arrays, k, N))(jax.random.key(0))
    x_dev, y_dev = np.asarray(x_dev), np.asarray(y_dev)
    x_host, y_host = ds.sample_labelled(np.random.default_rng(0), N)
    assert x_dev.shape == (N, 2) and x_dev.dtype == np.float32 and y_dev.dtype == np.int32
    # Moments: within 5 standard errors of the host draws' (two independent samples).
    se = np.sqrt(2.0 / N) * x_host.std(axis=0)
    assert np.all(np.abs(x_dev.mean(axis=0) - x_host.mean(axis=0)) < 5 * se)
    np.testing.assert_allclose(x_dev.std(axis=0), x_host.std(axis=0), rtol=0.04)
    # Labels: the parts are equally likely, and each label sits on its own part.
    k = ds.num_classes
    np.testing.assert_allclose(np.bincount(y_dev, minlength=k) / N, 1.0 / k, atol=5 * np.sqrt(1.0 / (k * N)))
    for label in range(k):
        dev, host = x_dev[y_dev == label], x_host[y_host == label]
        assert np.linalg.norm(dev.mean(axis=0) - host.mean(axis=0)) < 0.1
    if ds.has_log_prob:  # the exact log-likelihood of both samples agrees
        lp_dev, lp_host = ds.log_prob(x_dev), ds.log_prob(x_host)
        assert np.all(np.isfinite(lp_dev))
        assert abs(lp_dev.mean() - lp_host.mean()) < 5 * np.sqrt(2.0 / N) * lp_host.std()
    if ds.has_class_log_prob:  # every device label is the part its point came from (Bayes-consistent)
        agree = np.mean(np.argmax(ds.class_log_prob(x_dev), axis=-1) == y_dev)
        assert agree > ds.bayes_accuracy(5_000) - 0.02


def test_toy_noise_std_is_added_on_the_device():
    clean, noisy = build("8gaussians"), build("8gaussians", noise_std=0.5)
    draw = lambda ds: np.asarray(ds.device_sampler().draw(None, jax.random.key(1), N))  # noqa: E731
    extra = draw(noisy).var(axis=0) - draw(clean).var(axis=0)
    np.testing.assert_allclose(extra, 0.25, atol=0.08)


def _images(n=50, h=6, w=5):
    rng = np.random.default_rng(0)
    return rng.random((n, h, w, 1)).astype(np.float32), rng.integers(0, 3, size=n)


def test_array_device_draws_are_rows_of_the_training_split_with_their_labels():
    train, labels = _images()
    ds = ArrayDataset("t", train, train[:5], modality="image", labels=(labels, labels[:5]))
    sampler = ds.device_sampler(labelled=True)
    x, y = jax.jit(lambda a, k: sampler.draw(a, k, 4_000))(jax.device_put(sampler.arrays), jax.random.key(2))
    x, y = np.asarray(x), np.asarray(y)
    flat = train.reshape(len(train), -1)
    rows = np.array([np.flatnonzero(np.all(flat == xi.ravel(), axis=1))[0] for xi in x])
    np.testing.assert_array_equal(y, labels[rows])
    counts = np.bincount(rows, minlength=len(train))
    assert counts.min() > 0 and counts.max() < 4_000 / len(train) * 1.6  # uniform with replacement
    assert ds.device_sampler(labelled=False).arrays.keys() == {"x"}
    assert ArrayDataset("u", train, train[:5]).device_sampler(labelled=True) is None  # no labels to draw


def test_augmentation_on_the_device_matches_the_host_version():
    train, _ = _images(n=1)
    cfg = AugmentConfig(hflip=True, crop_padding=1, noise_std=0.0)
    ds = ArrayDataset("t", train, train, modality="image", augment_config=cfg)
    sampler = ds.device_sampler()
    x = np.asarray(jax.jit(lambda a, k: sampler.draw(a, k, 3_000))(sampler.arrays, jax.random.key(3)))
    host = augment(np.repeat(train, 3_000, axis=0), cfg, np.random.default_rng(0), image=True)
    # The same set of outcomes (2 flips x 9 crop offsets), each about as often.
    def outcomes(batch):
        keys, counts = np.unique(batch.reshape(len(batch), -1).round(6), axis=0, return_counts=True)
        return {k.tobytes(): c for k, c in zip(keys, counts, strict=True)}

    dev, ref = outcomes(x), outcomes(host)
    assert dev.keys() == ref.keys() and len(dev) > 9
    for key in ref:
        assert abs(dev[key] - ref[key]) < 5 * np.sqrt(ref[key]) + 5
    noisy = ArrayDataset("t", train, train, modality="image", augment_config=AugmentConfig(noise_std=0.1))
    draws = np.asarray(noisy.device_sampler().draw(noisy.device_sampler().arrays, jax.random.key(4), 2_000))
    np.testing.assert_allclose((draws - train).std(), 0.1, rtol=0.05)
