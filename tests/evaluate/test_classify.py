"""Classifier evaluation (ebmkit.evaluate.classify): accuracy, ECE and AUROC
on inputs whose answers are computed by hand, the shifted image sets, the
reliability diagram, and a tiny JEM run whose summary reports them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ebmkit import viz
from ebmkit.evaluate.classify import (
    accuracy,
    auroc,
    calibration_bins,
    expected_calibration_error,
    negative_log_likelihood,
    paired_bootstrap_difference,
    pooled_bootstrap_difference,
    shifted_images,
)

# Four rows, two classes. Confidences 0.9, 0.6, 0.8, 0.55; predictions 0, 1, 0, 0.
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.55, 0.45]])
LABELS = np.array([0, 0, 0, 1])


def test_accuracy_counts_argmax_hits():
    assert accuracy(PROBS, LABELS) == 0.5
    assert accuracy(PROBS, np.array([0, 1, 0, 0])) == 1.0


def test_ece_by_hand_with_15_bins():
    # Bins (i/15, (i+1)/15]: 0.55 and 0.6 share bin 8 (0.533, 0.6]; 0.8 in bin 11
    # (0.733, 0.8]; 0.9 in bin 13 (0.867, 0.933].
    # bin 8: confidence 0.575, accuracy 0 (both wrong) -> gap 0.575, weight 2/4
    # bin 11: 0.8 vs 1 -> 0.2, weight 1/4; bin 13: 0.9 vs 1 -> 0.1, weight 1/4
    want = 0.5 * 0.575 + 0.25 * 0.2 + 0.25 * 0.1
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(want, abs=1e-12)
    bins = calibration_bins(PROBS, LABELS)
    assert bins["count"].tolist() == [0] * 8 + [2, 0, 0, 1, 0, 1, 0]
    assert bins["confidence"][8] == pytest.approx(0.575)
    # A confidence exactly on an edge (0.6 = 9/15) belongs to the bin it closes.
    assert np.isnan(bins["accuracy"][9])
    # One bin: ECE is |mean accuracy - mean confidence|.
    assert expected_calibration_error(PROBS, LABELS, num_bins=1) == pytest.approx(abs(0.5 - 0.7125))


def test_a_calibrated_classifier_has_small_ece_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20_000)
    right = rng.random(20_000) < conf  # correct exactly as often as confident
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(right, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.01
    sharp = np.stack([np.full(20_000, 0.99), np.full(20_000, 0.01)], axis=1)
    assert expected_calibration_error(sharp, labels) == pytest.approx(0.99 - right.mean(), abs=1e-9)


def test_paired_bootstrap_difference_of_the_ece():
    rng = np.random.default_rng(1)
    n = 400
    conf = rng.uniform(0.6, 1.0, n)
    labels = np.where(rng.random(n) < conf, 0, 1)  # correct as often as confident
    calibrated = np.stack([conf, 1 - conf], axis=1)
    sharp = np.stack([np.full(n, 0.999), np.full(n, 0.001)], axis=1)
    # The same classifier twice: every resample's difference is 0.
    same = paired_bootstrap_difference(calibrated, calibrated, labels, n_resamples=200)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    # Calibrated against over-confident: ECE about 0.2 lower, the interval excludes 0.
    out = paired_bootstrap_difference(calibrated, sharp, labels, n_resamples=500)
    assert out["a"] == pytest.approx(expected_calibration_error(calibrated, labels))
    assert out["b"] == pytest.approx(expected_calibration_error(sharp, labels))
    assert out["difference"] == pytest.approx(out["a"] - out["b"])
    assert out["low"] <= out["difference"] <= out["high"] < 0.0
    # A metric whose difference is the same on every resample: a zero-width interval there.
    shifted = np.stack([conf - 0.1, 1.1 - conf], axis=1)
    mean_conf = lambda p, y: float(p.max(axis=1).mean())  # noqa: E731
    const = paired_bootstrap_difference(calibrated, shifted, labels, metric=mean_conf, n_resamples=100)
    assert const["low"] == pytest.approx(0.1) and const["high"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shapes differ"):
        paired_bootstrap_difference(calibrated, np.ones((n, 3)) / 3, labels)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_difference(calibrated, sharp, labels, confidence=1.0)


def test_negative_log_likelihood_by_hand():
    # -log of the true label's probability: 0.9, 0.4, 0.8, 0.45.
    want = -np.mean(np.log([0.9, 0.4, 0.8, 0.45]))
    assert negative_log_likelihood(PROBS, LABELS) == pytest.approx(want, abs=1e-12)
    # A certain mistake is large but finite.
    sure_wrong = np.array([[1.0, 0.0]])
    assert 80.0 < negative_log_likelihood(sure_wrong, np.array([1])) < 100.0
    with pytest.raises(ValueError, match="negative_log_likelihood"):
        negative_log_likelihood(PROBS, LABELS[:3])


def test_pooled_bootstrap_difference_averages_repetitions():
    rng = np.random.default_rng(2)
    sets = []
    for n in (300, 500):
        conf = rng.uniform(0.6, 1.0, n)
        labels = np.where(rng.random(n) < conf, 0, 1)
        calibrated = np.stack([conf, 1 - conf], axis=1)
        sharp = np.stack([np.full(n, 0.999), np.full(n, 0.001)], axis=1)
        sets.append((calibrated, sharp, labels))
    out = pooled_bootstrap_difference(sets, n_resamples=300)
    per = [expected_calibration_error(a, y) - expected_calibration_error(b, y) for a, b, y in sets]
    assert out["per_set"] == pytest.approx(per)
    assert out["difference"] == pytest.approx(np.mean(per))
    assert out["low"] <= out["difference"] <= out["high"] < 0.0
    # Pooling narrows the interval against either set alone.
    alone = [paired_bootstrap_difference(a, b, y, n_resamples=300) for a, b, y in sets]
    assert out["high"] - out["low"] < min(r["high"] - r["low"] for r in alone)
    # One set: the same draws, hence the same figures, as the paired bootstrap.
    one = pooled_bootstrap_difference(sets[:1], n_resamples=300, seed=5)
    ref = paired_bootstrap_difference(*sets[0], n_resamples=300, seed=5)
    assert (one["low"], one["high"], one["difference"]) == (ref["low"], ref["high"], ref["difference"])
    # Any metric, e.g. -log p(y|x): the sharp classifier pays for its confident mistakes.
    nll = pooled_bootstrap_difference(sets, metric=negative_log_likelihood, n_resamples=100)
    assert nll["high"] < 0.0
    with pytest.raises(ValueError, match="set 1: shapes differ"):
        pooled_bootstrap_difference([sets[0], (sets[1][0], np.ones((500, 3)) / 3, sets[1][2])])
    with pytest.raises(ValueError, match="at least one"):
        pooled_bootstrap_difference([])


def test_auroc_by_hand_with_ties():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pairs (in, out): (1,0)>, (1,1) tie, (3,0)>, (3,1)> -> (3 + 0.5) / 4
    assert auroc([1.0, 3.0], [0.0, 1.0]) == pytest.approx(0.875)
    rng = np.random.default_rng(1)
    assert auroc(rng.normal(size=4000), rng.normal(size=4000)) == pytest.approx(0.5, abs=0.03)


def test_bad_inputs_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="probability distribution"):
        accuracy(np.array([[0.9, 0.3]]), np.array([0]))
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        accuracy(PROBS, np.array([0, 0, 0, 2]))
    with pytest.raises(ValueError, match="integers of shape"):
        expected_calibration_error(PROBS, np.array([0.0, 0, 0, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        auroc([], [1.0])


def test_shifted_images_are_what_they_say():
    x = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
    sets = shifted_images(x)
    assert set(sets) == {"noise", "blurred", "inverted", "rotated"}
    np.testing.assert_array_equal(sets["inverted"], -x)
    np.testing.assert_array_equal(sets["rotated"][:, :, 0, 0], x[:, 0, ::-1, 0])  # rot90: first row -> first column
    assert sets["blurred"].std() < x.std()
    assert sets["noise"].shape == x.shape and np.all(np.abs(sets["noise"]) <= 1)


def test_reliability_diagram_draws_and_says_what_is_missing(tmp_path):
    fig = viz.plot_reliability_diagram(calibration_bins(PROBS, LABELS), tmp_path / "r.png", ece=0.1)
    assert (tmp_path / "r.png").stat().st_size > 0 and "ECE 0.100" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="no 'count' entry"):
        viz.plot_reliability_diagram({"lower": [0], "upper": [1], "confidence": [1], "accuracy": [1]})


def test_tiny_jem_run_reports_classification_figures(tmp_path):
    from ebmkit.job import train_job

    summary = train_job(
        {"dataset": "8gaussians",
         "energy": {"name": "classifier", "network": {"name": "mlp", "hidden_dims": [32, 32]}},
         "loss": "jem", "sampler": {"name": "langevin", "num_steps": 5}, "buffer": {"name": "replay", "capacity": 128},
         "train": {"steps": 100, "batch_size": 64, "log_every": 50, "checkpoint_every": 100}},
        out=tmp_path / "run", plots=True,
    )
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("accuracy", "ece", "bayes_accuracy", "test_nll_y"):
        assert key in on_disk
    assert on_disk["accuracy"] > 0.9  # the eight centres are nearly separable (Bayes 0.998)
    assert 0.99 < summary["bayes_accuracy"] <= 1.0
    assert {"reliability.png", "class_densities.png"} <= set(summary["plots"])
    assert (tmp_path / "run" / "reliability.png").stat().st_size > 0

    # ebmkit sample --label K: class-conditional chains from the run.
    from click.testing import CliRunner

    from ebmkit.cli import cli

    out = tmp_path / "two.npz"
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "run"), "-n", "64", "--steps", "300", "--label", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as npz:
        samples = npz["samples"]
    assert samples.shape == (64, 2) and np.all(np.isfinite(samples))
    bad = CliRunner().invoke(cli, ["sample", str(tmp_path / "run"), "-n", "4", "--label", "8", "--out", str(out)])
    assert bad.exit_code != 0 and "label 8 is out of range" in bad.output


def test_conditional_sample_scores_of_a_digits_model():
    import jax  # noqa: F401 - jax first, as the model needs it

    from ebmkit.components import build_dataset, data_context
    from ebmkit.config import load_config
    from ebmkit.evaluate.classify import conditional_sample_scores
    from ebmkit.model import EBM

    cfg = load_config({
        "dataset": "digits", "loss": "jem", "sampler": {"name": "langevin", "num_steps": 2},
        "energy": {"name": "classifier", "network": {"name": "cnn", "hidden_dims": [8], "use_residual": False}},
    })
    dataset = build_dataset(cfg.dataset)
    scores = conditional_sample_scores(EBM(cfg, data=data_context(dataset)), dataset, per_class=3, n_steps=2)
    assert 0.0 <= scores["cond_agreement"] <= 1.0
    assert len(scores["cond_h_y_per_class"]) == 10
    assert all(0.0 <= h <= np.log(10) + 1e-9 for h in scores["cond_h_y_per_class"])
    assert 0.0 <= scores["h_y"] <= np.log(10) + 1e-9 and np.isfinite(scores["fd"]) and scores["fd"] > 0
