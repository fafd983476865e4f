"""Evaluation and diagnostics of trained EBMs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit._ais import AISResult, ais_log_z, annealing_schedule, reverse_ais_log_z
from ebmkit._fid import (
    ClassifierWeightsError,
    classifier_features,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_blur,
    label_entropy,
    load_classifier,
    nearest_neighbour_distance,
)
from ebmkit.data import batch_from

__all__ = [
    "AISResult",
    "ClassifierWeightsError",
    "GridNLL",
    "ais_log_z",
    "annealing_schedule",
    "classifier_features",
    "diagnose",
    "evaluate_dataset",
    "frechet_distance",
    "frechet_distance_from_features",
    "gaussian_blur",
    "grid_nll",
    "label_entropy",
    "load_classifier",
    "median_bandwidth",
    "mmd",
    "nearest_neighbour_distance",
    "reverse_ais_log_z",
]


def diagnose(
    model: Any,
    batch: Any,
    sample_shape: tuple[int, ...] | None = None,
    *,
    n_samples: int = 16,
    n_steps: int = 100,
    rng_key: Any = None,
) -> dict[str, float]:
    """The guide's health check of an EBM.

    Args:
        model: an :class:`ebmkit.EBM`.
        batch: real data, an array or a dict with ``image``/``data``.
        sample_shape: the event shape (default: the model's).
        n_samples: fresh chains to run.
        n_steps: their length.

    Returns:
        ``real_energy``, ``fake_energy``, ``energy_gap`` (fake − real, should be
        > 0), ``mcmc_decrease`` (mean energy drop along the chains, should be
        > 0), ``buffer_usage`` (filled fraction), ``sample_min``, ``sample_max``
        and ``non_finite_fraction`` of the chains.
    """
    real = batch_from(batch)
    real_energy = float(jnp.mean(model.energy(real)))
    samples, info = model.generate(
        n_samples, shape=sample_shape, n_steps=n_steps, rng_key=rng_key, return_info=True
    )
    fake_energy = float(jnp.mean(model.energy(samples)))
    buffer = model.sample_buffer
    return {
        "real_energy": real_energy,
        "fake_energy": fake_energy,
        "energy_gap": fake_energy - real_energy,
        "mcmc_decrease": float(jnp.mean(info.initial_energy - info.final_energy)),
        "buffer_usage": len(buffer) / buffer.capacity,
        "sample_min": float(jnp.min(samples)),
        "sample_max": float(jnp.max(samples)),
        "non_finite_fraction": float(jnp.mean(info.non_finite)),
    }


class GridNLL(NamedTuple):
    """Exact-up-to-quadrature NLL of a 2-D model on a midpoint grid.

    Attributes:
        nll: mean negative log-likelihood (nats) of the test points.
        log_z: log of the normalising constant over the box.
        edge_mass: probability mass in the outermost ring of cells; large
            values mean the box cuts off mass and ``nll`` is optimistic.
        grid_error: |log Z(n) − log Z(n/2)|, the quadrature error estimate.
        outside_fraction: fraction of test points outside the box (they are
            scored with the energy anyway, but are not covered by log Z).
    """

    nll: float
    log_z: float
    edge_mass: float
    grid_error: float
    outside_fraction: float


def _grid_log_z(energy_fn: Callable[[np.ndarray], np.ndarray], low: float, high: float, n: int,
                chunk: int) -> tuple[float, float]:
    h = (high - low) / n
    centres = low + h * (np.arange(n) + 0.5)
    xx, yy = np.meshgrid(centres, centres, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    neg_e = np.concatenate(
        [-np.asarray(energy_fn(pts[i : i + chunk]), dtype=np.float64) for i in range(0, len(pts), chunk)]
    )
    if not np.all(np.isfinite(neg_e)):
        raise FloatingPointError(f"grid NLL: {np.sum(~np.isfinite(neg_e))} non-finite energies on the grid")
    m = neg_e.max()
    log_z = m + np.log(np.sum(np.exp(neg_e - m))) + 2 * np.log(h)
    p = np.exp(neg_e - m).reshape(n, n)
    ring = np.ones((n, n), bool)
    ring[1:-1, 1:-1] = False
    edge = float(p[ring].sum() / p.sum())
    return float(log_z), edge


def grid_nll(
    energy_fn: Callable[[Any], Any],
    test_points: np.ndarray,
    bounds: tuple[float, float] = (-4.0, 4.0),
    n: int = 512,
    *,
    chunk: int = 65536,
) -> GridNLL:
    """NLL of ``test_points`` under ``p ∝ exp(−E)`` normalised on a grid.

    ``log Z`` is a logsumexp of ``−E`` at the centres of an ``n × n`` grid over
    the square box ``bounds``, reduced in float64; the same sum on an
    ``n/2`` grid estimates the quadrature error.

    Args:
        energy_fn: ``x[B, 2] -> E[B]`` (e.g. ``model.energy``).
        test_points: ``[N, 2]`` held-out data.
        bounds: the box ``(low, high)`` on both axes.
        n: cells per axis (even).

    Raises:
        ValueError: test points are not 2-D.
        FloatingPointError: the energy is not finite on the grid.
    """
    pts = np.asarray(test_points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"grid_nll: test_points must be [N, 2], got {list(pts.shape)}")
    low, high = map(float, bounds)
    log_z, edge = _grid_log_z(energy_fn, low, high, n, chunk)
    log_z_half, _ = _grid_log_z(energy_fn, low, high, max(n // 2, 2), chunk)
    energies = np.concatenate(
        [np.asarray(energy_fn(pts[i : i + chunk]), dtype=np.float64) for i in range(0, len(pts), chunk)]
    )
    outside = np.mean(np.any((pts < low) | (pts > high), axis=1))
    return GridNLL(
        nll=float(np.mean(energies) + log_z),
        log_z=log_z,
        edge_mass=edge,
        grid_error=abs(log_z - log_z_half),
        outside_fraction=float(outside),
    )


def evaluate_dataset(
    energy_fn: Callable[[Any], Any],
    dataset: Any,
    *,
    n_test: int = 20000,
    grid: int = 256,
) -> dict[str, float]:
    """The standard evaluation of a model of ``dataset``.

    2-D data sets get the exact grid NLL on ``n_test`` held-out points with its
    diagnostics, and the KL gap (NLL − true entropy) where the entropy is known.
    Other data sets get nothing here (see the image metrics).
    """
    if tuple(dataset.event_shape) != (2,) or dataset.bounds is None:
        return {}
    test = dataset.held_out(n_test)
    result = grid_nll(energy_fn, test, dataset.bounds, grid)
    out = {
        "nll": result.nll,
        "log_z": result.log_z,
        "edge_mass": result.edge_mass,
        "grid_error": result.grid_error,
        "outside_fraction": result.outside_fraction,
    }
    if dataset.entropy is not None:
        out["entropy"] = float(dataset.entropy)
        out["kl_gap"] = result.nll - float(dataset.entropy)
    return out


# -- MMD -----------------------------------------------------------------------------

#: Kernel entries per compiled block; bounds memory at any sample size.
_MMD_BLOCK_ELEMENTS = 1 << 22


def _as_rows(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 1 or len(a) < 2:
        raise ValueError(f"mmd: {what} needs at least 2 samples, got shape {list(a.shape)}")
    a = a.reshape(len(a), -1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"mmd: {what} has {int(np.sum(~np.isfinite(a)))} non-finite values")
    return a


def median_bandwidth(x: Any, y: Any, *, max_points: int = 1000, seed: int = 0) -> float:
    """The median heuristic: the median distance between distinct points of the
    pooled sample (a seeded subsample of at most ``max_points``)."""
    pooled = np.concatenate([_as_rows(x, "x"), _as_rows(y, "y")])
    if len(pooled) > max_points:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), max_points, replace=False)]
    sq = np.sum(pooled**2, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T
    d2 = d2[np.triu_indices(len(pooled), k=1)]
    d = np.sqrt(np.clip(d2, 0.0, None))
    d = d[d > 0]
    if len(d) == 0:
        raise ValueError("mmd: all points coincide; pass bandwidths explicitly")
    return float(np.median(d))


@functools.partial(jax.jit, static_argnames=("chunk", "same"))
def _kernel_row_sums(
    a: jax.Array, b: jax.Array, inv_two_h2: jax.Array, num_rows: jax.Array, chunk: int, same: bool
) -> jax.Array:
    """``Σ_j k(a_i, b_j)`` for every row ``i`` of ``a`` (``j ≠ i`` when ``same``),
    ``chunk`` rows at a time; padded rows (``i ≥ num_rows``) give 0."""
    b_sq = jnp.sum(b * b, axis=1)
    cols = jnp.arange(b.shape[0])

    def block(inputs):
        start, rows = inputs
        d2 = jnp.sum(rows * rows, axis=1)[:, None] + b_sq[None, :] - 2.0 * rows @ b.T
        d2 = jnp.maximum(d2, 0.0)
        k = jnp.mean(jnp.exp(-d2[..., None] * inv_two_h2), axis=-1)
        row_ids = start + jnp.arange(chunk)
        if same:
            k = jnp.where(row_ids[:, None] == cols[None, :], 0.0, k)
        return jnp.where(row_ids < num_rows, jnp.sum(k, axis=1), 0.0)

    blocks = a.reshape(-1, chunk, a.shape[1])
    starts = jnp.arange(blocks.shape[0]) * chunk
    return jax.lax.map(block, (starts, blocks)).reshape(-1)


def _kernel_sum(a: np.ndarray, b: np.ndarray, inv_two_h2: jax.Array, same: bool) -> float:
    chunk = max(1, min(len(a), _MMD_BLOCK_ELEMENTS // (len(b) * int(inv_two_h2.shape[0]))))
    chunk = 1 << (chunk.bit_length() - 1)  # a power of two: few distinct compiled shapes
    pad = -len(a) % chunk
    padded = np.concatenate([a, np.zeros((pad, a.shape[1]), a.dtype)]) if pad else a
    sums = _kernel_row_sums(
        jnp.asarray(padded, jnp.float32), jnp.asarray(b, jnp.float32), inv_two_h2,
        jnp.asarray(len(a)), chunk, same,
    )
    # Row sums are short float32 sums; the long sum over rows is float64.
    return float(np.sum(np.asarray(sums, dtype=np.float64)))


def mmd(x: Any, y: Any, *, bandwidths: float | Sequence[float] | None = None) -> float:
    """Unbiased squared maximum mean discrepancy ``MMD²(x, y)`` (Gretton et al. 2012).

    With the Gaussian kernel ``k(a, b) = exp(−|a − b|² / (2h²))`` (the mean of
    those kernels when several bandwidths ``h`` are given):

        MMD² = mean_{i≠j} k(xᵢ, xⱼ) + mean_{i≠j} k(yᵢ, yⱼ) − 2 mean_{i,j} k(xᵢ, yⱼ).

    It is 0 in expectation when ``x`` and ``y`` come from one distribution, so
    small negative values happen; compare against the MMD² of two samples of
    the data itself. The kernel is computed in jitted blocks of bounded size,
    so 10,000 × 10,000 samples need no ``n²`` memory.

    Args:
        x: ``[m, ...]`` samples (flattened per row).
        y: ``[n, ...]`` samples of the same row size.
        bandwidths: ``h`` or several; default the median heuristic
            (:func:`median_bandwidth` of the pooled samples).

    Returns:
        The estimate as a Python float.
    """
    x, y = _as_rows(x, "x"), _as_rows(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd: x has {x.shape[1]} features per row, y has {y.shape[1]}")
    if bandwidths is None:
        bandwidths = median_bandwidth(x, y)
    h = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
    if h.ndim != 1 or len(h) == 0 or not np.all(h > 0) or not np.all(np.isfinite(h)):
        raise ValueError(f"mmd: bandwidths must be positive numbers, got {bandwidths!r}")
    inv_two_h2 = jnp.asarray(1.0 / (2.0 * h**2), jnp.float32)
    # Centring on the pooled mean keeps |a|² + |b|² − 2ab from cancelling badly.
    centre = np.concatenate([x, y]).mean(axis=0, keepdims=True)
    x, y = x - centre, y - centre
    m, n = len(x), len(y)
    kxx = _kernel_sum(x, x, inv_two_h2, same=True) / (m * (m - 1))
    kyy = _kernel_sum(y, y, inv_two_h2, same=True) / (n * (n - 1))
    kxy = _kernel_sum(x, y, inv_two_h2, same=False) / (m * n)
    return float(kxx + kyy - 2.0 * kxy)
