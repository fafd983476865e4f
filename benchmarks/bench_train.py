"""Training throughput: ebmkit's public ``Trainer`` against a hand-written PCD step.

    python -m benchmarks.bench_train              # full run (~2-3 min)
    python -m benchmarks.bench_train --quick      # ~1 min

ebmkit side: the default assembly (MLP 2-128-128-1 SiLU, Langevin K=20, PCD,
replay buffer of 10,000, Adam 1e-3, batch 256, 8gaussians) trained by
``Trainer(model, dataset).fit()`` with ``steps_per_call`` = 1 and larger
values. Each timed round extends ``train.steps`` by ``--steps`` and calls
``fit()`` again on the same trainer (compiled once); the wall time of the whole
``fit()`` call counts, so host-side data sampling, transfers, metric fetches,
the divergence check and the in-memory checkpoint snapshots are all included.

Reference: the simplest fully-jitted plain JAX + optax PCD step a competent
engineer would write: the replay buffer is one array, the data an on-device
pool of 100,000 points indexed at random, K Langevin steps in ``lax.scan``,
``jax.random.normal`` with JAX's default key, the same loss (contrastive + 0.1
energy-magnitude regulariser), ``optax.adam(1e-3)``, a Python loop over the
jitted step (state donated). "reference (scan S)" also fuses S steps per call.

"ebmkit guide path" is the seed guide's documented loop, ``for batch in
loader: model.train_step(batch)``, on a model assembled with the same
settings; the loader hands over device arrays drawn beforehand from the same
100,000-point pool (the reference draws its batch inside its step), so what
is timed is the model's own per-call work.

Every case is timed round-robin in one process; the ratio is reference time /
ebmkit time per round (> 1: ebmkit faster).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import attrs  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import ebmkit  # noqa: E402
from benchmarks.bench_sample import init_mlp, mlp_energy  # noqa: E402  (the same reference MLP)
from ebmkit.components import build_dataset  # noqa: E402
from ebmkit.training import Trainer  # noqa: E402

# -- the hand-written reference ------------------------------------------------------------


class RefState(NamedTuple):
    params: Any
    opt_state: Any
    buffer: jax.Array
    rng_key: jax.Array


def make_reference(
    *,
    dims: tuple[int, ...],
    batch_size: int,
    num_steps: int,
    step_size: float,
    capacity: int,
    reinit_prob: float,
    alpha: float,
    learning_rate: float,
    low: float,
    high: float,
    data: jax.Array,
    seed: int = 0,
):
    """``(init_state, step, scanned_step)`` of a plain JAX + optax PCD trainer."""
    tx = optax.adam(learning_rate)
    noise_scale = float(np.sqrt(2 * step_size))
    dim = dims[0]

    def init_state() -> RefState:
        k_params, k_buffer, k_run = jax.random.split(jax.random.key(seed), 3)
        params = init_mlp(k_params, dims)
        buffer = jax.random.uniform(k_buffer, (capacity, dim), minval=low, maxval=high)
        return RefState(params, tx.init(params), buffer, k_run)

    def step(state: RefState) -> tuple[RefState, jax.Array]:
        key, k_data, k_slot, k_reinit, k_fresh, k_chain = jax.random.split(state.rng_key, 6)
        x_pos = data[jax.random.randint(k_data, (batch_size,), 0, data.shape[0])]
        slots = jax.random.randint(k_slot, (batch_size,), 0, capacity)
        fresh = jax.random.uniform(k_fresh, (batch_size, dim), minval=low, maxval=high)
        restart = jax.random.bernoulli(k_reinit, reinit_prob, (batch_size, 1))
        x = jnp.where(restart, fresh, state.buffer[slots])
        grad_energy = jax.grad(lambda y: mlp_energy(state.params, y).sum())

        def langevin(x, k):
            return x - step_size * grad_energy(x) + noise_scale * jax.random.normal(k, x.shape), None

        x_neg, _ = jax.lax.scan(langevin, x, jax.random.split(k_chain, num_steps))
        x_neg = jax.lax.stop_gradient(x_neg)

        def loss_fn(params):
            e_pos, e_neg = mlp_energy(params, x_pos), mlp_energy(params, x_neg)
            return e_pos.mean() - e_neg.mean() + alpha * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        buffer = state.buffer.at[slots].set(x_neg)
        return RefState(params, opt_state, buffer, key), loss

    def scanned(state: RefState, n: int) -> tuple[RefState, jax.Array]:
        return jax.lax.scan(lambda s, _: step(s), state, None, length=n)

    return init_state, jax.jit(step, donate_argnums=0), jax.jit(scanned, static_argnums=1, donate_argnums=0)


# -- the ebmkit side ------------------------------------------------------------------------


class TrainerCase:
    """One ``Trainer`` (compiled once); each call trains ``steps`` more steps via ``fit()``."""

    def __init__(self, steps_per_call: int, steps: int, overrides: dict[str, Any]):
        self.steps = steps
        self.model = ebmkit.assemble(train={"steps_per_call": steps_per_call, **overrides.get("train", {})},
                                     **{k: v for k, v in overrides.items() if k != "train"})
        self.dataset = build_dataset(self.model.config.dataset)
        # No evaluation (the default computes a grid NLL at the end of fit),
        # no third-party hooks: this is about the training loop's speed.
        self.trainer = Trainer(self.model, self.dataset, hooks=False, evaluate=lambda _trainer: {})
        self.last_reported: float = float("nan")

    def __call__(self) -> None:
        t = self.trainer
        t.train = attrs.evolve(t.train, steps=t.step + self.steps)
        result = t.fit()
        rows = [r["steps_per_s"] for r in result.history[-max(1, self.steps // t.train.log_every):]]
        self.last_reported = float(rows[-1]) if rows else float("nan")
        jax.block_until_ready(t.state)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--spc", default="1,10,50", help="steps_per_call values for the Trainer")
    parser.add_argument("--ref-scan", type=int, default=50, help="steps fused per call in 'reference (scan S)'; 0: skip")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--num-steps", type=int, default=20, help="K, Langevin steps per update")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--no-guide", dest="guide", action="store_false",
                        help="skip the guide path (model.train_step in a Python loop)")
    parser.add_argument("--no-host-data", dest="host_data", action="store_false",
                        help="skip the Trainer row that draws batches on the host (data_on_device = never)")
    parser.add_argument("--quick", action="store_true", help="--steps 100 --repeats 3 --spc 1,50")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.spc = 100, 3, "1,50"
    spcs = [int(s) for s in args.spc.split(",")]
    hidden = tuple(int(h) for h in args.hidden.split(","))
    for s in spcs + ([args.ref_scan] if args.ref_scan else []):
        if args.steps % s:
            parser.error(f"--steps {args.steps} must be a multiple of every steps_per_call ({s})")

    overrides = {
        "energy": {"name": "mlp", "hidden_dims": list(hidden), "activation": "silu"},
        "sampler": {"name": "langevin", "num_steps": args.num_steps},
        "train": {"batch_size": args.batch},
    }
    cases: dict[str, Callable[[], Any]] = {}
    trainers: dict[str, TrainerCase] = {}

    # Reference, built from the same settings ebmkit's defaults resolve to.
    probe = ebmkit.assemble(**{k: v for k, v in overrides.items() if k != "train"},
                            train={"batch_size": args.batch})
    cfg = probe.config
    dataset = build_dataset(cfg.dataset)
    low, high = dataset.bounds
    pool = jnp.asarray(dataset.sample(np.random.default_rng(0), 100_000))
    init_state, ref_step, ref_scan = make_reference(
        dims=(2, *hidden, 1), batch_size=cfg.train.batch_size, num_steps=cfg.sampler.num_steps,
        step_size=cfg.sampler.step_size, capacity=cfg.buffer.capacity, reinit_prob=cfg.buffer.reinit_prob,
        alpha=cfg.loss.alpha, learning_rate=cfg.train.learning_rate, low=low, high=high, data=pool,
    )
    settings = {
        "energy": f"mlp {(2, *hidden, 1)} silu", "sampler": f"langevin K={cfg.sampler.num_steps} "
        f"step_size={cfg.sampler.step_size} prng={getattr(cfg.sampler, 'prng', 'n/a')}",
        "loss": f"pcd alpha={cfg.loss.alpha}", "buffer": f"replay {cfg.buffer.capacity} reinit {cfg.buffer.reinit_prob}",
        "optimizer": f"{cfg.train.optimizer} {cfg.train.learning_rate}", "batch": cfg.train.batch_size,
        "dataset": dataset.name, "steps_per_round": args.steps, "repeats": args.repeats,
    }
    ref_box = {"state": init_state()}

    def run_reference() -> None:
        state = ref_box["state"]
        for _ in range(args.steps):
            state, loss = ref_step(state)
        ref_box["state"] = jax.block_until_ready(state)

    cases["reference (1 step/call)"] = run_reference
    if args.ref_scan:
        scan_box = {"state": init_state()}

        def run_reference_scan() -> None:
            state = scan_box["state"]
            for _ in range(args.steps // args.ref_scan):
                state, losses = ref_scan(state, args.ref_scan)
            scan_box["state"] = jax.block_until_ready(state)

        cases[f"reference (scan {args.ref_scan})"] = run_reference_scan

    if args.guide:
        guide_model = ebmkit.assemble(**{k: v for k, v in overrides.items() if k != "train"},
                                      train={"batch_size": args.batch})
        rng = np.random.default_rng(1)
        loader = [pool[rng.integers(0, pool.shape[0], args.batch)] for _ in range(args.steps)]
        jax.block_until_ready(guide_model.train_step(loader[0]))  # compile

        def run_guide() -> None:
            metrics = None
            for batch in loader:
                metrics = guide_model.train_step(batch)
            jax.block_until_ready(metrics)
            jax.block_until_ready(guide_model.train_state())

        cases["ebmkit guide path (model.train_step)"] = run_guide

    for spc in spcs:
        _common.log(f"bench_train: compiling Trainer steps_per_call={spc}")
        trainers[f"ebmkit Trainer (steps_per_call={spc})"] = TrainerCase(spc, args.steps, overrides)
    if args.host_data:
        # The same Trainer drawing its batches with numpy on the host and
        # handing them over per call (train.data_on_device = "never").
        host = {**overrides, "train": {**overrides["train"], "data_on_device": "never"}}
        trainers["ebmkit Trainer (steps_per_call=1, host data)"] = TrainerCase(1, args.steps, host)
    cases.update(trainers)

    _common.log("bench_train: timing")
    times = _common.alternate(cases, args.repeats)
    summary = _common.summarize(times, args.steps, reference="reference (1 step/call)")
    for name, case in trainers.items():
        summary[name]["trainer_reported_steps_per_s_last_round"] = case.last_reported

    guide = "ebmkit guide path (model.train_step)"
    # The targets are about the Trainer as it runs by default (the host-data
    # row is the comparison that shows what drawing on the device buys).
    ebm_names = [n for n in trainers if "host data" not in n]
    best = max(ebm_names, key=lambda n: summary[n]["wall"]["rate_median"])
    spc1 = next((n for n in ebm_names if n.endswith("=1)")), None)
    targets = {
        "spc1_vs_reference": summary[spc1]["speed_vs_reference"] if spc1 else None,
        "spc1_target": 1.0,
        "best_case": best,
        "best_vs_reference": summary[best]["speed_vs_reference"],
        "best_target": 1.2,
        "guide_vs_reference": summary[guide]["speed_vs_reference"] if guide in summary else None,
        "guide_target": 1.0,
    }
    rows = []
    for name, c in summary.items():
        speed = c.get("speed_vs_reference")
        rows.append([
            name, c["wall"]["rate_median"], c["wall"]["rate_best"],
            speed["wall"]["median"] if speed else "", speed["cpu"]["median"] if speed else "",
            c.get("trainer_reported_steps_per_s_last_round", ""),
        ])
    table = _common.markdown_table(
        ["who", "steps/s median", "steps/s best", "× ref (wall, median of rounds)", "× ref (CPU time)",
         "Trainer's own steps_per_s"],
        rows,
    )
    return _common.emit(
        "bench_train",
        {"settings": settings, "cases": summary, "targets": targets, "raw_seconds": times},
        [table],
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
