"""Scaling: how one training step's time grows with batch, K, input dimension and width.

    python -m benchmarks.bench_scaling            # ~3-4 min
    python -m benchmarks.bench_scaling --quick    # fewer points, ~1 min

The step is ebmkit's compiled PCD training step (``model.train_step_fn()``:
buffer draw, K Langevin steps, loss and gradients, Adam, buffer write-back)
around the default assembly (MLP 2-128-128-1 SiLU, K = 20, batch 256,
replay 10,000), with one setting varied at a time:

* batch size 64 ... 4096;
* chain length K 5 ... 200;
* input dimension 2 ... 3072 (Gaussian data of that dimension);
* network width w (hidden layers w, w) 32 ... 512.

The points of one axis are timed round-robin; each point's time is the best
of ``--repeats`` rounds of several steps. Reported per axis: the exponent of a
least-squares fit of log(time) against log(setting) over the whole range, the
local exponents between neighbouring points, and a flag where a local
exponent exceeds 1.1 (super-linear). Width is expected to approach 2 (the
hidden w x w matmul); the others should stay at or below 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ebmkit  # noqa: E402

AXES = {
    "batch": [64, 128, 256, 512, 1024, 2048, 4096],
    "K": [5, 10, 20, 50, 100, 200],
    "dim": [2, 16, 64, 256, 784, 3072],
    "width": [32, 64, 128, 256, 512],
}
QUICK_AXES = {
    "batch": [64, 256, 1024, 4096],
    "K": [5, 20, 80, 200],
    "dim": [2, 64, 784, 3072],
    "width": [32, 128, 512],
}
DEFAULTS = {"batch": 256, "K": 20, "dim": 2, "width": 128}
SUPER_LINEAR = 1.1


def step_case(batch: int, num_steps: int, dim: int, width: int, target_s: float) -> Callable[[], Any]:
    """A callable that runs ``n`` compiled training steps; ``n`` makes a call last ~``target_s``."""
    model = ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": [width, width]},
        sampler={"name": "langevin", "num_steps": num_steps},
        buffer={"name": "replay", "capacity": max(10_000, batch)},
        train={"batch_size": batch},
        event_shape=(dim,),
    )
    step = model.train_step_fn()
    box = {"state": jax.tree.map(jnp.copy, model.train_state())}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, dim)).astype(np.float32))
    box["state"], _ = step(box["state"], x)  # compile
    jax.block_until_ready(box["state"])
    t0 = time.perf_counter()
    box["state"], _ = step(box["state"], x)
    jax.block_until_ready(box["state"])
    n = max(1, round(target_s / max(time.perf_counter() - t0, 1e-6)))

    def run() -> None:
        state = box["state"]
        for _ in range(n):
            state, _ = step(state, x)
        box["state"] = jax.block_until_ready(state)

    run.steps = n  # type: ignore[attr-defined]
    return run


def analyse(values: list[int], seconds: list[float]) -> dict[str, Any]:
    local = [
        math.log(seconds[i + 1] / seconds[i]) / math.log(values[i + 1] / values[i]) for i in range(len(values) - 1)
    ]
    return {
        "exponent": _common.fit_exponent(values, seconds),
        "exponent_upper_half": _common.fit_exponent(values[len(values) // 2:], seconds[len(values) // 2:])
        if len(values) >= 4 else math.nan,
        "local_exponents": local,
        "super_linear": [
            f"{values[i]}->{values[i + 1]}: {e:.2f}" for i, e in enumerate(local) if e > SUPER_LINEAR
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axes", default="batch,K,dim,width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=0.25, help="seconds per timed call")
    parser.add_argument("--quick", action="store_true", help="fewer points per axis")
    parser.add_argument("--points", default=None,
                        help="override the points of every chosen axis, e.g. '64,128' (for smoke tests)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    table = QUICK_AXES if args.quick else AXES

    results: dict[str, Any] = {}
    rows = []
    for axis in args.axes.split(","):
        values = [int(v) for v in args.points.split(",")] if args.points else table[axis]
        _common.log(f"bench_scaling: {axis} {values}")
        cases = {}
        for v in values:
            setting = {**DEFAULTS, axis: v}
            cases[v] = step_case(setting["batch"], setting["K"], setting["dim"], setting["width"], args.target_s)
        times = _common.alternate({str(v): fn for v, fn in cases.items()}, args.repeats, warmup=0)
        per_step = [min(times["wall"][str(v)]) / cases[v].steps for v in values]
        per_step_cpu = [min(times["cpu"][str(v)]) / cases[v].steps for v in values]
        fit = analyse(values, per_step)
        results[axis] = {
            "values": values,
            "step_ms_best": [1e3 * s for s in per_step],
            "step_ms_best_cpu": [1e3 * s for s in per_step_cpu],
            **fit,
            "exponent_cpu": _common.fit_exponent(values, per_step_cpu),
        }
        for v, s in zip(values, per_step, strict=True):
            rows.append([axis, v, 1e3 * s])
    summary = [
        [axis, r["exponent"], r["exponent_upper_half"], r["exponent_cpu"],
         "; ".join(r["super_linear"]) or "none"]
        for axis, r in results.items()
    ]
    tables = [
        _common.markdown_table(["axis", "value", "ms per training step (best)"], rows),
        _common.markdown_table(
            ["axis", "fitted exponent", "exponent, upper half", "exponent (CPU time)", "super-linear steps (> 1.1)"],
            summary,
        ),
    ]
    return _common.emit(
        "bench_scaling",
        {"settings": {**vars(args), "defaults": DEFAULTS}, "axes": results},
        tables,
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
