"""Maximum mean discrepancy between two samples, in bounded memory."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["mmd", "median_bandwidth"]


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
