"""Learning quality on the six FFJORD 2-D toys: the KL gap against the truth.

For each toy, the recipe in ``examples/<toy>.toml`` is trained from three seeds
through the public Trainer. The score is the KL gap = NLL on 20,000 held-out
points (a fixed seed) under the model normalised over the whole plane − the
toy's true differential entropy, in nats. Beside it: ``tail_mass``, the share
of the model's mass outside the data box, and the box-only KL gap (the density
truncated to the box, what the first evaluator reported), so a box that cuts
off mass cannot flatter the number.

    python -m benchmarks.quality                 # all toys, 3 seeds each
    python -m benchmarks.quality --toys rings --seeds 0

Prints JSON (one object per run, then a summary) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

ROOT = Path(__file__).resolve().parents[1]
TOYS = ("8gaussians", "2spirals", "checkerboard", "rings", "moons", "pinwheel")
TARGET = 0.05  # nats, mean over seeds
BUDGET_S = 300.0  # training wall time per toy and seed on 2 CPU cores


def run_toy(
    name: str,
    seconds: float | None = None,
    *,
    seed: int = 0,
    overrides: list[str] | None = None,
    long_run_steps: int = 0,
    recipes: Path | str = "examples",
) -> dict:
    """Train ``<recipes>/<name>.toml`` once and score it.

    Args:
        name: a toy data set name.
        seconds: if set, cap ``train.steps`` so that training fits in about this
            many seconds (from a short timing run); the quick benchmark uses it.
        seed: ``train.seed``.
        overrides: extra ``--set`` strings.
        long_run_steps: if set, run the long-run check with chains this long
            (20,000 chains from the buffer and from noise): total-variation
            distance to the model's density, its exact-draw floor, escapes.
        recipes: the folder of the recipes, relative to the repository
            (``examples/pcd`` for the contrastive-divergence ones).
    """
    import ebmkit
    from ebmkit.components import build_dataset, data_context
    from ebmkit.training import Trainer

    sets = [f"train.seed={seed}", "train.checkpoint_every=0", *(overrides or [])]
    config = ebmkit.load_config(ROOT / recipes / f"{name}.toml", overrides=sets)
    if seconds is not None:
        steps = _steps_for(config, seconds)
        if steps < config.train.steps:
            config = ebmkit.load_config(config, overrides=[f"train.steps={steps}", f"train.log_every={max(1, steps // 10)}"])
    dataset = build_dataset(config.dataset)
    model = ebmkit.EBM(config, data=data_context(dataset))
    start = time.perf_counter()
    result = Trainer(model, dataset, hooks=False).fit()
    wall = time.perf_counter() - start
    s = result.summary
    long_run = long_run_figures(model, dataset, long_run_steps, seed=seed) if long_run_steps else {}
    return {
        "toy": name,
        "seed": seed,
        "steps": result.step,
        "kl_gap": s["kl_gap"],
        "kl_gap_box": s["kl_gap_box"],
        "tail_mass": s["tail_mass"],
        "decayed": bool(s["decayed"]),
        "nll": s["nll"],
        "entropy": s["entropy"],
        "edge_mass": s["edge_mass"],
        "grid_error": s["grid_error"],
        "steps_per_s": s["steps_per_s"],
        "wall_s": wall,
        # train.ema_decay: the figures above are the parameter EMA's; these the live parameters'.
        **{key: s[key] for key in ("live_kl_gap", "live_kl_gap_box", "live_tail_mass") if key in s},
        **long_run,
    }


def long_run_figures(model, dataset, steps: int, *, seed: int = 0) -> dict:
    """The long-run check's figures for the benchmark tables: ``{start}_tv``,
    ``{start}_tv_floor`` and ``{start}_escape_fraction`` for the model's own
    sampler from the buffer and from noise (20,000 chains; from noise only
    when the run has no buffer), and ``rx_...`` for replica exchange from the
    buffer, or from noise without one (4,000 chains: 8 replicas cost what
    32,000 Langevin chains do), each ``steps`` long. A model whose own sampler
    is replica exchange gets that one run, as ``rx_...``."""
    from ebmkit.evaluate import long_run_check
    from ebmkit.evaluate.long_run import sampler_for
    from ebmkit.registry import spec_of

    has_buffer = model.config.buffer is not None
    own_rx = spec_of(model.config.sampler).name == "replica_exchange"
    rx_start = "buffer" if has_buffer else "noise"
    figures = {}
    runs = []
    if not own_rx:
        runs.append(("", long_run_check(model, dataset, steps=(steps,), num_chains=20_000, seed=seed,
                                        starts=("buffer", "noise") if has_buffer else ("noise",))))
    # The convergent procedure `ebmkit sample --sampler replica_exchange` uses.
    runs.append(("rx", long_run_check(model, dataset, steps=(steps,), num_chains=4_000, seed=seed,
                                      sampler=sampler_for(model, "replica_exchange"), starts=(rx_start,))))
    for prefix, check in runs:
        for row in check["runs"]:
            for key in ("tv", "tv_floor", "escape_fraction"):
                figures[f"{prefix or row['start']}_{key}"] = row[key]
    return figures


def _steps_for(config, seconds: float) -> int:
    """Steps that fit in ``seconds``, from the measured speed of 50 steps."""
    import ebmkit
    from ebmkit.components import build_dataset, data_context
    from ebmkit.training import Trainer

    probe = ebmkit.load_config(config, overrides=["train.steps=60", "train.log_every=20"])
    dataset = build_dataset(probe.dataset)
    model = ebmkit.EBM(probe, data=data_context(dataset))
    trainer = Trainer(model, dataset, hooks=False)
    trainer.fit()
    rate = trainer.history[-1]["steps_per_s"]
    return max(100, int(rate * seconds * 0.9))


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for toy in dict.fromkeys(r["toy"] for r in rows):
        mine = [r for r in rows if r["toy"] == toy]
        gaps = [r["kl_gap"] for r in mine]
        out.append(
            {
                "toy": toy,
                "seeds": len(mine),
                "kl_gap_mean": statistics.fmean(gaps),
                "kl_gap_std": statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
                "kl_gap_box_mean": statistics.fmean(r["kl_gap_box"] for r in mine),
                "tail_mass_max": max(r["tail_mass"] for r in mine),
                "all_decayed": all(r["decayed"] for r in mine),
                "edge_mass_max": max(r["edge_mass"] for r in mine),
                "grid_error_max": max(r["grid_error"] for r in mine),
                "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
                "steps": mine[0]["steps"],
                "entropy": mine[0]["entropy"],
                "meets_target": statistics.fmean(gaps) <= TARGET and max(r["wall_s"] for r in mine) <= BUDGET_S,
            }
        )
        for start in ("buffer", "noise", "rx"):
            checked = [r for r in mine if f"{start}_tv" in r]  # the long-run check may run on one seed only
            if checked:
                out[-1][f"{start}_tv_excess_max"] = max(r[f"{start}_tv"] - r[f"{start}_tv_floor"] for r in checked)
                out[-1][f"{start}_escape_max"] = max(r[f"{start}_escape_fraction"] for r in checked)
    return out


def markdown(summary: list[dict]) -> str:
    lines = [
        "| toy | entropy (nats) | full-plane KL gap mean ± std | mass outside the box (max) | box-only KL gap (mean) "
        "| grid error (max) | steps | wall s (mean) | ≤ 0.05 in 5 min "
        "| long run from buffer: TV − floor, escapes (max) | from noise | replica exchange from buffer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        decay = "" if s["all_decayed"] else " (not decayed: lower bound)"
        lines.append(
            f"| {s['toy']} | {s['entropy']:.4f} | {s['kl_gap_mean']:.3f} ± {s['kl_gap_std']:.3f}{decay} | "
            f"{s['tail_mass_max']:.4f} | {s['kl_gap_box_mean']:.3f} | {s['grid_error_max']:.1e} | {s['steps']} | "
            f"{s['wall_s_mean']:.0f} | {'yes' if s['meets_target'] else 'no'} | "
            f"{_long_run_cell(s, 'buffer')} | {_long_run_cell(s, 'noise')} | {_long_run_cell(s, 'rx')} |"
        )
    return "\n".join(lines)


def _long_run_cell(s: dict, start: str) -> str:
    if f"{start}_tv_excess_max" not in s:
        return "—"
    return f"{s[f'{start}_tv_excess_max']:+.3f}, {s[f'{start}_escape_max']:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", default=",".join(TOYS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--seconds", type=float, default=None, help="cap training time per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--recipes", default="examples", help="folder of <toy>.toml recipes (e.g. examples/pcd)")
    parser.add_argument("--long-run", type=int, default=1000, help="long-run check chain length (0: skip)")
    parser.add_argument("--long-run-every-seed", dest="long_run_first_seed_only", action="store_false",
                        help="run the long-run check after every seed (default: the first seed only)")
    args = parser.parse_args(argv)
    first_seed = int(args.seeds.split(",")[0])
    rows = []
    for toy in args.toys.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            long_run = args.long_run if (seed == first_seed or not args.long_run_first_seed_only) else 0
            row = run_toy(toy, args.seconds, seed=seed, overrides=args.overrides, long_run_steps=long_run,
                          recipes=args.recipes)
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = summarise(rows)
    print(json.dumps({"summary": summary}))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
