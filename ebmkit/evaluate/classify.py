"""Evaluation of conditional energies as classifiers (JEM).

A conditional energy ``E(x, y)`` (the ``classifier`` energy) is a classifier,
``p(y | x) = softmax_y(-E(x, y))``, and a density, ``log p(x) = -E(x) - log Z``.
This module scores both sides:

* :func:`class_probabilities`: ``p(y | x)`` of a model, ``[N, K]``, and
  :func:`joint_scores`, the unnormalised ``-E(x, y)`` and ``-E(x)`` behind it;
* :func:`accuracy` and :func:`expected_calibration_error` (15 equal-width
  confidence bins, Guo et al. 2017) with :func:`calibration_bins` for the
  reliability diagram (:func:`ebmkit.viz.plot_reliability_diagram`);
* :func:`paired_bootstrap_difference`: a bootstrap interval of the
  difference of a metric (the ECE by default) between two classifiers
  scored on the same test set, resampling the test examples, and
  :func:`pooled_bootstrap_difference`, its mean over repeated experiments
  (one test set per split or seed);
* :func:`auroc`: the area under the ROC curve of a score separating
  in-distribution inputs from shifted ones, with :func:`shifted_images` that
  builds the shifted sets offline (Gaussian noise, blurred, inverted and
  rotated images);
* :func:`evaluate_classifier`: all of it for a model and a labelled data set,
  the figures ``ebmkit train`` adds to the summary of a labelled run;
* :func:`conditional_sample_scores`: fresh conditional chains per class
  scored by a shipped digit classifier (agreement with the label, H(y),
  Fréchet distance), for digit images.

Out-of-distribution detection uses the unnormalised ``log p(x) = -E(x)``: the
normaliser is the same for every input, so it does not change the ranking.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ECE_BINS",
    "CalibrationBins",
    "class_probabilities",
    "joint_scores",
    "accuracy",
    "calibration_bins",
    "expected_calibration_error",
    "negative_log_likelihood",
    "paired_bootstrap_difference",
    "pooled_bootstrap_difference",
    "auroc",
    "shifted_images",
    "evaluate_classifier",
    "conditional_sample_scores",
]

#: The standard number of equal-width confidence bins of the ECE.
ECE_BINS = 15


def _probabilities(probs: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{what}: probabilities must be [N, K] with K >= 2, got shape {list(p.shape)}")
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers of shape [{p.shape[0]}], got {y.dtype}{list(y.shape)}")
    if p.shape[0] == 0:
        raise ValueError(f"{what}: no samples")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{what}: every row must be a probability distribution (non-negative, summing to 1)")
    if np.any(y < 0) or np.any(y >= p.shape[1]):
        raise ValueError(f"{what}: labels must lie in 0..{p.shape[1] - 1}")
    return p, y


def accuracy(probs: Any, labels: Any) -> float:
    """The share of rows whose most probable class is the label."""
    p, y = _probabilities(probs, labels, "accuracy")
    return float(np.mean(np.argmax(p, axis=1) == y))


class CalibrationBins(dict):
    """Per-bin figures of a reliability diagram (a dict of arrays, one entry per bin).

    Keys: ``lower``, ``upper`` (the bin's confidence interval ``(lower, upper]``),
    ``count``, ``confidence`` (mean top-class probability in the bin, NaN when
    empty) and ``accuracy`` (share correct in the bin, NaN when empty).
    """


def calibration_bins(probs: Any, labels: Any, num_bins: int = ECE_BINS) -> CalibrationBins:
    """Group rows by their confidence (top-class probability) into ``num_bins``
    equal-width bins ``(i/M, (i+1)/M]`` and average confidence and accuracy in each."""
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"calibration_bins: num_bins must be a positive integer, got {num_bins!r}")
    p, y = _probabilities(probs, labels, "calibration_bins")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of exactly 0 cannot occur.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=num_bins) / count
        acc = np.bincount(index, weights=correct, minlength=num_bins) / count
    return CalibrationBins(lower=edges[:-1], upper=edges[1:], count=count, confidence=conf, accuracy=acc)


def expected_calibration_error(probs: Any, labels: Any, num_bins: int = ECE_BINS) -> float:
    """``ECE = sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)|`` over
    ``num_bins`` equal-width confidence bins (empty bins count 0)."""
    bins = calibration_bins(probs, labels, num_bins)
    count = bins["count"]
    used = count > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(count[used] * gaps) / np.sum(count))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean ``-log p(y | x)`` of the true labels (probabilities floored at
    the smallest positive float32, so a confident mistake counts, finitely)."""
    p, y = _probabilities(probs, labels, "negative_log_likelihood")
    picked = np.maximum(p[np.arange(len(y)), y], np.finfo(np.float32).tiny)
    return float(-np.mean(np.log(picked)))


def paired_bootstrap_difference(
    probs_a: Any,
    probs_b: Any,
    labels: Any,
    *,
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """``metric(a) - metric(b)`` of two classifiers' probabilities on the same
    labelled test set, with a percentile bootstrap interval.

    Each resample draws the test examples with replacement and scores both
    classifiers on the same draw (a paired bootstrap), so what the two share
    (the test set's hard examples) cancels out of the difference.

    Args:
        probs_a: ``[N, K]`` class probabilities of the first classifier.
        probs_b: the second's, row ``i`` for the same example as in ``probs_a``.
        labels: ``[N]`` integer labels.
        metric: ``(probs, labels) -> float``; default
            :func:`expected_calibration_error` (15 bins).
        n_resamples: bootstrap resamples.
        confidence: the interval's coverage, in (0, 1).
        seed: of the resampling.

    Returns:
        ``difference`` (on the full test set), ``low`` and ``high`` (the
        interval's percentiles), ``a`` and ``b`` (each metric on the full set).
    """
    who = "paired_bootstrap_difference"
    _check_bootstrap(who, n_resamples, confidence)
    out = _bootstrap([_paired(probs_a, probs_b, labels, who)], metric, n_resamples, confidence, seed)
    return {k: out[k] for k in ("difference", "low", "high", "a", "b")}


def pooled_bootstrap_difference(
    sets: Sequence[tuple[Any, Any, Any]],
    *,
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The mean over several test sets of ``metric(a) - metric(b)``, with a
    paired bootstrap interval that resamples each set on its own.

    For repeated experiments (one pair of classifiers per split or seed): each
    set is ``(probs_a, probs_b, labels)`` of one repetition, each resample
    draws every set's examples with replacement (pairing ``a`` and ``b`` on
    the same draw, as :func:`paired_bootstrap_difference` does) and averages
    the per-set differences. The interval covers test-set noise; the spread
    of ``per_set`` shows what training seeds add.

    Returns:
        ``difference`` (the mean of the per-set differences), ``low`` and
        ``high``, ``a`` and ``b`` (the metrics' means), and ``per_set`` (one
        difference per set).
    """
    _check_bootstrap("pooled_bootstrap_difference", n_resamples, confidence)
    if len(sets) == 0:
        raise ValueError("pooled_bootstrap_difference: needs at least one (probs_a, probs_b, labels) set")
    pairs = [_paired(a, b, y, f"pooled_bootstrap_difference set {i}") for i, (a, b, y) in enumerate(sets)]
    return _bootstrap(pairs, metric, n_resamples, confidence, seed)


def _check_bootstrap(who: str, n_resamples: Any, confidence: float) -> None:
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"{who}: n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{who}: confidence must lie in (0, 1), got {confidence!r}")


def _paired(probs_a: Any, probs_b: Any, labels: Any, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pa, y = _probabilities(probs_a, labels, who)
    pb, _ = _probabilities(probs_b, labels, who)
    if pa.shape != pb.shape:
        raise ValueError(f"{who}: shapes differ, {list(pa.shape)} and {list(pb.shape)}")
    return pa, pb, y


def _bootstrap(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: Callable | None,
               n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """The mean over ``pairs`` of ``metric(a) - metric(b)`` with its
    percentile interval, each resample redrawing every pair's examples."""
    score = expected_calibration_error if metric is None else metric
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_resamples)
    for r in range(n_resamples):
        for pa, pb, y in pairs:
            idx = rng.integers(0, len(y), len(y))
            diffs[r] += score(pa[idx], y[idx]) - score(pb[idx], y[idx])
    diffs /= len(pairs)
    a = [float(score(pa, y)) for pa, _, y in pairs]
    b = [float(score(pb, y)) for _, pb, y in pairs]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    per_set = [x - z for x, z in zip(a, b, strict=True)]
    return {"difference": float(np.mean(per_set)), "low": float(low), "high": float(high),
            "a": float(np.mean(a)), "b": float(np.mean(b)), "per_set": per_set}


def auroc(scores_in: Any, scores_out: Any) -> float:
    """The probability that an in-distribution input scores higher than a
    shifted one (ties count one half): the area under the ROC curve of
    ``score > threshold`` as a detector of in-distribution inputs.

    1 separates perfectly, 0.5 is chance, below 0.5 ranks the shifted inputs
    higher (the familiar failure of likelihoods on simpler inputs).
    """
    from scipy.stats import rankdata

    a = np.asarray(scores_in, np.float64).ravel()
    b = np.asarray(scores_out, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("auroc: both score sets must be non-empty")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("auroc: scores must be finite")
    ranks = rankdata(np.concatenate([a, b]))  # average ranks of ties
    return float((ranks[: a.size].sum() - a.size * (a.size + 1) / 2.0) / (a.size * b.size))


def shifted_images(images: Any, *, seed: int = 0, blur_sigma: float = 1.0) -> dict[str, np.ndarray]:
    """Out-of-distribution sets built offline from images ``[N, H, W, C]`` in ``[-1, 1]``.

    Returns:
        ``noise``: Gaussian images with the set's mean and standard deviation
        (clipped to [-1, 1]); ``blurred``: each image under a Gaussian blur of
        ``blur_sigma`` pixels; ``inverted``: ``-x``; ``rotated``: each image
        turned by 90 degrees.
    """
    from ebmkit.evaluate.fid import gaussian_blur

    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"shifted_images: expected square images [N, H, W, C], got shape {list(x.shape)}")
    rng = np.random.default_rng(seed)
    noise = np.clip(rng.normal(x.mean(), x.std(), size=x.shape), -1.0, 1.0).astype(np.float32)
    return {
        "noise": noise,
        "blurred": gaussian_blur(x, blur_sigma),
        "inverted": -x,
        "rotated": np.ascontiguousarray(np.rot90(x, k=1, axes=(1, 2))),
    }


@functools.lru_cache(maxsize=8)
def _conditional_program(eval_graphdef: Any, num_classes: int) -> Callable[..., Any]:
    """Compiled ``(params, rest, x) -> (-E(x, y) for every y [B, K], -E(x) [B])``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def program(params, rest, x):
        net = nnx.merge(eval_graphdef, params, rest)
        n = x.shape[0]
        per_class = [-net(x, jnp.full((n,), k, jnp.int32)) for k in range(num_classes)]
        return jnp.stack(per_class, axis=1), -net(x)

    return jax.jit(program)


def joint_scores(model: Any, x: Any, num_classes: int, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``(-E(x, y)`` for every label ``[N, K]``, ``-E(x) [N])``, float64, in
    batches of ``batch_size``, with the parameters the model evaluates with."""
    import jax.numpy as jnp

    x = np.asarray(x, np.float32)
    params, rest = model.eval_variables()
    program = _conditional_program(model._graphdefs()[1], int(num_classes))
    joint, marginal = [], []
    for start in range(0, len(x), batch_size):
        j, m = program(params, rest, jnp.asarray(x[start : start + batch_size], jnp.float32))
        joint.append(np.asarray(j, np.float64))
        marginal.append(np.asarray(m, np.float64))
    return np.concatenate(joint), np.concatenate(marginal)


def class_probabilities(model: Any, x: Any, *, num_classes: int | None = None, batch_size: int = 500) -> np.ndarray:
    """``p(y | x) = softmax_y(-E(x, y))`` of a model with a conditional energy, float64 ``[N, K]``.

    Raises:
        ValueError: the number of classes is unknown, or the energy takes no labels.
    """
    k = num_classes if num_classes is not None else getattr(model.data, "num_classes", None)
    if k is None:
        raise ValueError("class_probabilities: the number of classes is unknown; pass num_classes")
    x = np.asarray(x, np.float32)
    try:
        logits, _ = joint_scores(model, x, k, batch_size)
    except ValueError as exc:
        raise ValueError(f"class_probabilities: the energy must take labels, E(x, y) (e.g. 'classifier'): {exc}") from None
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _labelled_test(dataset: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out points and labels: the test split, or fresh labelled draws."""
    held = getattr(dataset, "held_out_labelled", None)
    if held is not None:
        return held(n)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError(f"data set {getattr(dataset, 'name', '?')!r} has no held-out labels")
    x = dataset.held_out(n)
    return x, np.asarray(labels[1][: len(x)])


def evaluate_classifier(
    model: Any,
    dataset: Any,
    *,
    n_test: int = 10_000,
    num_bins: int = ECE_BINS,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Accuracy, calibration and OOD detection of a conditional-energy model.

    Args:
        model: an :class:`~ebmkit.EBM` whose energy takes labels (``classifier``).
        dataset: its labelled data set (``held_out`` with test labels, or
            ``held_out_labelled`` for the 2-D toys).
        n_test: held-out points at most (a finite test split is used whole
            when smaller).
        num_bins: confidence bins of the ECE.
        seed: of the shifted sets' noise.

    Returns:
        ``accuracy``, ``ece``, ``test_nll_y`` (mean ``-log p(y | x)``),
        ``calibration`` (the bins, for the reliability diagram), for images
        ``auroc_<shift>`` for each set of :func:`shifted_images`, and where
        the data set knows its class-conditional densities ``bayes_accuracy``.
    """
    k = int(dataset.num_classes)
    x, y = _labelled_test(dataset, n_test)
    logits, log_px = joint_scores(model, np.asarray(x, np.float32), k, batch_size)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    probs /= probs.sum(axis=1, keepdims=True)
    out: dict[str, Any] = {
        "accuracy": accuracy(probs, y),
        "ece": expected_calibration_error(probs, y, num_bins),
        "test_nll_y": float(-np.mean(log_probs[np.arange(len(y)), y])),
    }
    bins = calibration_bins(probs, y, num_bins)
    out["calibration"] = {key: np.asarray(v).tolist() for key, v in bins.items()}
    if getattr(dataset, "has_class_log_prob", False):
        out["bayes_accuracy"] = float(dataset.bayes_accuracy())
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x.shape[1] == x.shape[2]:
        for name, shifted in shifted_images(x, seed=seed).items():
            _, log_px_out = joint_scores(model, shifted, k, batch_size)
            out[f"auroc_{name}"] = auroc(log_px, log_px_out)
    return out


def conditional_sample_scores(
    model: Any,
    dataset: Any,
    *,
    classifier: Any = "digits",
    per_class: int = 100,
    n_steps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score class-conditional samples of a conditional-energy model of digits.

    ``per_class`` fresh chains per class run on ``E(x, y)``
    (``model.generate(labels=...)``, ``n_steps`` steps, default the
    sampler's ``num_steps`` but at least 60), and the shipped digit
    ``classifier`` (:func:`ebmkit.evaluate.load_classifier`) reads them.

    Returns:
        ``cond_agreement``: the share of samples the classifier labels as the
        class they were drawn for (1 when every chain draws its own digit,
        0.1 by chance); ``cond_h_y_per_class``: per class, the entropy of the
        classifier's mean label distribution over that class's samples (0
        when they are all one digit); ``fd``: the Fréchet distance in the
        classifier's features of all the samples against the held-out
        images; ``h_y``: the label entropy of all the samples (ln 10 = 2.30
        when the digits are balanced); ``per_class``, ``n_steps``.
    """
    import jax

    from ebmkit.evaluate.fid import classifier_probabilities, frechet_distance

    k = int(dataset.num_classes)
    steps = max(model.num_steps, 60) if n_steps is None else int(n_steps)
    labels = np.repeat(np.arange(k), per_class)
    x = np.asarray(model.generate(len(labels), n_steps=steps, labels=labels, rng_key=jax.random.key(seed)))
    probs = classifier_probabilities(x, classifier)
    per_class_h = []
    for c in range(k):
        mean = probs[labels == c].mean(axis=0)
        per_class_h.append(float(-np.sum(mean * np.log(np.clip(mean, 1e-12, None)))))
    mean_all = probs.mean(axis=0)
    return {
        "cond_agreement": float(np.mean(np.argmax(probs, axis=1) == labels)),
        "cond_h_y_per_class": per_class_h,
        "fd": frechet_distance(x, dataset.held_out(), classifier=classifier),
        "h_y": float(-np.sum(mean_all * np.log(np.clip(mean_all, 1e-12, None)))),
        "per_class": int(per_class),
        "n_steps": steps,
    }
