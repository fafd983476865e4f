"""JEM (issue 17): a classifier that is also an energy-based model, on a 2-D
toy and on scikit-learn's digits, against the same network trained by
cross-entropy alone.

Every run goes through ``ebmkit.job.train_job`` (what ``ebmkit train`` runs),
so the figures are the ones a labelled run's ``summary.json`` holds:

- **toy** (``8gaussians`` and ``moons`` by default): accuracy of the
  ``classifier`` energy trained with ``loss = "jem"``, next to the
  Bayes-optimal accuracy computed by Monte Carlo from the toy's true
  class-conditional densities, and the per-class densities ``p(x | y)``;
- **digits**: ``loss = "jem"`` (PCD on log p(x) + cross-entropy) and the
  same network and steps with ``loss.weight_px = 0`` (cross-entropy alone):
  test accuracy, expected calibration error (15 bins), ``-log p(y|x)``, and
  the OOD AUROC of ``log p(x) = -E(x)`` against Gaussian-noise, blurred,
  inverted and rotated test digits; reliability diagrams of both and a grid
  of class-conditional samples (one row per digit, fresh chains on E(x, y)),
  scored by the shipped digit classifier (agreement with the label, H(y)
  within each class, Fréchet distance); the mean confidence of each, and the
  ECE difference JEM − cross-entropy with a paired bootstrap 95 % interval
  over the test digits;
- **digits-splits** (``--splits S ...``): the digits comparison repeated on
  fresh train/test splits (``dataset.split_seed = train.seed = S``), with the
  ECE and ``-log p(y|x)`` differences pooled over the splits;
- **ce-lengths** (``--ce-lengths N ...``): the cross-entropy-only baseline
  alone at several lengths (does it grow over-confident with training?).

    python -m benchmarks.jem                          # toys and digits
    python -m benchmarks.jem --parts digits --digits-steps 3000
    python -m benchmarks.jem --parts digits --jem-set loss.weight_ce=16   # the JEM run only
    python -m benchmarks.jem --parts ce-lengths --ce-lengths 3000 10000 20000 --set train.learning_rate=0.001
    python -m benchmarks.jem --parts digits-splits --splits 1 2 3 4 5 --digits-steps 10000 \\
        --set train.learning_rate=0.001 --jem-set loss.weight_ce=32
    python -m benchmarks.jem --images docs/images     # also copy the pictures there

Prints markdown tables and one JSON object on the last line of stdout
(``--json FILE`` writes it too). Runs go to ``--out`` (default a temporary
directory).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

#: The 2-D toy recipe: a classifier over an MLP, JEM with short persistent chains.
TOY_CONFIG: dict[str, Any] = {
    "energy": {"name": "classifier", "network": {"name": "mlp", "hidden_dims": [128, 128]}},
    "sampler": {"name": "langevin", "num_steps": 20, "step_size": 0.01},
    "loss": {"name": "jem", "alpha": 0.1},
    "buffer": {"name": "replay", "capacity": 4096, "reinit_prob": 0.05},
    "train": {"batch_size": 128, "learning_rate": 1e-3, "warmup_steps": 100, "max_grad_norm": 1.0,
              "log_every": 100},
}

#: The digits recipe: JEM's own settings (Grathwohl et al. 2020) on a small CNN:
#: 20 Langevin steps of size 1 with noise 0.01, a 5 % reinitialisation rate,
#: a learning-rate warm-up and clipped gradients.
DIGITS_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "energy": {"name": "classifier",
               "network": {"name": "cnn", "hidden_dims": [32, 64], "use_residual": False}},
    "sampler": {"name": "langevin", "num_steps": 20, "step_size": 1.0, "noise_scale": 0.01, "clamp": [-1.0, 1.0]},
    "loss": {"name": "jem", "alpha": 0.1},
    "buffer": {"name": "replay", "capacity": 8192, "reinit_prob": 0.05, "init_low": -1.0, "init_high": 1.0},
    "train": {"batch_size": 64, "learning_rate": 3e-4, "warmup_steps": 100, "max_grad_norm": 1.0,
              "log_every": 100},
}

SHIFTS = ("noise", "blurred", "inverted", "rotated")


def _merge(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _train(config: dict[str, Any], out: Path, overrides: list[str]) -> dict[str, Any]:
    from ebmkit.job import train_job

    _common.log(f"training {out.name} ...")
    summary = train_job(config, overrides=overrides, out=out)
    _common.log(f"  {out.name}: accuracy {summary.get('accuracy')}, ece {summary.get('ece')}, "
                f"{summary['wall_time_s']:.0f} s")
    return summary


def _test_probabilities(run_dir: str | Path) -> tuple[Any, Any]:
    """``p(y | x)`` of a labelled run on its test split, and the labels."""
    import numpy as np

    from ebmkit.evaluate.classify import _labelled_test, class_probabilities
    from ebmkit.run import open_run

    run = open_run(run_dir)
    x, y = _labelled_test(run.dataset, 10_000)
    return class_probabilities(run.model, x), np.asarray(y)


def _ce_config(steps: int) -> dict[str, Any]:
    """The digits recipe trained by cross-entropy alone: no sampler, no buffer."""
    cfg = _merge(DIGITS_CONFIG, loss={"weight_px": 0.0, "weight_ce": 1.0},
                 train={"steps": steps, "checkpoint_every": steps})
    cfg.pop("sampler")
    cfg.pop("buffer")
    return cfg


def run_toys(names: list[str], steps: int, root: Path, overrides: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        cfg = _merge(TOY_CONFIG, dataset=name, train={"steps": steps, "checkpoint_every": steps})
        s = _train(cfg, root / f"toy_{name}", overrides)
        rows.append({
            "dataset": name, "steps": steps, "accuracy": s["accuracy"], "bayes_accuracy": s.get("bayes_accuracy"),
            "ece": s["ece"], "test_nll_y": s["test_nll_y"], "nll": s.get("nll"), "wall_time_s": s["wall_time_s"],
            "run_dir": s["run_dir"],
        })
    return rows


def run_digits(steps: int, root: Path, overrides: list[str],
               jem_overrides: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    rows = []
    probs: dict[str, Any] = {}
    # The baseline is the same network, steps and optimiser trained by cross-entropy alone, at weight 1.
    for label, loss in (("jem", {}), ("cross-entropy only", {"weight_px": 0.0, "weight_ce": 1.0})):
        cfg = _merge(DIGITS_CONFIG, loss=loss, train={"steps": steps, "checkpoint_every": steps})
        run_overrides = [*overrides, *jem_overrides] if label == "jem" else overrides
        if loss.get("weight_px") == 0.0:
            cfg.pop("sampler")
            cfg.pop("buffer")
        s = _train(cfg, root / ("digits_jem" if label == "jem" else "digits_ce"), run_overrides)
        shown = label + (f" ({', '.join(jem_overrides)})" if label == "jem" and jem_overrides else "")
        row = {"model": shown, "steps": steps, "accuracy": s["accuracy"], "ece": s["ece"],
               "test_nll_y": s["test_nll_y"], "wall_time_s": s["wall_time_s"], "run_dir": s["run_dir"]}
        row.update({f"auroc_{k}": s.get(f"auroc_{k}") for k in SHIFTS})
        probs[label] = _test_probabilities(s["run_dir"])
        row["mean_confidence"] = float(probs[label][0].max(axis=1).mean())
        if label == "jem":
            from ebmkit.evaluate.classify import conditional_sample_scores
            from ebmkit.run import open_run

            run = open_run(s["run_dir"])
            row["conditional_samples"] = conditional_sample_scores(run.model, run.dataset)
        rows.append(row)
    from ebmkit.evaluate.classify import paired_bootstrap_difference

    (p_jem, labels), (p_ce, _) = probs["jem"], probs["cross-entropy only"]
    rows[0]["ece_minus_ce"] = paired_bootstrap_difference(p_jem, p_ce, labels)
    return rows


def run_ce_lengths(lengths: list[int], root: Path, overrides: list[str]) -> list[dict[str, Any]]:
    """The cross-entropy-only baseline of :func:`run_digits` at several lengths."""
    rows = []
    for steps in lengths:
        s = _train(_ce_config(steps), root / f"digits_ce_{steps}", overrides)
        p, _ = _test_probabilities(s["run_dir"])
        row = {"steps": steps, "accuracy": s["accuracy"], "mean_confidence": float(p.max(axis=1).mean()),
               "ece": s["ece"], "test_nll_y": s["test_nll_y"], "wall_time_s": s["wall_time_s"],
               "run_dir": s["run_dir"]}
        row.update({f"auroc_{k}": s.get(f"auroc_{k}") for k in SHIFTS})
        rows.append(row)
    return rows


def run_digits_splits(splits: list[int], steps: int, root: Path, overrides: list[str],
                      jem_overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """JEM against cross-entropy alone on several train/test splits of digits.

    Split ``s`` draws its test digits with ``dataset.split_seed = s`` and
    trains both models with ``train.seed = s``; each pair is scored on its own
    test split and the ECE differences are pooled
    (:func:`ebmkit.evaluate.pooled_bootstrap_difference`).
    """
    from ebmkit.evaluate.classify import negative_log_likelihood, pooled_bootstrap_difference

    rows, sets = [], []
    for split in splits:
        seeded = [*overrides, f"dataset.split_seed={split}", f"train.seed={split}"]
        pair = {}
        for label in ("jem", "ce"):
            if label == "jem":
                cfg = _merge(DIGITS_CONFIG, train={"steps": steps, "checkpoint_every": steps})
                s = _train(cfg, root / f"split{split}_jem", [*seeded, *jem_overrides])
            else:
                s = _train(_ce_config(steps), root / f"split{split}_ce", seeded)
            probs, labels = _test_probabilities(s["run_dir"])
            pair[label] = probs
            rows.append({"split": split, "model": label, "steps": steps, "accuracy": s["accuracy"],
                         "mean_confidence": float(probs.max(axis=1).mean()), "ece": s["ece"],
                         "test_nll_y": s["test_nll_y"], "wall_time_s": s["wall_time_s"],
                         "run_dir": s["run_dir"],
                         **{f"auroc_{k}": s.get(f"auroc_{k}") for k in SHIFTS}})
        sets.append((pair["jem"], pair["ce"], labels))
    pooled = {"ece": pooled_bootstrap_difference(sets),
              "test_nll_y": pooled_bootstrap_difference(sets, metric=negative_log_likelihood)}
    return {"rows": rows, "pooled": pooled, "splits": splits, "jem_overrides": list(jem_overrides)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["toy", "digits"], choices=["toy", "digits", "ce-lengths", "digits-splits"])
    parser.add_argument("--toys", nargs="+", default=["8gaussians", "moons"])
    parser.add_argument("--toy-steps", type=int, default=1500)
    parser.add_argument("--digits-steps", type=int, default=2000)
    parser.add_argument("--ce-lengths", type=int, nargs="+", default=[3000, 6000, 10000, 20000],
                        help="steps of the cross-entropy-only runs of --parts ce-lengths")
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                        help="split seeds of --parts digits-splits (train.seed follows the split)")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--images", default=None, help="copy the pictures into this directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to every run")
    parser.add_argument("--jem-set", dest="jem_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to the digits JEM run only (not to its baseline)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ebmkit-jem-"))
    results: dict[str, Any] = {"pinned_threads": _common.pin_threads()}
    tables = []
    if "toy" in args.parts:
        toy_rows = run_toys(args.toys, args.toy_steps, root, args.overrides)
        results["toys"] = toy_rows
        tables.append(_common.markdown_table(
            ["toy", "steps", "accuracy", "Bayes-optimal accuracy", "ECE", "-log p(y|x)"],
            [[r["dataset"], r["steps"], _common.fmt(r["accuracy"], 4), _common.fmt(r["bayes_accuracy"], 4),
              _common.fmt(r["ece"], 4), _common.fmt(r["test_nll_y"], 4)] for r in toy_rows],
        ))
    if "digits" in args.parts:
        digit_rows = run_digits(args.digits_steps, root, args.overrides, args.jem_overrides)
        results["digits"] = digit_rows
        tables.append(_common.markdown_table(
            ["digits", "steps", "test accuracy", "mean confidence", "ECE", "-log p(y|x)",
             *(f"AUROC {k}" for k in SHIFTS), "wall s"],
            [[r["model"], r["steps"], _common.fmt(r["accuracy"], 4), _common.fmt(r["mean_confidence"], 4),
              _common.fmt(r["ece"], 4), _common.fmt(r["test_nll_y"], 4),
              *(_common.fmt(r[f"auroc_{k}"], 3) for k in SHIFTS), round(r["wall_time_s"])] for r in digit_rows],
        ))
        d = digit_rows[0]["ece_minus_ce"]
        tables.append(_common.markdown_table(
            ["ECE jem − cross-entropy only", "95 % interval (paired bootstrap over the test digits)"],
            [[f"{d['difference']:+.4f}", f"{d['low']:+.4f} to {d['high']:+.4f}"]],
        ))
        jem_rows = [r for r in digit_rows if "conditional_samples" in r]
        if jem_rows:
            c = jem_rows[0]["conditional_samples"]
            tables.append(_common.markdown_table(
                ["conditional samples (jem)", "per class", "chain steps", "classifier agrees with the label",
                 "H(y) within a class (mean)", "FD", "H(y) overall"],
                [["digits", c["per_class"], c["n_steps"], _common.fmt(c["cond_agreement"], 3),
                  _common.fmt(sum(c["cond_h_y_per_class"]) / len(c["cond_h_y_per_class"]), 3),
                  _common.fmt(c["fd"], 3), _common.fmt(c["h_y"], 3)]],
            ))
    if "ce-lengths" in args.parts:
        ce_rows = run_ce_lengths(args.ce_lengths, root, args.overrides)
        results["ce_lengths"] = ce_rows
        tables.append(_common.markdown_table(
            ["cross-entropy only", "test accuracy", "mean confidence", "ECE", "-log p(y|x)",
             *(f"AUROC {k}" for k in SHIFTS), "wall s"],
            [[r["steps"], _common.fmt(r["accuracy"], 4), _common.fmt(r["mean_confidence"], 4),
              _common.fmt(r["ece"], 4), _common.fmt(r["test_nll_y"], 4),
              *(_common.fmt(r[f"auroc_{k}"], 3) for k in SHIFTS), round(r["wall_time_s"])] for r in ce_rows],
        ))
    if "digits-splits" in args.parts:
        split_results = run_digits_splits(args.splits, args.digits_steps, root, args.overrides, args.jem_overrides)
        results["digits_splits"] = split_results
        tables.append(_common.markdown_table(
            ["split", "model", "steps", "test accuracy", "mean confidence", "ECE", "-log p(y|x)",
             *(f"AUROC {k}" for k in SHIFTS), "wall s"],
            [[r["split"], r["model"], r["steps"], _common.fmt(r["accuracy"], 4), _common.fmt(r["mean_confidence"], 4),
              _common.fmt(r["ece"], 4), _common.fmt(r["test_nll_y"], 4),
              *(_common.fmt(r[f"auroc_{k}"], 3) for k in SHIFTS), round(r["wall_time_s"])]
             for r in split_results["rows"]],
        ))
        tables.append(_common.markdown_table(
            ["jem − cross-entropy only, mean over splits", "difference", "95 % interval (bootstrap within each split)",
             "per split"],
            [[metric, f"{d['difference']:+.4f}", f"{d['low']:+.4f} to {d['high']:+.4f}",
              ", ".join(f"{v:+.4f}" for v in d["per_set"])]
             for metric, d in split_results["pooled"].items()],
        ))
    if args.images:
        target = Path(args.images)
        target.mkdir(parents=True, exist_ok=True)
        copies = {"digits_jem/reliability.png": "jem_digits_reliability.png",
                  "digits_ce/reliability.png": "jem_digits_ce_reliability.png",
                  "digits_jem/samples_by_class.png": "jem_digits_samples_by_class.png"}
        copies.update({f"toy_{n}/class_densities.png": f"jem_{n}_class_densities.png" for n in args.toys})
        for source, name in copies.items():
            if (root / source).is_file():
                shutil.copyfile(root / source, target / name)
    results["runs"] = str(root)
    return _common.emit("jem", results, tables, json_path=args.json)


if __name__ == "__main__":
    main()
