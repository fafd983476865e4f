"""The density-estimation table: every loss on the six 2-D toys, beside a
128-component Gaussian mixture.

Each loss trains the toy's shipped recipe (``examples/<toy>.toml``: its
energy, walls, schedule and step count; its loss is ``ed``) with only the loss
swapped, ``ebmkit train examples/<toy>.toml --set loss=<loss>``; ``pcd`` is
the contrastive-divergence recipe ``examples/pcd/<toy>.toml`` as it ships
(its sampler, buffer and walls) and ``cd`` the same with chains started at
the data (``--set loss=cd --set buffer=none``), and ``dsm``/``ssm`` get SiLU where the
recipe's activation is piecewise linear. Each run is scored like ``benchmarks.quality``: the full-plane KL gap
(held-out NLL on 20,000 points of a fixed seed − the true entropy), the mass
outside the box and the wall time. In the same process, the baseline a user
would reach for instead: scikit-learn's ``GaussianMixture`` (full covariance,
128 components) fitted on 50,000 training draws and scored on the same
held-out points.

    python -m benchmarks.losses                              # 6 toys x 5 losses x 3 seeds
    python -m benchmarks.losses --toys moons --losses nce,ed --seeds 0

Prints JSON (one object per run, then a summary) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

from benchmarks.quality import TOYS, run_toy  # noqa: E402

LOSSES = ("pcd", "cd", "dsm", "ssm", "nce", "ed")
GMM_COMPONENTS = 128
GMM_TRAIN = 50_000


def gmm_baseline(toy: str, seed: int = 0) -> dict:
    """A full-covariance 128-component mixture fitted on 50,000 draws, scored
    on the evaluator's held-out points."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    import ebmkit
    from ebmkit.components import build_dataset

    dataset = build_dataset(ebmkit.load_config(dataset=toy).dataset)
    train = dataset.sample(np.random.default_rng(1000 + seed), GMM_TRAIN).astype(np.float64)
    start = time.perf_counter()
    gmm = GaussianMixture(GMM_COMPONENTS, covariance_type="full", random_state=seed).fit(train)
    wall = time.perf_counter() - start
    nll = -float(np.mean(gmm.score_samples(np.asarray(dataset.held_out(20_000), np.float64))))
    return {"toy": toy, "loss": "gmm128", "seed": seed, "kl_gap": nll - dataset.entropy, "tail_mass": float("nan"),
            "wall_s": wall, "steps": int(gmm.n_iter_), "decayed": True}


#: Score matching needs the energy's second derivatives (ssm's trace term,
#: dsm's gradient of a gradient): with a piecewise-linear activation they vanish
#: and the loss sees only the gradient's size. Those runs get SiLU instead.
SCORE_LOSSES = ("dsm", "ssm")
PIECEWISE_LINEAR = ("relu", "leaky_relu")


def run_loss(toy: str, loss: str, seed: int, overrides: list[str]) -> dict:
    import ebmkit
    from benchmarks.quality import ROOT

    if loss in ("pcd", "cd"):
        # The contrastive-divergence recipes; cd starts its chains at the data (no buffer).
        sets = list(overrides) if loss == "pcd" else ["loss=cd", "buffer=none", *overrides]
        row = run_toy(toy, seed=seed, overrides=sets, recipes="examples/pcd")
        return {"loss": loss, **row, "overrides": sets}
    sets = [f"loss={loss}", *overrides]
    if loss in SCORE_LOSSES:
        recipe = ebmkit.load_config(ROOT / "examples" / f"{toy}.toml", overrides=sets)
        if getattr(recipe.energy, "activation", None) in PIECEWISE_LINEAR:
            sets.append("energy.activation=silu")
    row = run_toy(toy, seed=seed, overrides=sets)
    return {"loss": loss, **row, "overrides": sets}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for toy, loss in dict.fromkeys((r["toy"], r["loss"]) for r in rows):
        mine = [r for r in rows if r["toy"] == toy and r["loss"] == loss]
        gaps = [r["kl_gap"] for r in mine]
        out.append({
            "toy": toy,
            "loss": loss,
            "seeds": len(mine),
            "kl_gap_mean": statistics.fmean(gaps),
            "kl_gap_std": statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
            "tail_mass_max": max(r["tail_mass"] for r in mine),
            "all_decayed": all(r["decayed"] for r in mine),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
        })
    return out


def markdown(summary: list[dict]) -> str:
    losses = list(dict.fromkeys(s["loss"] for s in summary))
    toys = list(dict.fromkeys(s["toy"] for s in summary))
    cell = {(s["toy"], s["loss"]): s for s in summary}
    lines = ["| toy | " + " | ".join(losses) + " | best loss vs gmm128 |", "|---" * (len(losses) + 2) + "|"]
    for toy in toys:
        cells = []
        for loss in losses:
            s = cell.get((toy, loss))
            if s is None:
                cells.append("—")
                continue
            tail = "" if loss == "gmm128" else f", tail {s['tail_mass_max']:.0e}"
            decay = "" if s["all_decayed"] else " (lower bound)"
            cells.append(f"{s['kl_gap_mean']:.3f} ± {s['kl_gap_std']:.3f}{decay} ({s['wall_s_mean']:.0f} s{tail})")
        ours = [cell[(toy, loss)] for loss in losses if loss != "gmm128" and (toy, loss) in cell]
        verdict = "—"
        if ours and (toy, "gmm128") in cell:
            best = min(ours, key=lambda s: s["kl_gap_mean"])
            ref = cell[(toy, "gmm128")]["kl_gap_mean"]
            verdict = f"{best['loss']} {best['kl_gap_mean'] - ref:+.3f} ({'at or below' if best['kl_gap_mean'] <= ref else 'above'})"
        lines.append(f"| {toy} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", default=",".join(TOYS))
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-gmm", dest="gmm", action="store_false", help="skip the mixture baseline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for toy in args.toys.split(","):
        if args.gmm:
            for seed in seeds:
                row = gmm_baseline(toy, seed)
                print(json.dumps(row), flush=True)
                rows.append(row)
        for loss in args.losses.split(","):
            for seed in seeds:
                row = run_loss(toy, loss, seed, args.overrides)
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = summarise(rows)
    print(json.dumps({"summary": summary}))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
