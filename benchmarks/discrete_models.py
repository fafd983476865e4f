"""Discrete EBMs trained end to end: RBMs on binarised digits, an Ising model on lattice data.

    python -m benchmarks.discrete_models                      # all cases (~minutes on 2 cores)
    python -m benchmarks.discrete_models --cases rbm16 --steps 500

Each case is an ordinary ``ebmkit train`` run (``train_job``, no plots) and
reports what its summary reports. Every case trains by maximum likelihood:
``pcd`` with ``alpha = 0`` (the default energy-magnitude penalty,
``alpha = 0.1``, shrinks the energy: an Ising model fitted with it learns
couplings about a quarter of the true ones).

* ``rbm16``: ``rbm`` with 16 hidden units on ``binary_digits`` (dynamic
  binarisation), ``gibbs`` with ``pcd``, one block-Gibbs update (hidden, then
  visible layer) per training step: the held-out
  NLL in nats per image is **exact** (the hidden layer is enumerated). An
  untrained RBM is uniform: 64 ln 2 = 44.36 nats.
* ``rbm64``: the same with 64 hidden units: the NLL comes from block-Gibbs
  AIS (1,000 temperatures, a stochastic lower bound on ``log Z``, so the NLL
  is optimistic by its bias; ``log_z_stderr`` beside it).
* ``ising``: the ``ising`` energy (lattice couplings) on ``ising`` data
  (10 × 10, coupling 0.25), ``gibbs`` (one single-site sweep per step) +
  ``pcd``: the RMSE of the learned
  couplings against the true ones over all pairs ``i < j``, and its log. The
  untrained model's RMSE is beside it.

Thread pinning as every benchmark here (``benchmarks._common.pin_threads``).
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
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

from ebmkit.job import train_job  # noqa: E402

CASES: dict[str, dict[str, Any]] = {
    "rbm16": {
        "dataset": "binary_digits",
        "energy": {"name": "rbm", "hidden": 16},
        "sampler": {"name": "gibbs", "num_steps": 1},
        "loss": {"name": "pcd", "alpha": 0.0},
        "buffer": {"name": "replay", "capacity": 1000},
        "train": {"batch_size": 64, "learning_rate": 0.01},
    },
    "rbm64": {
        "dataset": "binary_digits",
        "energy": {"name": "rbm", "hidden": 64},
        "sampler": {"name": "gibbs", "num_steps": 1},
        "loss": {"name": "pcd", "alpha": 0.0},
        "buffer": {"name": "replay", "capacity": 1000},
        "train": {"batch_size": 64, "learning_rate": 0.01},
    },
    "ising": {
        "dataset": {"name": "ising", "size": 10, "coupling": 0.25},
        "energy": {"name": "ising", "init_scale": 0.0},
        "sampler": {"name": "gibbs", "num_steps": 1},
        "loss": {"name": "pcd", "alpha": 0.0},
        "buffer": {"name": "replay", "capacity": 2000},
        "train": {"batch_size": 256, "learning_rate": 0.001},
    },
}


def run_case(name: str, steps: int, seed: int) -> dict[str, Any]:
    config = {**CASES[name], "train": {**CASES[name]["train"], "steps": steps, "seed": seed, "log_every": max(1, steps // 4)}}
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_job(config, out=Path(tmp) / name, plots=False)
    keys = ("nll", "nll_exact", "log_z_stderr", "coupling_rmse", "coupling_log_rmse", "steps_per_s", "wall_time_s")
    out = {k: summary.get(k, float("nan")) for k in keys}
    if name == "ising":
        out["untrained_rmse"] = 0.25 * math.sqrt(200 / (100 * 99 / 2))  # zero couplings: 200 edges of 0.25
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    for name in args.cases:
        _common.log(f"{name}: {args.steps} steps")
        results[name] = run_case(name, args.steps, args.seed)
    rows = [
        [name, args.steps, r["nll"], r["nll_exact"], r["log_z_stderr"], r["coupling_rmse"],
         r.get("untrained_rmse", float("nan")), r["steps_per_s"]]
        for name, r in results.items()
    ]
    table = _common.markdown_table(
        ["case", "steps", "NLL (nats)", "exact", "log Z stderr", "coupling RMSE", "untrained RMSE", "steps/s"], rows
    )
    return _common.emit("discrete_models", {"steps": args.steps, "results": results}, [table])


if __name__ == "__main__":
    main()
