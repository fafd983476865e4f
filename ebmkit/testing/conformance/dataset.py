"""Behaviour checks of a data set.

It builds from a context with only ``base_dir``, declares a known event shape,
modality and support, and samples finite float32 arrays (and labels, when it
has classes) reproducibly from a seeded Generator. A data set that needs an
optional dependency or a data file this environment lacks skips these checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.recorder import _Recorder, _require, _Skip
from ebmkit.types import BuildContext, Support


def _dataset_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    from ebmkit.data import Dataset

    dataset = None
    with rec.check("create(cfg, ctx) returns an ebmkit.data.Dataset", fatal=True):
        try:
            # A data set is built first: its context has only ``base_dir``.
            dataset = spec.create(cfg, BuildContext())
        except (ImportError, OSError) as exc:
            # Optional dependency or data file missing: the environment, not the
            # plugin. Spec checks above still ran.
            raise _Skip(
                f"behaviour checks skipped: building {spec.name!r} with its default config "
                f"needs something this environment lacks ({type(exc).__name__}: {exc})"
            ) from exc
        _require(isinstance(dataset, Dataset), f"got {type(dataset).__name__}")
    event = None
    with rec.check("event_shape is a tuple of positive ints; modality and support are known", fatal=True):
        event = dataset.event_shape
        _require(
            isinstance(event, tuple) and all(isinstance(d, int) and d > 0 for d in event),
            f"event_shape is {event!r}",
        )
        _require(dataset.modality in ("points", "image"), f"modality is {dataset.modality!r}")
        Support.parse(dataset.support)
        b = dataset.bounds
        _require(b is None or (len(b) == 2 and np.all(np.less(b[0], b[1]))), f"bounds is {b!r}, expected None or (low, high)")
    n = 16
    x = None
    with rec.check("sample(rng, n) is float32[n, *event_shape] and finite", fatal=True):
        x = dataset.sample(np.random.default_rng(0), n)
        _require(isinstance(x, np.ndarray), f"got {type(x).__name__}, expected a numpy array")
        _require(x.shape == (n, *event), f"shape {x.shape} != {(n, *event)}")
        _require(x.dtype == np.float32, f"dtype {x.dtype}")
        _require(np.all(np.isfinite(x)), "non-finite samples")
    with rec.check("sample is reproducible with the same Generator seed"):
        _require(np.array_equal(dataset.sample(np.random.default_rng(0), n), x), "same seed, different samples")
    if dataset.num_classes is not None:
        with rec.check("sample_labelled(rng, n) gives int labels in range(num_classes)"):
            k = dataset.num_classes
            _require(isinstance(k, int) and k >= 1, f"num_classes is {k!r}")
            xl, yl = dataset.sample_labelled(np.random.default_rng(0), n)
            _require(np.shape(xl) == (n, *event), f"x shape {np.shape(xl)} != {(n, *event)}")
            yl = np.asarray(yl)
            _require(yl.shape == (n,) and np.issubdtype(yl.dtype, np.integer), f"labels {yl.shape} {yl.dtype}")
            _require(np.all((yl >= 0) & (yl < k)), f"labels outside range({k}): {yl}")
    with rec.check("held_out(n) works and is reproducible"):
        held = dataset.held_out(8)
        _require(isinstance(held, np.ndarray), f"got {type(held).__name__}")
        _require(held.ndim == len(event) + 1 and held.shape[1:] == event, f"shape {held.shape}")
        _require(1 <= held.shape[0] <= 8, f"held_out(8) returned {held.shape[0]} rows")
        _require(held.dtype == np.float32 and np.all(np.isfinite(held)), "not finite float32")
        _require(np.array_equal(dataset.held_out(8), held), "two calls differ")
        if dataset.modality == "image":
            _require(held.min() >= -1 and held.max() <= 1, "image values outside [-1, 1]")
