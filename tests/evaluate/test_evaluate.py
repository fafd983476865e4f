"""Evaluation metrics checked against targets with known answers.

Grid NLL and AIS against analytic Gaussian (mixture) normalisers, MMD against
the naive O(n²) estimator, and the image metrics against deliberate
degradations of held-out digits (blur, noise, mode collapse, copies).
"""

from __future__ import annotations

import json
import math
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmkit import registry
from ebmkit.evaluate import (
    ClassifierWeightsError,
    ais_log_z,
    annealing_schedule,
    classifier_features,
    evaluate_dataset,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_blur,
    grid_nll,
    label_entropy,
    load_classifier,
    median_bandwidth,
    mmd,
    nearest_neighbour_distance,
    reverse_ais_log_z,
)
from ebmkit.evaluate.fid import CLASSIFIER_FILES, FORMAT_VERSION

# -- a 2-D Gaussian mixture with an exact energy E = −log p ---------------------------

MEANS = np.array([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
STDS = np.array([0.3, 0.6, 1.0])
WEIGHTS = np.array([0.3, 0.3, 0.4])


def gmm_log_prob(x):
    """``log p(x)`` of the mixture, in JAX (float32 under jit) or NumPy (float64)."""
    xp = jnp if isinstance(x, jax.Array) else np
    sq = xp.sum((x[:, None, :] - MEANS[None]) ** 2, axis=-1)
    comp = -0.5 * sq / STDS**2 - 2 * np.log(STDS) - np.log(2 * np.pi) + np.log(WEIGHTS)
    m = xp.max(comp, axis=1, keepdims=True)
    return m[:, 0] + xp.log(xp.sum(xp.exp(comp - m), axis=1))


def gmm_energy(x):
    return -gmm_log_prob(jnp.asarray(x, jnp.float32))


def gmm_samples(n, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.choice(3, size=n, p=WEIGHTS)
    return MEANS[k] + STDS[k, None] * rng.normal(size=(n, 2))


# -- grid NLL -----------------------------------------------------------------------------


def test_grid_nll_matches_the_analytic_mixture_nll():
    x = gmm_samples(20_000)
    analytic = float(np.mean(-gmm_log_prob(x)))
    result = grid_nll(gmm_energy, x, bounds=(-8.0, 8.0), n=512)
    assert abs(result.nll - analytic) < 0.01
    assert abs(result.log_z) < 1e-3  # E = −log p exactly, so Z = 1
    assert result.edge_mass < 1e-6
    assert result.grid_error < 1e-3
    assert result.outside_fraction == float(np.mean(np.any(np.abs(x) > 8.0, axis=1)))


def test_a_box_that_cuts_the_mass_costs_the_box_figures_not_the_full_plane_ones():
    x = gmm_samples(20_000)
    analytic = float(np.mean(-gmm_log_prob(x)))
    result = grid_nll(gmm_energy, x, bounds=(-1.5, 1.5), n=128)
    assert result.edge_mass > 0.05
    assert result.outside_fraction == pytest.approx(np.mean(np.any(np.abs(x) > 1.5, axis=1)))
    assert result.outside_fraction > 0.3  # points outside are counted, and still scored
    # Normalised over the box alone the NLL is optimistic; over the plane it is right.
    assert result.log_z_box < -0.5 and result.nll_box < analytic - 0.5
    assert result.tail_mass > 0.8 and result.nll == pytest.approx(analytic, abs=5e-3)


def _wide_mixture_log_prob(x, w=0.9, narrow=0.3, wide=20.0):
    """``log p`` of ``w N(0, narrow² I) + (1 − w) N(0, wide² I)`` in float64."""
    x = np.asarray(x, np.float64)
    sq = np.sum(x**2, axis=-1)
    comps = np.stack([
        np.log(w) - 0.5 * sq / narrow**2 - np.log(2 * np.pi * narrow**2),
        np.log(1 - w) - 0.5 * sq / wide**2 - np.log(2 * np.pi * wide**2),
    ])
    m = comps.max(axis=0)
    return m + np.log(np.exp(comps - m).sum(axis=0))


def test_full_plane_nll_and_tail_mass_match_the_closed_form():
    """A narrow Gaussian inside the box and a wide one reaching far beyond it:
    the normaliser is 1, and the mass outside [-4, 4]² is known exactly."""
    w, narrow, wide, edge = 0.9, 0.3, 20.0, 4.0
    rng = np.random.default_rng(0)
    n = 20_000
    wide_rows = rng.random(n) > w
    x = np.where(wide_rows[:, None], wide * rng.normal(size=(n, 2)), narrow * rng.normal(size=(n, 2)))
    x = x[np.all(np.abs(x) < edge, axis=1)]  # held-out points inside the box, as a data set's are

    def energy(pts):
        return -_wide_mixture_log_prob(pts, w, narrow, wide)

    def outside(std):
        return 1.0 - math.erf(edge / (std * math.sqrt(2))) ** 2

    expected_tail = w * outside(narrow) + (1 - w) * outside(wide)
    result = grid_nll(energy, x, bounds=(-edge, edge), n=256)
    assert result.tail_mass == pytest.approx(expected_tail, rel=2e-3)  # 0.0958...
    assert abs(result.log_z) < 2e-3  # the whole plane's mass is 1
    analytic = float(np.mean(-_wide_mixture_log_prob(x, w, narrow, wide)))
    assert result.nll == pytest.approx(analytic, abs=2e-3)
    # The box-only NLL is optimistic by -log(1 - tail_mass).
    assert result.nll_box == pytest.approx(analytic + math.log(1 - expected_tail), abs=2e-3)
    assert result.decayed


def test_a_density_that_never_decays_is_flagged():
    """A plateau: exp(-E) is constant far out, so the plane's mass is not finite."""

    def plateau(pts):
        pts = np.asarray(pts, np.float64)
        return np.minimum(0.5 * np.sum(pts**2, axis=-1), 5.0)

    result = grid_nll(plateau, np.zeros((4, 2)), bounds=(-4.0, 4.0), n=64)
    assert not result.decayed and result.tail_mass > 0.99


def test_evaluate_dataset_reports_tail_mass_and_box_figures():
    from ebmkit.evaluate import TAIL_MASS_WARNING, tail_warning

    ds = registry.get_spec("dataset", "8gaussians").create(registry.get_spec("dataset", "8gaussians").config())
    out = evaluate_dataset(lambda x: -ds.log_prob(x), ds, n_test=5_000, grid=128)
    # The true density puts 0.02 % of its mass outside [-4, 4]^2 (3.3 std from
    # the outer modes); the box-only NLL is optimistic by exactly -log(1 - tail).
    assert 1e-4 < out["tail_mass"] < TAIL_MASS_WARNING and out["decayed"] == 1.0
    assert out["kl_gap"] - out["kl_gap_box"] == pytest.approx(-math.log(1 - out["tail_mass"]), abs=1e-6)
    assert tail_warning(out["tail_mass"], True) is None
    assert "2.0%" in tail_warning(0.02, True) and TAIL_MASS_WARNING == 1e-3
    assert "lower bound" in tail_warning(0.5, False)


def test_grid_nll_rejects_points_that_are_not_2d():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        grid_nll(gmm_energy, np.zeros((5, 3)))


def test_evaluate_dataset_gives_a_near_zero_kl_gap_for_the_true_density():
    spec = registry.get_spec("dataset", "8gaussians")
    ds = spec.build(spec.config())
    out = evaluate_dataset(lambda x: -ds.log_prob(x), ds, n_test=20_000, grid=256)
    assert abs(out["kl_gap"]) < 0.03
    assert out["edge_mass"] < 1e-3 and out["outside_fraction"] < 1e-3


# -- AIS ----------------------------------------------------------------------------------

DIM = 50
PRECISION = np.logspace(-0.6, 0.6, DIM)  # stds from 0.5 to 2 around a unit base
GAUSS_LOG_Z = float(np.sum(0.5 * np.log(2 * np.pi / PRECISION)))


def gaussian_energy(x):
    return 0.5 * jnp.sum(jnp.asarray(PRECISION, jnp.float32) * x**2, axis=1)


def test_ais_sandwiches_the_log_z_of_a_50d_gaussian():
    exact = np.random.default_rng(1).normal(size=(128, DIM)) / np.sqrt(PRECISION)
    result = ais_log_z(
        jax.random.key(0), gaussian_energy, (DIM,), num_chains=128, num_temperatures=100,
        hmc_step_size=0.3, num_leapfrog=5, adapt_step_size=False, reverse_samples=exact,
    )
    slack = 0.05
    assert abs(result.log_z - GAUSS_LOG_Z) < 3 * result.stderr + slack
    assert 0 < result.stderr < 0.2
    assert result.acceptance_rate > 0.8
    assert result.effective_sample_size > 0.3 * 128
    assert result.num_non_finite == 0 and result.direction == "forward"
    assert result.log_weights.shape == (128,)
    rev = result.reverse
    assert rev is not None and rev.direction == "reverse"
    # A stochastic upper bound: above the truth up to its own noise.
    assert rev.log_z > GAUSS_LOG_Z - 3 * rev.stderr - slack
    assert abs(rev.log_z - GAUSS_LOG_Z) < 3 * rev.stderr + slack
    np.testing.assert_array_equal(rev.step_sizes, result.step_sizes)


def test_ais_agrees_with_the_grid_log_z_in_2d():
    shift = 3.0  # E = −log p + 3, so log Z = −3
    energy = lambda x: gmm_energy(x) + shift  # noqa: E731
    grid = grid_nll(energy, np.zeros((1, 2)), bounds=(-8.0, 8.0), n=256)
    # The default path: a pilot chooses per-temperature step sizes.
    result = ais_log_z(
        jax.random.key(3), energy, 2, num_chains=256, num_temperatures=200, base_std=3.0,
        hmc_step_size=0.5,
    )
    assert abs(grid.log_z + shift) < 1e-3
    assert abs(result.log_z - grid.log_z) < 3 * result.stderr + 0.05
    assert result.stderr < 0.1
    assert abs(result.acceptance_rate - 0.9) < 0.1
    assert result.step_sizes.shape == (201,) and np.all(result.step_sizes > 0)


def test_reverse_ais_runs_on_its_own_and_takes_a_step_size_schedule():
    x = gmm_samples(64, seed=4)
    betas = annealing_schedule(50, "linear")
    result = reverse_ais_log_z(
        jax.random.key(5), gmm_energy, x, schedule=betas, base_std=3.0,
        hmc_step_size=np.full(51, 0.3),
    )
    assert result.direction == "reverse"
    assert result.log_z > -3 * result.stderr - 0.1  # upper bound on log Z = 0
    assert result.log_z < 1.0


def test_ais_takes_a_model_energy():
    from flax import nnx

    from ebmkit import create_simple_ebm

    model = create_simple_ebm(2, rngs=nnx.Rngs(0), hidden_dims=(8,))
    result = ais_log_z(
        jax.random.key(0), model.energy, model.event_shape, num_chains=8, num_temperatures=10,
        adapt_step_size=False,
    )
    assert np.isfinite(result.log_z) and result.num_non_finite == 0


def test_annealing_schedules_run_from_zero_to_one():
    for kind in ("sigmoid", "linear"):
        betas = annealing_schedule(10, kind)
        assert betas.shape == (11,) and betas[0] == 0.0 and betas[-1] == 1.0
        assert np.all(np.diff(betas) > 0)
    sig = annealing_schedule(100)
    assert sig[1] < 0.01 and 1 - sig[-2] < 0.01  # dense near both ends
    with pytest.raises(ValueError, match="sigmoid"):
        annealing_schedule(10, "cosine")
    with pytest.raises(ValueError, match="positive integer"):
        annealing_schedule(0)


def test_ais_rejects_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="base_std"):
        ais_log_z(key, gmm_energy, 2, base_std=0.0)
    with pytest.raises(ValueError, match="num_temperatures \\+ 1"):
        ais_log_z(key, gmm_energy, 2, num_temperatures=10, hmc_step_size=np.ones(5))
    with pytest.raises(ValueError, match="increasing"):
        ais_log_z(key, gmm_energy, 2, schedule=[0.0, 0.7, 0.5, 1.0])


# -- MMD ----------------------------------------------------------------------------------


def naive_mmd2(x, y, bandwidths):
    def k(a, b):
        d2 = np.sum((a[:, None] - b[None]) ** 2, axis=-1)
        return np.mean([np.exp(-d2 / (2 * h**2)) for h in np.atleast_1d(bandwidths)], axis=0)

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * k(x, y).mean()
    )


def test_mmd_matches_the_naive_unbiased_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 3)), rng.normal(size=(257, 3)) + 0.3
    h = median_bandwidth(x, y)
    assert mmd(x, y) == pytest.approx(naive_mmd2(x, y, h), rel=1e-4, abs=1e-6)
    bws = [0.5, 1.0, 2.0]
    assert mmd(x, y, bandwidths=bws) == pytest.approx(naive_mmd2(x, y, bws), rel=1e-4, abs=1e-6)


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    shifted = rng.normal(size=(2000, 2)) + [0.5, 0.0]
    same, different = mmd(a, b), mmd(a, shifted)
    assert abs(same) < 0.002
    assert different > 0.02 > 10 * abs(same)


def test_mmd_handles_10k_by_10k_in_bounded_memory():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10_000, 2)).astype(np.float32)
    y = rng.normal(size=(10_000, 2)).astype(np.float32) + np.float32(0.2)
    assert 0.001 < mmd(x, y, bandwidths=1.0) < 0.05


def test_mmd_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="features per row"):
        mmd(np.zeros((4, 2)), np.zeros((4, 3)))


# -- image metrics ------------------------------------------------------------------------


def test_gaussian_blur_keeps_mass_and_smooths():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.allclose(y.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=0.1)
    assert np.abs(np.diff(y, axis=1)).mean() < 0.5 * np.abs(np.diff(x, axis=1)).mean()
    assert np.allclose(gaussian_blur(np.ones((1, 5, 5, 1)), 0.5), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, 0.0)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        gaussian_blur(x[0], 1.0)


@pytest.fixture(scope="module")
def mnist():
    spec = registry.get_spec("dataset", "mnist")
    ds = spec.build(spec.config())
    train_features = classifier_features(ds.train, "mnist")
    return ds, train_features


def test_fd_is_small_for_held_out_digits_and_grows_with_damage(mnist):
    ds, train_features = mnist
    test = ds.test
    rng = np.random.default_rng(0)

    def fd(images):
        return frechet_distance_from_features(classifier_features(images, "mnist"), train_features)

    held_out = fd(test)
    blur_half, blur_one = fd(gaussian_blur(test, 0.5)), fd(gaussian_blur(test, 1.0))
    noise = fd(rng.uniform(-1, 1, test.shape).astype(np.float32))
    # Measured: 5.2, 104, 952, 2238 (docs/evaluation.md); N = 500 against 4,500.
    assert held_out < 15
    assert blur_half > 5 * held_out
    assert blur_one > 4 * blur_half
    assert noise > 1.5 * blur_one and noise > 100 * held_out
    # The public entry point agrees with the feature-level one.
    assert frechet_distance(test, ds.train) == pytest.approx(held_out, rel=1e-6)


def test_label_entropy_exposes_mode_collapse(mnist):
    ds, _ = mnist
    _, y_test = ds.labels
    assert label_entropy(ds.test) > 0.98 * math.log(10)
    assert label_entropy(ds.test[y_test == 1]) < 0.3


def test_nearest_neighbour_distance_exposes_copies(mnist):
    ds, _ = mnist
    copies = ds.train[::50]
    assert nearest_neighbour_distance(copies, ds.train) == 0.0
    held_out = nearest_neighbour_distance(ds.test[:100], ds.train)
    assert 5.0 < held_out < 15.0  # measured 9.8 in [-1, 1] pixels
    assert nearest_neighbour_distance(ds.test[:100] + 0.01, ds.train[:200]) > 0


def test_the_digits_classifier_measures_8x8_images():
    spec = registry.get_spec("dataset", "digits")
    ds = spec.build(spec.config())
    held_out = frechet_distance(ds.test, ds.train, classifier="digits")
    blurred = frechet_distance(gaussian_blur(ds.test, 1.0), ds.train, classifier="digits")
    assert held_out < 10 < 10 * held_out < blurred  # measured 4.2 and 513
    with pytest.raises(ValueError, match=r"takes images \[N, 8, 8, 1\]"):
        frechet_distance(np.zeros((4, 28, 28, 1)), ds.train, classifier="digits")


def test_frechet_distance_of_gaussian_features_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5))
    assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    # Shift the mean by m and scale by s: FD = |m|² + Σ (σᵢ − s σᵢ)² exactly
    # for the sample covariance (commuting covariances).
    m, s = np.arange(5.0), 2.0
    b = a * s + m
    cov = np.cov(a, rowvar=False)
    expected = float(np.sum((m + a.mean(0) * (s - 1)) ** 2) + (s - 1) ** 2 * np.trace(cov))
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-9)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    c = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    s1, s2 = np.cov(a, rowvar=False), np.cov(c, rowvar=False)
    ref = float(
        np.sum((a.mean(0) - c.mean(0)) ** 2)
        + np.trace(s1 + s2 - 2 * np.real(scipy_linalg.sqrtm(s1 @ s2)))
    )
    assert frechet_distance_from_features(a, c) == pytest.approx(ref, rel=1e-6)


# -- the shipped weights ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLASSIFIER_FILES))
def test_shipped_weights_are_small_versioned_and_documented(name):
    clf = load_classifier(name)
    assert clf.path.name == CLASSIFIER_FILES[name]
    assert clf.path.stat().st_size < 1_000_000
    meta = clf.metadata
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["test_accuracy"] > 0.95
    for key in ("architecture", "training_data", "created", "weights_sha256", "num_train"):
        assert key in meta
    # The loaded weights are the trained ones: they reproduce the recorded accuracy
    # on the data set's default test split (up to a borderline image or two).
    spec = registry.get_spec("dataset", name)
    ds = spec.build(spec.config())
    _, y_test = ds.labels
    probs = clf.features_and_probabilities(ds.test)[1]
    assert len(ds.test) == meta["num_test"]
    assert abs(np.mean(probs.argmax(axis=1) == y_test) - meta["test_accuracy"]) <= 2.5 / len(y_test)


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(dst, **arrays)


def _set_version(arrays, version):
    meta = json.loads(str(arrays["metadata"]))
    meta["format_version"] = version
    arrays["metadata"] = np.asarray(json.dumps(meta))


def test_missing_or_corrupt_weights_fail_clearly_naming_the_file(tmp_path):
    src = load_classifier("digits").path
    images = np.zeros((2, 8, 8, 1), np.float32)

    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="nowhere.npz.*train_digit_classifier"):
        label_entropy(images, classifier=missing)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ClassifierWeightsError, match="garbage.npz: cannot read it as .npz"):
        label_entropy(images, classifier=garbage)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(ClassifierWeightsError, match="truncated.npz"):
        load_classifier(truncated)

    old = tmp_path / "old.npz"
    _rewrite(src, old, lambda a: _set_version(a, 0))
    with pytest.raises(ClassifierWeightsError, match="old.npz: format version 0.*reads version 1"):
        load_classifier(old)

    tampered = tmp_path / "tampered.npz"
    _rewrite(src, tampered, lambda a: a.__setitem__("head/bias", a["head/bias"] + 1.0))
    with pytest.raises(ClassifierWeightsError, match="tampered.npz: the weights do not match the digest"):
        load_classifier(tampered)

    no_meta = tmp_path / "no_meta.npz"
    _rewrite(src, no_meta, lambda a: a.pop("metadata"))
    with pytest.raises(ClassifierWeightsError, match="no 'metadata' entry"):
        load_classifier(no_meta)

    with pytest.raises(ValueError, match="unknown classifier 'cifar'"):
        load_classifier("cifar")
    assert zipfile.is_zipfile(src)


# -- the long-run check ------------------------------------------------------------------


def test_density_tv_is_at_the_floor_for_exact_draws_and_far_above_it_for_wrong_ones():
    from ebmkit.evaluate import density_tv

    def energy(pts):
        return 0.5 * np.sum(np.asarray(pts, np.float64) ** 2, axis=-1)

    rng = np.random.default_rng(3)
    exact = rng.normal(size=(5_000, 2))
    tv, floor = density_tv(exact, energy, (-4.0, 4.0), bins=16, sub=4)
    assert abs(tv - floor) < 0.03
    shifted = exact + 1.0
    tv_shifted, _ = density_tv(shifted, energy, (-4.0, 4.0), bins=16, sub=4)
    assert tv_shifted > floor + 0.3


def test_long_run_check_flags_chains_that_drift_away():
    import ebmkit
    from ebmkit.evaluate import long_run_check
    from ebmkit.evaluate.long_run import advice

    model = ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": [8]},
        sampler={"name": "langevin", "num_steps": 2, "step_size": 0.5},  # far too large: chains fly off
        buffer={"name": "replay", "capacity": 64}, train={"batch_size": 32},
    )
    model.train_step(np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32))
    data = ebmkit.build_dataset(model.config.dataset)
    report = long_run_check(model, data, multiples=(5,), num_chains=256)
    assert {r["start"] for r in report["runs"]} == {"noise", "buffer"}
    assert all(r["steps"] == 10 for r in report["runs"])
    assert not report["converges"] and "total variation" in report["verdict"]
    assert "base_measure" in advice()


def test_tail_check_tells_a_confined_energy_from_a_flat_one():
    from ebmkit.evaluate import tail_check

    class Images:
        event_shape = (8, 8, 1)

        def held_out(self, n):
            return np.random.default_rng(0).uniform(-1, 1, size=(n, 8, 8, 1)).astype(np.float32)

    def flat(x):
        return np.zeros(len(x))

    def gaussian(x):  # a base measure of width 0.3 per pixel
        return 0.5 * np.sum(np.asarray(x, np.float64).reshape(len(x), -1) ** 2 / 0.3**2, axis=1)

    assert not tail_check(flat, Images())["confined"] and tail_check(flat, Images())["shortfall"] > 100
    report = tail_check(gaussian, Images())
    assert report["confined"] and report["shortfall"] == 0.0
    assert all(report["rise"][r] > report["needed"][r] for r in report["rise"])
    out = evaluate_dataset(flat, Images())
    assert out == {"tails_confined": 0.0, "tail_shortfall": pytest.approx(tail_check(flat, Images())["shortfall"])}


def test_long_run_check_tells_unmixed_short_runs_from_divergence(monkeypatch):
    import ebmkit
    from ebmkit.evaluate import long_run, long_run_check

    model = ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": [8]}, sampler={"name": "langevin", "num_steps": 2},
        buffer={"name": "replay", "capacity": 64}, train={"batch_size": 32},
    )
    data = ebmkit.build_dataset(model.config.dataset)
    # Short runs far from the density, the longest at the floor: not mixed yet, not diverging.
    monkeypatch.setattr(long_run, "density_tv", lambda x, *a, **k: (0.5 if len(x) == 100 else 0.2, 0.2))
    monkeypatch.setattr(long_run, "_chain_program", lambda g, s, n: lambda p, r, k, x0: (x0[: 100 if n < 50 else None] * 0, None))
    report = long_run_check(model, data, steps=(10, 100), num_chains=256, starts=("noise",))
    assert report["converges"]
    assert report["verdict"].startswith("long-run samples match") and "not mixed yet" in report["verdict"]
    # The same figures on the longest run: it diverges.
    monkeypatch.setattr(long_run, "density_tv", lambda x, *a, **k: (0.5 if len(x) == 256 else 0.2, 0.2))
    report = long_run_check(model, data, steps=(10, 100), num_chains=256, starts=("noise",))
    assert not report["converges"] and "100 steps from noise" in report["verdict"]
