"""Likelihood of 2-D models by quadrature, counting all of the model's mass.

``p(x) = exp(−E(x)) / Z`` with ``Z = ∫ exp(−E)`` over the **whole plane**.
A learned energy need not confine its mass to the data's box: on some toys
a fifth of the probability lies outside it, and a normaliser taken over the
box alone would hide that (the density truncated to the box looks better than
the model is). So ``Z`` is the sum of three regions that tile the plane:

1. the **box**: a fine ``n × n`` midpoint grid (plus the same sum on an
   ``n/2`` grid, whose difference estimates the quadrature error);
2. the **band**: the same fine grid continued ``n/8`` cells beyond each edge
   of the box (an eighth of its width), the 16 cells nearest each edge split
   8 times along the normal, so that a steep wall at the box's edge
   (``base_measure.kind = "box"``), down to a tenth of a cell wide, is
   integrated rather than sampled once where it is already steep;
3. the **frame**: a coarse midpoint grid over the square of ``outer_factor``
   times the box's half-width around its centre, minus the band's square;
4. the **far field**: radial shells from that square's inscribed circle out
   to ``far_factor`` times the half-width, midpoint rule in ``log r`` and in
   the angle, counting only points outside the frame's square.

``tail_mass`` is the share of ``Z`` outside the box. When the density has not
decayed at the outermost shell (the last shell still holds more than
``1e-6`` of ``Z``), mass beyond it is missing and the NLL is a **lower bound**
of the truth; ``decayed`` says so. All sums are in float64 and logsumexp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["GridNLL", "grid_nll", "evaluate_dataset", "tail_warning", "TAIL_MASS_WARNING"]

#: ``tail_mass`` above which the evaluation warns (the box hides a visible part of the model).
TAIL_MASS_WARNING = 1e-3
#: The share of Z in the outermost shell above which the density has not decayed.
_UNDECAYED = 1e-6


class GridNLL(NamedTuple):
    """The NLL of a 2-D model, normalised over the whole plane.

    Attributes:
        nll: mean negative log-likelihood (nats) of the test points under the
            model normalised over the whole plane.
        log_z: log of the normaliser over the whole plane.
        nll_box: the NLL of the density truncated to the box (normalised over
            the box alone): optimistic by ``−log(1 − tail_mass)``.
        log_z_box: log of the normaliser over the box.
        tail_mass: the share of the model's mass outside the box.
        decayed: whether the density has decayed at the outermost shell; if
            not, ``nll`` is a lower bound.
        edge_mass: share of the box's mass in its outermost ring of cells.
        grid_error: ``|log Z_box(n) − log Z_box(n/2)|``, the quadrature error estimate.
        outside_fraction: fraction of test points outside the box (scored with
            the energy anyway).
    """

    nll: float
    log_z: float
    nll_box: float
    log_z_box: float
    tail_mass: float
    decayed: bool
    edge_mass: float
    grid_error: float
    outside_fraction: float


def _neg_energy(energy_fn: Callable[[np.ndarray], Any], pts: np.ndarray, chunk: int, where: str) -> np.ndarray:
    neg_e = np.concatenate(
        [-np.asarray(energy_fn(pts[i : i + chunk]), dtype=np.float64) for i in range(0, len(pts), chunk)]
    ) if len(pts) else np.zeros(0)
    bad = ~np.isfinite(neg_e)
    if np.any(bad & ~(neg_e == -np.inf)):
        raise FloatingPointError(f"grid NLL: {int(np.sum(bad))} non-finite energies {where}")
    return neg_e


def _logsumexp(a: np.ndarray) -> float:
    if a.size == 0:
        return -math.inf
    m = float(np.max(a))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(a - m))))


def _midpoints(low: float, high: float, n: int) -> np.ndarray:
    h = (high - low) / n
    return low + h * (np.arange(n) + 0.5)


def _box_log_z(energy_fn, low, high, n, chunk) -> tuple[float, float]:
    h = (high[0] - low[0]) / n, (high[1] - low[1]) / n
    xx, yy = np.meshgrid(_midpoints(low[0], high[0], n), _midpoints(low[1], high[1], n), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    neg_e = _neg_energy(energy_fn, pts, chunk, "on the grid")
    log_z = _logsumexp(neg_e) + math.log(h[0] * h[1])
    p = np.exp(neg_e - np.max(neg_e)).reshape(n, n)
    ring = np.ones((n, n), bool)
    ring[1:-1, 1:-1] = False
    return log_z, float(p[ring].sum() / p.sum())


def _graded_widths(h: float, extra: int, near: int, refine: int) -> np.ndarray:
    """Cell widths from an edge out to ``extra * h``: the ``near`` cells nearest
    the edge split ``refine`` times, then cells of ``h``.

    A midpoint grid that starts at the edge integrates a wall's smooth profile
    almost exactly (it is the even extension's trapezoid rule) as long as its
    cells are not much wider than the wall; where the cells widen, the rule
    errs by about ``h² f′ / 24``, so the widening sits ``near`` cells out,
    where a wall too thin for the coarse cells has decayed and a wider one is
    smooth on their scale.
    """
    near = min(near, extra)
    return np.concatenate([np.full(near * refine, h / refine), np.full(extra - near, h)])


def _graded_axis(
    low: float, high: float, n: int, extra: int, near: int, refine: int
) -> tuple[np.ndarray, np.ndarray, slice]:
    """Midpoints and widths of one axis of the band's grid, and the box's slice:
    the box's ``n`` cells and, beyond each edge, ``extra`` cells' worth of
    graded cells (:func:`_graded_widths`)."""
    h = (high - low) / n
    widths_out = _graded_widths(h, extra, near, refine)
    offsets = np.cumsum(widths_out) - widths_out / 2  # distance of each midpoint from the edge
    points = np.concatenate([low - offsets[::-1], _midpoints(low, high, n), high + offsets])
    widths = np.concatenate([widths_out[::-1], np.full(n, h), widths_out])
    return points, widths, slice(len(offsets), len(offsets) + n)


def _band_log_z(energy_fn, low, high, n, extra, chunk, near: int = 16, refine: int = 8) -> float:
    """The band of ``extra`` cells of the box's grid beyond each edge, minus the box.

    Along the normal, the ``near`` cells nearest the edge are split ``refine``
    times (:func:`_graded_widths`), so that a wall much thinner than the box's
    cells (checkerboard's are a tenth of one) is integrated rather than
    sampled once where it is already steep.
    """
    (px, wx, bx), (py, wy, by) = (_graded_axis(low[i], high[i], n, extra, near, refine) for i in range(2))
    xx, yy = np.meshgrid(px, py, indexing="ij")
    weight = np.log(np.outer(wx, wy))
    inside = np.zeros(xx.shape, bool)
    inside[bx, by] = True
    pts = np.stack([xx[~inside], yy[~inside]], axis=1).astype(np.float32)
    return _logsumexp(_neg_energy(energy_fn, pts, chunk, "just outside the box") + weight[~inside])


def _frame_log_z(energy_fn, centre, half, box_low, box_high, factor, cells, chunk) -> float:
    """The coarse grid over the outer square minus the band's square (cells whose centre is inside it are left out)."""
    outer_low, outer_high = centre - factor * half, centre + factor * half
    xs, ys = _midpoints(outer_low[0], outer_high[0], cells), _midpoints(outer_low[1], outer_high[1], cells)
    xx, yy = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    inside = np.all((pts >= box_low) & (pts <= box_high), axis=1)
    pts = pts[~inside].astype(np.float32)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    # The cells straddling the box's edge are counted by the box or by the frame
    # according to their centres: an O(cell) error on a density that is small there.
    return _logsumexp(_neg_energy(energy_fn, pts, chunk, "outside the box")) + math.log(cell)


def _far_log_z(energy_fn, centre, half, inner_factor, far_factor, radii, angles, chunk) -> tuple[float, float]:
    """Radial shells beyond the frame's square; returns ``(log Z_far, log mass of the last shell)``."""
    r_in, r_out = inner_factor * float(np.min(half)), far_factor * float(np.max(half))
    log_r = _midpoints(math.log(r_in), math.log(r_out), radii)
    theta = _midpoints(0.0, 2.0 * math.pi, angles)
    r = np.exp(log_r)
    dx = r[:, None] * np.cos(theta)[None, :]
    dy = r[:, None] * np.sin(theta)[None, :]
    frame = (np.abs(dx) < inner_factor * half[0]) & (np.abs(dy) < inner_factor * half[1])
    pts = np.stack([centre[0] + dx.ravel(), centre[1] + dy.ravel()], axis=1).astype(np.float32)
    neg_e = _neg_energy(energy_fn, pts, chunk, "in the far field").reshape(radii, angles)
    neg_e = np.where(frame, -np.inf, neg_e)
    # ∫∫ f r dr dθ = ∫∫ f r² d(log r) dθ, midpoint rule in both.
    d_log_r, d_theta = (math.log(r_out) - math.log(r_in)) / radii, 2.0 * math.pi / angles
    weights = 2.0 * log_r[:, None] + math.log(d_log_r * d_theta)
    terms = neg_e + weights
    return _logsumexp(terms), _logsumexp(terms[-1])


def grid_nll(
    energy_fn: Callable[[Any], Any],
    test_points: np.ndarray,
    bounds: tuple[float, float] = (-4.0, 4.0),
    n: int = 512,
    *,
    chunk: int = 65536,
    outer_factor: float = 12.0,
    outer_cells: int = 384,
    far_factor: float = 120.0,
    far_radii: int = 192,
    far_angles: int = 256,
) -> GridNLL:
    """NLL of ``test_points`` under ``p ∝ exp(−E)`` normalised over the whole plane.

    Args:
        energy_fn: ``x[B, 2] -> E[B]`` (e.g. ``model.energy``).
        test_points: ``[N, 2]`` held-out data.
        bounds: the data box ``(low, high)`` on both axes (scalars or pairs).
        n: cells per axis of the fine grid on the box (even).
        outer_factor: the frame reaches this many box half-widths from the centre.
        outer_cells: cells per axis of the frame's coarse grid.
        far_factor: the far-field shells reach this many half-widths.
        far_radii: the far field's resolution along the radius.
        far_angles: the far field's resolution around the circle.

    Raises:
        ValueError: test points are not 2-D.
        FloatingPointError: the energy is NaN (or ``-inf``) somewhere.
    """
    pts = np.asarray(test_points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"grid_nll: test_points must be [N, 2], got {list(pts.shape)}")
    low = np.broadcast_to(np.asarray(bounds[0], np.float64), (2,))
    high = np.broadcast_to(np.asarray(bounds[1], np.float64), (2,))
    centre, half = (low + high) / 2.0, (high - low) / 2.0
    log_z_box, edge = _box_log_z(energy_fn, low, high, n, chunk)
    log_z_half, _ = _box_log_z(energy_fn, low, high, max(n // 2, 2), chunk)
    extra = max(n // 8, 1)
    log_z_band = _band_log_z(energy_fn, low, high, n, extra, chunk)
    band = extra * (high - low) / n
    log_z_frame = _frame_log_z(energy_fn, centre, half, low - band, high + band, outer_factor, outer_cells, chunk)
    log_z_far, log_last = _far_log_z(energy_fn, centre, half, outer_factor, far_factor, far_radii, far_angles, chunk)
    log_z = _logsumexp(np.array([log_z_box, log_z_band, log_z_frame, log_z_far]))
    tail = _logsumexp(np.array([log_z_band, log_z_frame, log_z_far]))
    tail_mass = math.exp(tail - log_z) if math.isfinite(tail) else 0.0
    energies = -_neg_energy(energy_fn, pts, chunk, "on the test points")
    outside = np.mean(np.any((pts < low) | (pts > high), axis=1))
    return GridNLL(
        nll=float(np.mean(energies) + log_z),
        log_z=log_z,
        nll_box=float(np.mean(energies) + log_z_box),
        log_z_box=log_z_box,
        tail_mass=float(tail_mass),
        decayed=bool(not math.isfinite(log_last) or log_last - log_z < math.log(_UNDECAYED)),
        edge_mass=edge,
        grid_error=abs(log_z_box - log_z_half),
        outside_fraction=float(outside),
    )


def evaluate_dataset(
    energy_fn: Callable[[Any], Any],
    dataset: Any,
    *,
    n_test: int = 20000,
    grid: int = 256,
    energy_module: Any = None,
) -> dict[str, float]:
    """The standard evaluation of a model of ``dataset``.

    2-D data sets get the full-plane NLL on ``n_test`` held-out points
    (:func:`grid_nll`), the KL gap (NLL − true entropy) where the entropy is
    known, ``tail_mass`` and the box-only figures beside them (``nll_box``,
    ``kl_gap_box``: the density truncated to the box). Callers warn with
    :func:`tail_warning` when ``tail_mass`` exceeds :data:`TAIL_MASS_WARNING`
    or the density has not decayed (``decayed`` is 0). Binary data sets get
    :func:`ebmkit.evaluate.discrete.evaluate_binary` (exact or AIS
    likelihood; ``energy_module``, the network itself, lets it sum an RBM
    exactly). Other data sets get the tail check.
    """
    if str(getattr(dataset, "support", "continuous")) == "binary":
        from ebmkit.evaluate.discrete import evaluate_binary

        return evaluate_binary(energy_fn, dataset, energy_module=energy_module)
    if tuple(dataset.event_shape) != (2,) or dataset.bounds is None:
        if not hasattr(dataset, "held_out"):
            return {}
        from ebmkit.evaluate.tails import tail_check

        check = tail_check(energy_fn, dataset)
        return {"tails_confined": float(check["confined"]), "tail_shortfall": check["shortfall"]}
    test = dataset.held_out(n_test)
    result = grid_nll(energy_fn, test, dataset.bounds, grid)
    out = {
        "nll": result.nll,
        "log_z": result.log_z,
        "tail_mass": result.tail_mass,
        "decayed": float(result.decayed),
        "nll_box": result.nll_box,
        "edge_mass": result.edge_mass,
        "grid_error": result.grid_error,
        "outside_fraction": result.outside_fraction,
    }
    if dataset.entropy is not None:
        out["entropy"] = float(dataset.entropy)
        out["kl_gap"] = result.nll - float(dataset.entropy)
        out["kl_gap_box"] = result.nll_box - float(dataset.entropy)
    return out


def tail_warning(tail_mass: float, decayed: bool) -> str | None:
    """The warning for a model whose mass leaves the data box, or ``None``."""
    if tail_mass <= TAIL_MASS_WARNING and decayed:
        return None
    text = f"{tail_mass:.1%} of the model's probability lies outside the data box"
    if not decayed:
        text += "; the density has not decayed at the outermost radius, so the NLL is a lower bound"
    return text + " (a base measure confines it: docs/evaluation.md)"
