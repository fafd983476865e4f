"""Plots of energy-based models: energy landscapes, samples, image grids,
training curves, energy histograms and sweeps.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas
directly, without pyplot: nothing is shown, no global backend is switched and
no figure is left open in pyplot's registry, so the functions are safe in
scripts, tests, servers and notebooks alike (a notebook displays the returned
figure). Each returns its figure and, when given ``path``, also writes it there
as a PNG (or in the format the path's extension names, e.g. ``.svg``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "visualize_energy_landscape",
    "save_image_grid",
    "plot_training_curves",
    "plot_samples",
    "plot_energy_histogram",
    "read_metrics",
    "plot_sweep",
    "plot_reliability_diagram",
    "plot_class_densities",
]

PathLike = str | os.PathLike[str]

#: Resolution of saved figures (the image grid is saved pixel for pixel instead).
DPI = 110

_SAMPLE_STYLE = {"s": 6, "c": "#d62728", "alpha": 0.8, "linewidths": 0, "label": "samples"}
_DATA_STYLE = {"s": 4, "c": "#1f77b4", "alpha": 0.35, "linewidths": 0, "label": "data"}
# Over a filled contour, data in white stands out from both the dark wells and the samples.
_DATA_ON_CONTOUR = {**_DATA_STYLE, "c": "white", "alpha": 0.5}


# -- helpers -------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike | None) -> None:
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # No extension: write PNG at exactly this path (savefig would append ".png").
    fmt = None if p.suffix else "png"
    fig.savefig(p, format=fmt, dpi=DPI)


def _points(x: Any, what: str) -> np.ndarray:
    """``x`` as float64 ``[N, 2]`` (a batch of 2-D points), or a clear error."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what}: expected 2-D points of shape [N, 2], got shape {list(arr.shape)}")
    return arr


def _box(bounds: Any, what: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(low, high)`` for both axes, or ``((x_low, x_high), (y_low, y_high))``."""
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        b = np.empty(0)
    if b.shape == (2,):
        b = np.stack([b, b])
    if b.shape != (2, 2) or not np.all(np.isfinite(b)) or np.any(b[:, 0] >= b[:, 1]):
        raise ValueError(
            f"{what}: bounds must be (low, high) or ((x_low, x_high), (y_low, y_high)) with low < high, "
            f"got {bounds!r}"
        )
    return (float(b[0, 0]), float(b[0, 1])), (float(b[1, 0]), float(b[1, 1]))


def _energy_fn_of(model_or_energy_fn: Any) -> Callable[[np.ndarray], Any]:
    """``model.energy`` for an EBM (checked to be 2-D), else the callable itself."""
    event_shape = getattr(model_or_energy_fn, "event_shape", None)
    if event_shape is not None and tuple(event_shape) != (2,):
        raise ValueError(
            f"visualize_energy_landscape: the model's samples have shape {tuple(event_shape)}; "
            "an energy landscape needs 2-D points (event_shape (2,)). For images use save_image_grid "
            "and plot_energy_histogram"
        )
    energy = getattr(model_or_energy_fn, "energy", None)
    if callable(energy):
        return energy
    if callable(model_or_energy_fn):
        return model_or_energy_fn
    raise TypeError(
        "visualize_energy_landscape: expected an EBM or a function x[B, 2] -> E[B], "
        f"got {type(model_or_energy_fn).__name__}"
    )


def _scatter_overlays(ax: Any, samples: Any, data: Any, what: str, *, on_contour: bool = False) -> None:
    if data is not None:
        d = _points(data, f"{what}: data")
        ax.scatter(d[:, 0], d[:, 1], **(_DATA_ON_CONTOUR if on_contour else _DATA_STYLE))
    if samples is not None:
        s = _points(samples, f"{what}: samples")
        ax.scatter(s[:, 0], s[:, 1], **_SAMPLE_STYLE)
    if data is not None or samples is not None:
        legend = ax.legend(loc="upper right", markerscale=3, framealpha=0.85, fontsize="small",
                           facecolor="#cccccc" if on_contour else None)
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)


# -- energy landscape ----------------------------------------------------------------


def visualize_energy_landscape(
    model_or_energy_fn: Any,
    bounds: Any = (-4, 4),
    resolution: int = 200,
    *,
    samples: Any = None,
    data: Any = None,
    path: PathLike | None = None,
    title: str | None = None,
    log_density: bool = False,
    chunk: int = 65536,
) -> Figure:
    """Filled contours of a 2-D energy (or of its normalised density) on a grid.

    Args:
        model_or_energy_fn: a 2-D :class:`~ebmkit.EBM` (its ``energy`` is used)
            or any function ``x[B, 2] -> E[B]``.
        bounds: the square ``(low, high)`` or the box
            ``((x_low, x_high), (y_low, y_high))`` to draw.
        resolution: grid points per axis.
        samples: optional ``[N, 2]`` model samples, drawn in red.
        data: optional ``[M, 2]`` data points, drawn in blue.
        path: where to write the figure (PNG unless the extension says otherwise).
        title: the axes title (default: what is drawn).
        log_density: draw the density ``exp(-E) / Z`` normalised over the grid
            instead of the energy ``E``. The density shows where the model puts
            its mass; the energy shows the landscape the sampler climbs.
        chunk: grid points per call of the energy (bounds memory).

    Returns:
        The figure. The colour scale of an energy plot stops at its 99th
        percentile (the colour bar extends beyond): the energy usually grows
        steeply towards the corners and would flatten everything else.

    Raises:
        ValueError: a model that is not 2-D, bad ``bounds``/``resolution``,
            points not shaped ``[N, 2]``, energies of the wrong shape or not
            finite anywhere on the grid.
    """
    energy_fn = _energy_fn_of(model_or_energy_fn)
    (x_low, x_high), (y_low, y_high) = _box(bounds, "visualize_energy_landscape")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"visualize_energy_landscape: resolution must be an integer >= 2, got {resolution!r}")
    xs = np.linspace(x_low, x_high, int(resolution))
    ys = np.linspace(y_low, y_high, int(resolution))
    gx, gy = np.meshgrid(xs, ys)  # gx[i, j] = xs[j]: rows are y, as contourf expects
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    parts = []
    for i in range(0, len(grid), chunk):
        part = np.asarray(energy_fn(grid[i : i + chunk]), dtype=np.float64)
        if part.shape != (len(grid[i : i + chunk]),):
            raise ValueError(
                f"visualize_energy_landscape: the energy of {len(grid[i : i + chunk])} points has shape "
                f"{list(part.shape)}; expected one energy per point"
            )
        parts.append(part)
    energy = np.concatenate(parts).reshape(gx.shape)
    finite = np.isfinite(energy)
    if not finite.any():
        raise ValueError("visualize_energy_landscape: the energy is not finite anywhere on the grid")

    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    if log_density:
        neg = np.where(finite, -energy, -np.inf)
        top = neg[finite].max()
        cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
        log_z = top + math.log(np.exp(neg - top).sum() * cell)
        values = np.exp(neg - log_z)
        levels = MaxNLocator(nbins=30).tick_values(0.0, max(values.max(), 1e-300))
        filled = ax.contourf(gx, gy, values, levels=levels, cmap="magma")
        label = "density exp(-E) / Z"
        default_title = "model density (normalised on the grid)"
    else:
        values = np.ma.masked_invalid(energy)
        low = float(values.min())
        high = float(np.percentile(energy[finite], 99))
        if high - low < 1e-9 * max(1.0, abs(low)):
            high = low + max(1e-6, 1e-6 * abs(low))  # a flat energy still gets a colour bar
        levels = MaxNLocator(nbins=30).tick_values(low, high)
        filled = ax.contourf(gx, gy, values, levels=levels, cmap="viridis", extend="max")
        label = "energy E(x)"
        default_title = "energy landscape"
    fig.colorbar(filled, ax=ax, label=label)
    _scatter_overlays(ax, samples, data, "visualize_energy_landscape", on_contour=True)
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(default_title if title is None else title)
    _save(fig, path)
    return fig


# -- samples -------------------------------------------------------------------------


def plot_samples(
    samples: Any,
    data: Any = None,
    bounds: Any = None,
    path: PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """A scatter of 2-D samples (red) over optional data (blue).

    Args:
        samples: ``[N, 2]`` points.
        data: optional ``[M, 2]`` points.
        bounds: ``(low, high)`` or ``((x_low, x_high), (y_low, y_high))``;
            default: fit the points. Points outside are not drawn.
        path: where to write the figure.
        title: the axes title.

    Raises:
        ValueError: points not shaped ``[N, 2]`` or bad ``bounds``.
    """
    s = _points(samples, "plot_samples: samples")
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    _scatter_overlays(ax, s, data, "plot_samples")
    if bounds is not None:
        (x_low, x_high), (y_low, y_high) = _box(bounds, "plot_samples")
        ax.set_xlim(x_low, x_high)
        ax.set_ylim(y_low, y_high)
        outside = int(np.sum(np.any((s < [x_low, y_low]) | (s > [x_high, y_high]), axis=1)))
        if outside:
            ax.text(0.02, 0.02, f"{outside} of {len(s)} samples outside the plot",
                    transform=ax.transAxes, fontsize="small", color="#d62728",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 2})
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(f"{len(s)} samples" if title is None else title)
    _save(fig, path)
    return fig


# -- image grids ---------------------------------------------------------------------


def _tile(images: np.ndarray, nrow: int, padding: int, pad_value: Any) -> np.ndarray:
    n, h, w, c = images.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    out = np.empty((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), np.float64)
    out[...] = pad_value
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        out[top : top + h, left : left + w] = images[i]
    return out


def save_image_grid(
    images: Any,
    path: PathLike,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1, 1),
    padding: int = 2,
    min_size: int = 256,
) -> Figure:
    """Tile ``images[N, H, W, C]`` (C = 1 or 3) into one PNG, pixel for pixel.

    Args:
        images: the batch; values outside ``value_range`` are clipped, NaN
            shows as the low end (black).
        path: the PNG to write.
        nrow: images per row, as in ``torchvision.utils.make_grid``
            (default: ``ceil(sqrt(N))``, a square-ish grid).
        value_range: ``(low, high)`` mapped to black and white.
        padding: pixels of (pale blue) border between tiles.
        min_size: images are enlarged by an integer factor (nearest neighbour)
            until the grid's longer side is at least this many pixels, so
            8×8 digits stay visible; 0 keeps one pixel per pixel.

    Returns:
        A figure showing the grid at the same resolution as the file.

    Raises:
        ValueError: ``images`` not shaped ``[N, H, W, 1 or 3]``, empty, or a
            bad ``value_range``/``nrow``.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or 0 in x.shape:
        hint = ""
        if x.ndim == 3:
            hint = " (for one image use images[None]; for grey images without a channel axis, images[..., None])"
        raise ValueError(
            f"save_image_grid: expected images of shape [N, H, W, C] with C = 1 or 3, "
            f"got shape {list(x.shape)}{hint}"
        )
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise ValueError(f"save_image_grid: expected numeric images, got dtype {x.dtype}")
    low, high = (float(v) for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"save_image_grid: value_range must be (low, high) with low < high, got {value_range!r}")
    n = x.shape[0]
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"save_image_grid: nrow must be a positive integer, got {nrow!r}")
    nrow = min(int(nrow), n)
    unit = (np.nan_to_num(x.astype(np.float64), nan=low, posinf=high, neginf=low) - low) / (high - low)
    unit = np.clip(unit, 0.0, 1.0)
    if unit.shape[-1] == 1:
        unit = np.repeat(unit, 3, axis=-1)
    # A tinted border stays visible between grey tiles, black ones and white ones alike.
    grid = _tile(unit, nrow, max(int(padding), 0), np.array([0.69, 0.77, 0.87]))
    if min_size:
        scale = max(1, math.ceil(min_size / max(grid.shape[:2])))
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    pixels = np.round(grid * 255).astype(np.uint8)

    height, width = pixels.shape[:2]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.figimage(pixels, origin="upper")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib.image

    matplotlib.image.imsave(p, pixels, format=None if p.suffix else "png")
    return fig


# -- training curves -----------------------------------------------------------------


def read_metrics(source: PathLike) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.jsonl`` (``source`` is the file or the run directory).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object (names file and line).
    """
    p = Path(source)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"no metrics file at {p}")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{p}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[i] = float(value)
    return out


def _line(ax: Any, steps: np.ndarray, values: np.ndarray, **style: Any) -> bool:
    ok = np.isfinite(values) & np.isfinite(steps)
    if not ok.any():
        return False
    marker = "o" if ok.sum() < 30 else None
    ax.plot(steps[ok], values[ok], marker=marker, markersize=3, **style)
    return True


def plot_training_curves(history: Any, path: PathLike | None = None, *, title: str | None = None) -> Figure:
    """Panels of a training run: loss; real vs fake energy; energy gap; NLL/KL gap.

    Args:
        history: ``TrainResult.history`` (a list of metric dicts), a
            ``TrainResult``, or the path of a run's ``metrics.jsonl`` or of the
            run directory. The x axis is each row's ``step`` (else its index).
        path: where to write the figure.
        title: the figure title.

    The NLL panel appears when rows carry ``nll`` or ``kl_gap`` (training with
    ``train.eval_every``); rows without them are skipped there.

    Raises:
        ValueError: an empty history, or one with none of ``loss``,
            ``real_energy_mean``, ``fake_energy_mean``, ``energy_gap``.
    """
    if isinstance(history, (str, os.PathLike)):
        rows = read_metrics(history)
    else:
        rows = list(getattr(history, "history", history))
    if not rows:
        raise ValueError("plot_training_curves: the history is empty (log at least one step)")
    if not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("plot_training_curves: history must be a list of dicts of metrics")
    present = set().union(*rows)
    if not present & {"loss", "real_energy_mean", "fake_energy_mean", "energy_gap"}:
        raise ValueError(
            "plot_training_curves: no loss or energy metrics in the history; its keys are "
            + ", ".join(sorted(present))
        )
    steps = _column(rows, "step") if "step" in present else np.arange(1, len(rows) + 1, dtype=np.float64)
    gap = _column(rows, "energy_gap")
    if "energy_gap" not in present:
        gap = _column(rows, "fake_energy_mean") - _column(rows, "real_energy_mean")
    has_nll = bool(present & {"nll", "kl_gap"})
    panels = 4 if has_nll else 3

    fig = _figure(4.0 * panels, 3.6)
    axes = fig.subplots(1, panels, sharex=True)  # sparse NLL rows keep the run's step range
    specs: list[tuple[str, list[tuple[str, np.ndarray, dict[str, Any]]]]] = [
        ("loss", [("loss", _column(rows, "loss"), {"color": "black"})]),
        (
            "energy",
            [
                ("real (data)", _column(rows, "real_energy_mean"), {"color": "#1f77b4"}),
                ("fake (samples)", _column(rows, "fake_energy_mean"), {"color": "#d62728"}),
            ],
        ),
        ("energy gap (fake − real)", [("gap", gap, {"color": "#2ca02c"})]),
    ]
    if has_nll:
        specs.append(
            (
                "held-out NLL (nats)",
                [("nll", _column(rows, "nll"), {"color": "#9467bd"}),
                 ("KL gap", _column(rows, "kl_gap"), {"color": "#ff7f0e"})],
            )
        )
    for ax, (name, lines) in zip(axes, specs, strict=True):
        drawn = [label for label, values, style in lines if _line(ax, steps, values, label=label, **style)]
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(lines) > 1:
            ax.legend(fontsize="small")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    if title is not None:
        fig.suptitle(title)
    _save(fig, path)
    return fig


# -- energy histograms ---------------------------------------------------------------


def _energies(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"plot_energy_histogram: {what} must be a non-empty 1-D array E[B], got shape {list(arr.shape)}")
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise ValueError(f"plot_energy_histogram: no finite values in {what}")
    return finite


def plot_energy_histogram(
    real_energies: Any,
    fake_energies: Any,
    path: PathLike | None = None,
    *,
    bins: int = 40,
    title: str | None = None,
) -> Figure:
    """Histograms of the energy of data (real) and of model samples (fake).

    A healthy contrastive model keeps the two overlapping with the samples
    slightly higher; fake energies far below the real ones mean the sampler
    found low-energy regions the data does not visit.

    Args:
        real_energies: ``E[B]`` of data, e.g. ``model.energy(batch)``.
        fake_energies: ``E[B]`` of samples, e.g. ``model.energy(model.generate(64))``.
        path: where to write the figure.
        bins: histogram bins (shared by both).
        title: the axes title (default: the mean gap).

    Raises:
        ValueError: inputs that are not non-empty 1-D arrays with finite values.
    """
    real = _energies(real_energies, "real_energies")
    fake = _energies(fake_energies, "fake_energies")
    both = np.concatenate([real, fake])
    low, high = both.min(), both.max()
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, int(bins) + 1)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for values, label, colour in ((real, "real (data)", "#1f77b4"), (fake, "fake (samples)", "#d62728")):
        ax.hist(values, bins=edges, alpha=0.55, color=colour, label=f"{label}, mean {values.mean():.3g}")
        ax.axvline(values.mean(), color=colour, linestyle="--", linewidth=1.2)
    ax.set_xlabel("energy E(x)")
    ax.set_ylabel("count")
    ax.legend(fontsize="small")
    gap = fake.mean() - real.mean()
    ax.set_title(f"energy gap (fake − real) = {gap:.3g}" if title is None else title)
    _save(fig, path)
    return fig



# -- sweeps ----------------------------------------------------------------------------


def _setting_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _setting_text(value: Any) -> str:
    return value if isinstance(value, str) else _setting_key(value)


def plot_sweep(
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    metric: str,
    path: PathLike | None = None,
    *,
    title: str | None = None,
    max_lines: int = 6,
) -> Figure:
    """A sweep's ``metric`` against each swept setting, mean ± std over seeds.

    Args:
        rows: one mapping per run, holding each of ``fields`` and ``metric``
            (runs whose metric is missing or not finite are left out).
        fields: the swept settings, one panel each.
        metric: the figure to plot.
        path: where to write the figure.
        title: the figure title.
        max_lines: within a panel, one line per combination of the other
            settings' values, up to this many; with more, one line averages
            over all of them.

    Raises:
        ValueError: no fields.
    """
    if not fields:
        raise ValueError("plot_sweep: no swept settings to plot against")
    fig = _figure(4.4 * len(fields), 3.6)
    panels = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, field in zip(panels, fields, strict=True):
        xs = list({_setting_key(r[field]): r[field] for r in rows}.values())
        others = [f for f in fields if f != field]
        groups = list({tuple(_setting_key(r[o]) for o in others): tuple(r[o] for o in others) for r in rows}.items())
        pooled = len(groups) > max_lines
        if pooled:
            groups = [((), ())]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        positions = np.asarray(xs, dtype=np.float64) if numeric else np.arange(len(xs), dtype=np.float64)
        order = np.argsort(positions)
        for keys, values in groups:
            means, stds = [], []
            for x in xs:
                picked = [float(r[metric]) for r in rows
                          if _setting_key(r[field]) == _setting_key(x)
                          and (pooled or tuple(_setting_key(r[o]) for o in others) == keys)
                          and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
                means.append(float(np.mean(picked)) if picked else np.nan)
                stds.append(float(np.std(picked)) if picked else np.nan)
            label = ", ".join(f"{o}={_setting_text(v)}" for o, v in zip(others, values, strict=True)) or None
            ax.errorbar(positions[order], np.asarray(means)[order], yerr=np.asarray(stds)[order], marker="o",
                        capsize=3, label=label)
        if numeric and positions.min() > 0 and positions.max() >= 20 * positions.min():
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(positions, labels=[_setting_text(x) for x in xs])
        ax.set_xlabel(field)
        ax.set_ylabel(metric)
        if pooled:
            ax.set_title(f"averaged over the other {len(others)} setting(s)", fontsize="small")
        elif others:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(title if title is not None else f"{metric}: mean ± std over seeds")
    _save(fig, path)
    return fig


# -- classifiers (JEM) ---------------------------------------------------------------


def plot_reliability_diagram(
    calibration: Mapping[str, Any],
    path: PathLike | None = None,
    *,
    title: str | None = None,
    ece: float | None = None,
) -> Figure:
    """A reliability diagram: accuracy against confidence per confidence bin.

    Args:
        calibration: per-bin ``lower``, ``upper``, ``count``, ``confidence``
            and ``accuracy`` (:func:`ebmkit.evaluate.classify.calibration_bins`,
            or the ``calibration`` entry of ``evaluate_classifier``).
        path: where to write the figure.
        title: the axes title.
        ece: the expected calibration error, shown in the title.

    Raises:
        ValueError: a missing key or bins of unequal lengths.
    """
    try:
        lower, upper, count, conf, acc = (
            np.asarray(calibration[k], np.float64) for k in ("lower", "upper", "count", "confidence", "accuracy")
        )
    except KeyError as exc:
        raise ValueError(f"plot_reliability_diagram: calibration has no {exc.args[0]!r} entry") from None
    if not (lower.shape == upper.shape == count.shape == conf.shape == acc.shape) or lower.ndim != 1:
        raise ValueError("plot_reliability_diagram: every per-bin entry must be a 1-D array of one length")
    fig = _figure(5.0, 5.6)
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    width = upper - lower
    used = count > 0
    ax.bar(lower[used], acc[used], width=width[used], align="edge", color="#1f77b4", edgecolor="white",
           label="accuracy")
    ax.bar(lower[used], conf[used], width=width[used], align="edge", fill=False, edgecolor="#d62728",
           linewidth=1.2, label="mean confidence")
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    text = "reliability diagram" if title is None else title
    if ece is not None:
        text += f" (ECE {ece:.3f})"
    ax.set_title(text)
    hist.bar(lower, count, width=width, align="edge", color="#7f7f7f", edgecolor="white")
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("count")
    _save(fig, path)
    return fig


def plot_class_densities(
    model: Any,
    bounds: Any = (-4, 4),
    resolution: int = 120,
    *,
    num_classes: int | None = None,
    data: Any = None,
    labels: Any = None,
    path: PathLike | None = None,
) -> Figure:
    """One panel per class: the class-conditional density ``p(x | y) ∝ exp(-E(x, y))``
    of a 2-D model with a conditional energy, normalised on the grid.

    Args:
        model: a 2-D :class:`~ebmkit.EBM` whose energy takes labels (``classifier``).
        bounds: the square or box to draw.
        resolution: grid points per axis.
        num_classes: ``K`` (default: the model's data).
        data, labels: optional points ``[M, 2]`` and their labels; each panel
            overlays the points of its class.
        path: where to write the figure.
    """
    from ebmkit.evaluate.classify import joint_scores

    if tuple(getattr(model, "event_shape", ())) != (2,):
        raise ValueError("plot_class_densities: needs a model of 2-D points (event_shape (2,))")
    k = num_classes if num_classes is not None else getattr(model.data, "num_classes", None)
    if k is None:
        raise ValueError("plot_class_densities: the number of classes is unknown; pass num_classes")
    (x_low, x_high), (y_low, y_high) = _box(bounds, "plot_class_densities")
    xs = np.linspace(x_low, x_high, int(resolution))
    ys = np.linspace(y_low, y_high, int(resolution))
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    neg_energy, _ = joint_scores(model, grid, int(k), 8192)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    cols = min(int(k), 4)
    rows = math.ceil(int(k) / cols)
    fig = _figure(2.6 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    d = None if data is None else _points(data, "plot_class_densities: data")
    lab = None if labels is None else np.asarray(labels)
    for c, ax in enumerate(axes):
        if c >= k:
            ax.axis("off")
            continue
        v = neg_energy[:, c]
        v = np.exp(v - v.max())
        v = (v / (v.sum() * cell)).reshape(gx.shape)
        ax.contourf(gx, gy, v, levels=20, cmap="magma")
        if d is not None and lab is not None:
            mine = d[lab == c][:300]
            ax.scatter(mine[:, 0], mine[:, 1], s=2, c="white", alpha=0.5, linewidths=0)
        ax.set_title(f"p(x | y = {c})", fontsize="small")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(x_low, x_high)
        ax.set_ylim(y_low, y_high)
    _save(fig, path)
    return fig
