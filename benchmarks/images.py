"""Image quality (issue 5, item 6): DeepEBM on sklearn digits and MNIST-5k,
scored on **fresh chains**, not on the replay buffer.

For each data set, ``examples/<name>_deep.toml`` is trained through the public
Trainer. Every ``--eval-every`` steps (and at the end) the current model draws
``--samples`` (default 1,000) samples with ``model.generate``: new chains from
the buffer's init distribution (uniform noise), run for the sampler's K steps
(``--chain-steps`` to change), never touching the replay buffer. They are scored with the shipped digit
classifier (``ebmkit.evaluate``):

- **FD**: Fréchet distance of the classifier's features against the held-out
  split (never used for training);
- **H(y)**: entropy of the mean predicted label (ln 10 = 2.30 when all digits
  are equally common; low means mode collapse);
- **NN**: mean L2 distance to the closest training image (much below the
  held-out data's own value means memorisation).

Reference rows use the same N, the same held-out reference and the same
classifier: a random training subset as is (the floor), blurred with
σ = 0.5 px and 1 px (the targets), and uniform noise.

    python -m benchmarks.images                       # digits and mnist
    python -m benchmarks.images --datasets digits --set train.steps=500

Prints one JSON object per evaluation (stderr), markdown tables, and one JSON
object on the last line of stdout (``--json FILE`` writes it too).
``--out DIR`` also saves a PNG grid of fresh-chain samples per data set.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: data set -> (example recipe, classifier)
DATASETS = {"digits": ("digits_deep.toml", "digits"), "mnist": ("mnist_deep.toml", "mnist")}
BLURS = (0.5, 1.0)


def reference_rows(dataset: Any, classifier: str, reference_features: np.ndarray, n: int, seed: int = 0) -> list[dict]:
    """FD / H(y) / NN of real, blurred and noise images at ``n`` against the held-out set."""
    from ebmkit.evaluate import (
        classifier_features,
        frechet_distance_from_features,
        gaussian_blur,
        label_entropy,
        nearest_neighbour_distance,
    )

    rng = np.random.default_rng(seed)
    train = dataset.train
    subset = train[rng.choice(len(train), size=min(n, len(train)), replace=False)]
    rows = []

    def score(name: str, images: np.ndarray, nn: float | None, blur_px: float | None = None) -> None:
        fd = frechet_distance_from_features(classifier_features(images, classifier), reference_features)
        rows.append({
            "what": name, "n": len(images), "fd": fd, "h_y": label_entropy(images, classifier), "nn": nn,
            "blur_px": blur_px,
        })

    # Held-out images' NN distance to the training set is the scale for samples'.
    score("training digits (floor)", subset, nearest_neighbour_distance(dataset.test, train))
    for sigma in BLURS:
        # NN from blurred held-out digits: a blurred training digit's nearest
        # neighbour would be its own original.
        held_out_nn = nearest_neighbour_distance(gaussian_blur(dataset.test, sigma), train)
        score(f"training digits blurred σ = {sigma:g} px", gaussian_blur(subset, sigma), held_out_nn, sigma)
    noise = rng.uniform(-1.0, 1.0, subset.shape).astype(np.float32)
    score("uniform noise", noise, nearest_neighbour_distance(noise, train))
    return rows


def run_images(
    name: str,
    *,
    overrides: list[str] | None = None,
    eval_every: int | None = None,
    n_samples: int = 1000,
    chain_steps: int | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Train ``examples/<name>_deep.toml`` and score fresh chains along the way."""
    import jax
    import jax.numpy as jnp

    import ebmkit
    from ebmkit.components import build_dataset
    from ebmkit.evaluate import (
        classifier_features,
        frechet_distance_from_features,
        label_entropy,
        nearest_neighbour_distance,
    )
    from ebmkit.training import Trainer

    recipe, classifier = DATASETS[name]
    sets = ["train.checkpoint_every=0", *(overrides or [])]
    config = ebmkit.load_config(ROOT / "examples" / recipe, overrides=sets)
    if eval_every is None:
        eval_every = max(1, config.train.steps // 6)
    config = ebmkit.load_config(config, overrides=[f"train.eval_every={eval_every}", f"train.log_every={eval_every}"])
    dataset = build_dataset(config.dataset)
    reference = classifier_features(dataset.test, classifier)
    model = ebmkit.EBM(config, event_shape=dataset.event_shape, data_bounds=dataset.bounds)
    k = model.num_steps if chain_steps is None else chain_steps
    curve: list[dict[str, Any]] = []
    clock = {"start": None, "eval": 0.0}
    samples: dict[str, np.ndarray] = {}

    def score(x: np.ndarray) -> dict[str, float]:
        if not np.all(np.isfinite(x)):
            return {"fd": float("nan"), "h_y": float("nan"), "nn": float("nan")}
        return {
            "fd": frechet_distance_from_features(classifier_features(x, classifier), reference),
            "h_y": label_entropy(x, classifier),
            "nn": nearest_neighbour_distance(x, dataset.train),
        }

    def evaluate(trainer: Trainer) -> dict[str, float]:
        t0 = time.perf_counter()
        # The trainer's current state into the model (copies: the trainer's
        # step donates its state), then brand-new chains from noise, on the
        # parameters the model evaluates with (the EMA with train.ema_decay).
        model.load_train_state(jax.tree.map(jnp.copy, trainer.placement.to_local(trainer.state)))
        x = np.asarray(model.generate(n_samples, n_steps=k, rng_key=jax.random.key(12345)))
        scores = score(x)
        row = {"step": trainer.step, "train_s": t0 - clock["start"] - clock["eval"], **scores}
        if model.evaluate_with == "ema":  # the live parameters too, on the same chains' keys
            with model.evaluating_with("live"):
                live = np.asarray(model.generate(n_samples, n_steps=k, rng_key=jax.random.key(12345)))
            row.update({f"live_{key}": value for key, value in score(live).items()})
        samples["last"] = x
        curve.append(row)
        _common.log(json.dumps({"dataset": name, **row}))
        clock["eval"] += time.perf_counter() - t0
        return scores

    trainer = Trainer(model, dataset, hooks=False, evaluate=evaluate)
    clock["start"] = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - clock["start"]
    refs = reference_rows(dataset, classifier, reference, n_samples)
    if out is not None:
        from ebmkit.viz import save_image_grid

        out.mkdir(parents=True, exist_ok=True)
        save_image_grid(samples["last"][:64], out / f"{name}_fresh_chains.png")
    blur_fd = {r["blur_px"]: r["fd"] for r in refs if r["blur_px"] is not None}
    final = curve[-1]
    return {
        "dataset": name,
        "classifier": classifier,
        "n_samples": n_samples,
        "chain_steps": k,
        "steps": result.step,
        "steps_per_s": result.summary.get("steps_per_s"),
        "train_s": final["train_s"],
        "wall_s": wall,
        "curve": curve,
        "references": refs,
        "fd": final["fd"],
        "h_y": final["h_y"],
        "nn": final["nn"],
        **{key: final[key] for key in ("live_fd", "live_h_y", "live_nn") if key in final},
        "below_blur_1px": bool(final["fd"] < blur_fd[1.0]),
        "below_blur_half_px": bool(final["fd"] < blur_fd[0.5]),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    parts = []
    for r in results:
        parts.append(
            f"**{r['dataset']}** — {r['n_samples']} fresh chains of K = {r['chain_steps']} from uniform noise, "
            f"{r['steps']} training steps, {r['train_s']:.0f} s of training"
        )
        rows = [[f"step {c['step']} ({c['train_s']:.0f} s)", c["fd"], c["h_y"], c["nn"]] for c in r["curve"]]
        rows += [[ref["what"], ref["fd"], ref["h_y"], ref["nn"]] for ref in r["references"]]
        parts.append(_common.markdown_table(["samples", "FD", "H(y)", "NN distance"], rows))
        if "live_fd" in r:  # train.ema_decay: the table above is the EMA's, this one the live parameters'
            rows = [[f"step {c['step']} (live)", c["live_fd"], c["live_h_y"], c["live_nn"]] for c in r["curve"]]
            parts.append(_common.markdown_table(["samples", "FD", "H(y)", "NN distance"], rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: digits, mnist")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. train.steps=500")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: steps / 6)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chain-steps", type=int, default=None, help="fresh chains' length (default: the sampler's K)")
    parser.add_argument("--out", type=Path, default=None, help="write sample grids here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; choose from {sorted(DATASETS)}")
    results = [
        run_images(
            n, overrides=args.overrides, eval_every=args.eval_every, n_samples=args.samples,
            chain_steps=args.chain_steps, out=args.out,
        )
        for n in names
    ]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    _common.emit("images", {"results": results}, [markdown(results)], json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
