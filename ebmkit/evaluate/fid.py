"""Image sample quality without an Inception net: a small frozen digit classifier.

ebmkit trains a small CNN once (``benchmarks/train_digit_classifier.py``) and
ships its weights in ``ebmkit/assets/`` as a versioned ``.npz``: one array per
parameter, named by its path in the module (``conv1/kernel``), and a JSON
``metadata`` entry (format version, architecture, training data, accuracy, date
and a digest of the weights). This module loads that file, checks it, and
computes the metrics of :mod:`ebmkit.evaluate` in the classifier's feature
space:

* :func:`frechet_distance` between Gaussians fitted to penultimate-layer
  features (the FID recipe, Heusel et al. 2017, with a digit classifier);
* :func:`label_entropy`, the entropy of the mean predicted label distribution;
* :func:`nearest_neighbour_distance` to the training images, in pixel space.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ebmkit.errors import ClassifierWeightsError

__all__ = [
    "CLASSIFIER_FILES",
    "FORMAT_VERSION",
    "ClassifierWeightsError",
    "DigitClassifier",
    "LoadedClassifier",
    "classifier_features",
    "classifier_probabilities",
    "frechet_distance",
    "frechet_distance_from_features",
    "label_entropy",
    "load_classifier",
    "nearest_neighbour_distance",
    "save_classifier",
]

#: Version of the weights-file layout and of the architecture code below. A file
#: written for another version is refused rather than half-loaded.
FORMAT_VERSION = 1

#: Built-in classifiers: name -> file in ``ebmkit/assets``.
CLASSIFIER_FILES = {
    "mnist": "digit_classifier_v1.npz",
    "digits": "digits_classifier_v1.npz",
}

_TRAIN_SCRIPT = "benchmarks/train_digit_classifier.py"
_METADATA_KEY = "metadata"
#: Rows per compiled forward pass; the last chunk is padded, so one shape compiles.
_CHUNK = 500


class DigitClassifier(nnx.Module):
    """A small CNN: ``len(channels)`` blocks of 3×3 conv + ReLU (+ 2×2 max-pool),
    a ReLU dense layer of ``features`` units (the feature space), and the logits.

    Args:
        image_size: height = width of the input ``[B, size, size, 1]``.
        channels: output channels of the conv blocks.
        pools: whether each conv block ends with a 2×2 max-pool.
        features: width of the penultimate layer.
        num_classes: number of labels.
        rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: tuple[int, ...] = (16, 32),
        pools: tuple[bool, ...] = (True, True),
        features: int = 64,
        num_classes: int = 10,
        rngs: nnx.Rngs,
    ):
        if len(channels) != len(pools):
            raise ValueError(f"channels {channels} and pools {pools} must have one entry per block")
        self.pools = tuple(bool(p) for p in pools)
        convs = []
        c_in, size = 1, image_size
        for c_out, pool in zip(channels, self.pools, strict=True):
            convs.append(nnx.Conv(c_in, c_out, (3, 3), padding="SAME", rngs=rngs))
            c_in, size = c_out, size // 2 if pool else size
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(size * size * c_in, features, rngs=rngs)
        self.head = nnx.Linear(features, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate-layer activations ``[B, features]`` of images ``[B, H, W, 1]``."""
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = jax.nn.relu(conv(x))
            if pool:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x))


def _architecture_kwargs(arch: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "image_size": int(arch["image_size"]),
        "channels": tuple(int(c) for c in arch["channels"]),
        "pools": tuple(bool(p) for p in arch["pools"]),
        "features": int(arch["features"]),
        "num_classes": int(arch["num_classes"]),
    }


def _flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(var.get_value()) for path, var in flat}


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float32)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_classifier(
    path: str | os.PathLike, model: DigitClassifier, architecture: Mapping[str, Any], **info: Any
) -> dict[str, Any]:
    """Write ``model``'s parameters and metadata to ``path`` (``.npz``).

    Args:
        path: the file to write.
        model: the trained classifier.
        architecture: the :class:`DigitClassifier` keyword arguments it was built with.
        **info: more JSON-able metadata (training data, accuracy, ...).

    Returns:
        The metadata written.
    """
    arrays = {k: v.astype(np.float32) for k, v in _flat_params(model).items()}
    metadata = {
        "format_version": FORMAT_VERSION,
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in _architecture_kwargs(architecture).items()},
        "created": datetime.date.today().isoformat(),
        "weights_sha256": _digest(arrays),
        **info,
    }
    payload = dict(arrays)
    payload[_METADATA_KEY] = np.asarray(json.dumps(metadata, sort_keys=True))
    np.savez_compressed(Path(path), **payload)
    return metadata


class LoadedClassifier:
    """A frozen classifier read from a weights file.

    Attributes:
        path: where it was read from.
        metadata: the file's metadata (architecture, training data, accuracy, ...).
        image_shape: ``(H, W, 1)`` of the images it takes.
    """

    def __init__(self, path: Path, model: DigitClassifier, metadata: dict[str, Any]):
        self.path = path
        self.metadata = metadata
        size = int(metadata["architecture"]["image_size"])
        self.image_shape = (size, size, 1)
        graphdef, params = nnx.split(model)
        self._params = params
        self._forward = jax.jit(
            lambda p, x: _features_and_logits(nnx.merge(graphdef, p), x)
        )

    def __repr__(self) -> str:
        return f"LoadedClassifier({str(self.path)!r}, accuracy={self.metadata.get('test_accuracy')})"

    def images(self, x: Any, what: str = "samples") -> np.ndarray:
        """``x`` as float32 ``[N, H, W, 1]`` (accepts ``[N, H, W]`` and ``[N, H·W]``)."""
        x = np.asarray(x, dtype=np.float32)
        h, w, _ = self.image_shape
        if x.ndim == 2 and x.shape[1] == h * w:
            x = x.reshape(-1, h, w)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != self.image_shape:
            raise ValueError(
                f"{what}: this classifier ({self.path.name}) takes images [N, {h}, {w}, 1] "
                f"in [-1, 1], got shape {list(np.shape(x))}"
            )
        if len(x) == 0:
            raise ValueError(f"{what}: no images")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{what}: {int(np.sum(~np.isfinite(x)))} non-finite pixel values")
        return x

    def features_and_probabilities(self, x: Any, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (float64 ``[N, F]``) and label probabilities ``[N, C]``."""
        x = self.images(x, what)
        n = len(x)
        pad = -n % _CHUNK
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)])
        feats, probs = [], []
        for i in range(0, len(x), _CHUNK):
            f, logits = self._forward(self._params, jnp.asarray(x[i : i + _CHUNK]))
            feats.append(np.asarray(f, dtype=np.float64))
            probs.append(np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), dtype=np.float64))
        return np.concatenate(feats)[:n], np.concatenate(probs)[:n]


def _features_and_logits(model: DigitClassifier, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    f = model.features(x)
    return f, model.head(f)


def _resolve(classifier: str | os.PathLike) -> Path:
    if isinstance(classifier, str) and classifier in CLASSIFIER_FILES:
        return Path(str(resources.files("ebmkit") / "assets" / CLASSIFIER_FILES[classifier]))
    if isinstance(classifier, str) and not classifier.endswith(".npz"):
        raise ValueError(
            f"unknown classifier {classifier!r}: use one of {sorted(CLASSIFIER_FILES)} "
            "or the path of a weights .npz"
        )
    return Path(classifier)


def _corrupt(path: Path, why: str) -> ClassifierWeightsError:
    return ClassifierWeightsError(
        f"classifier weights {path}: {why}. Reinstall ebmkit-jax or regenerate the file "
        f"with `python {_TRAIN_SCRIPT}`."
    )


def _read_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"classifier weights {path} not found. They ship inside the ebmkit-jax package "
            f"(ebmkit/assets/); reinstall it, or regenerate the file with `python {_TRAIN_SCRIPT}`."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _corrupt(path, f"cannot read it as .npz ({type(exc).__name__}: {exc})") from exc
    if _METADATA_KEY not in arrays:
        raise _corrupt(path, f"no {_METADATA_KEY!r} entry (found {sorted(arrays)})")
    try:
        metadata = json.loads(str(arrays.pop(_METADATA_KEY)))
    except (TypeError, ValueError) as exc:
        raise _corrupt(path, f"its metadata is not JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise _corrupt(path, "its metadata is not a JSON object")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ClassifierWeightsError(
            f"classifier weights {path}: format version {version!r}, but this ebmkit reads "
            f"version {FORMAT_VERSION}. Use the file that ships with this ebmkit, or regenerate "
            f"it with `python {_TRAIN_SCRIPT}`."
        )
    return arrays, metadata


def _load(path: Path) -> LoadedClassifier:
    arrays, metadata = _read_weights(path)
    try:
        kwargs = _architecture_kwargs(metadata["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, f"its metadata has no valid architecture ({exc!r})") from exc
    expected_digest = metadata.get("weights_sha256")
    if expected_digest != _digest(arrays):
        raise _corrupt(path, "the weights do not match the digest in its metadata")
    model = DigitClassifier(**kwargs, rngs=nnx.Rngs(0))
    template = _flat_params(model)
    missing = sorted(set(template) - set(arrays))
    extra = sorted(set(arrays) - set(template))
    wrong = sorted(k for k in set(template) & set(arrays) if arrays[k].shape != template[k].shape)
    if missing or extra or wrong:
        raise _corrupt(
            path, f"its arrays do not fit the architecture (missing {missing}, unexpected {extra}, "
            f"wrong shape {wrong})"
        )
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for key_path, var in flat:
        var.set_value(jnp.asarray(arrays["/".join(map(str, key_path))], jnp.float32))
    nnx.update(model, nnx.from_flat_state(flat))
    return LoadedClassifier(path, model, metadata)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> LoadedClassifier:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    return _load(Path(path))


def load_classifier(classifier: str | os.PathLike | LoadedClassifier = "mnist") -> LoadedClassifier:
    """The frozen classifier ``"mnist"`` (28×28), ``"digits"`` (8×8) or a weights file.

    Raises:
        FileNotFoundError: the weights file is missing (the message names it).
        ClassifierWeightsError: it is corrupt, of another format version, or does
            not match its architecture or digest.
    """
    if isinstance(classifier, LoadedClassifier):
        return classifier
    path = _resolve(classifier).resolve()
    if not path.is_file():
        _read_weights(path)  # raises FileNotFoundError naming the file
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def classifier_features(images: Any, classifier: Any = "mnist") -> np.ndarray:
    """Penultimate-layer features, float64 ``[N, F]``, of images in [-1, 1]."""
    return load_classifier(classifier).features_and_probabilities(images)[0]


def classifier_probabilities(images: Any, classifier: Any = "mnist") -> np.ndarray:
    """Predicted label distributions, float64 ``[N, num_classes]``."""
    return load_classifier(classifier).features_and_probabilities(images)[1]


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_features(features: Any, reference_features: Any) -> float:
    """``|μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`` of two feature sets, in float64.

    Both matrix square roots are of symmetric positive semi-definite matrices,
    so they come from symmetric eigen-decompositions (no complex round-off, no
    scipy); tiny negative eigenvalues from round-off are clipped to zero.
    """
    f1 = np.asarray(features, dtype=np.float64)
    f2 = np.asarray(reference_features, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N, F] with one F, got {list(f1.shape)} and {list(f2.shape)}")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"need at least 2 rows on each side for a covariance, got {len(f1)} and {len(f2)}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1 = np.cov(f1, rowvar=False)
    s2 = np.cov(f2, rowvar=False)
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_cross = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_cross)
    return max(value, 0.0)


def frechet_distance(samples: Any, reference: Any, *, classifier: Any = "mnist") -> float:
    """Fréchet distance between ``samples`` and ``reference`` images in the classifier's
    penultimate features (0 for identical distributions; lower is better).

    Args:
        samples: images ``[N, H, W, 1]`` in [-1, 1] (e.g. model samples).
        reference: images of the same shape (e.g. the training set).
        classifier: ``"mnist"`` (28×28), ``"digits"`` (8×8), a weights-file path
            or a :class:`LoadedClassifier`.
    """
    clf = load_classifier(classifier)
    f1, _ = clf.features_and_probabilities(samples, "samples")
    f2, _ = clf.features_and_probabilities(reference, "reference")
    return frechet_distance_from_features(f1, f2)


def label_entropy(samples: Any, classifier: Any = "mnist") -> float:
    """Entropy ``H(y)`` in nats of the mean predicted label distribution.

    ``ln 10 ≈ 2.303`` when every digit is equally common; a model stuck on a few
    classes (mode collapse) scores much lower.
    """
    _, probs = load_classifier(classifier).features_and_probabilities(samples)
    p = probs.mean(axis=0)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


@functools.partial(jax.jit, static_argnames=("chunk",))
def _nearest(x: jax.Array, train: jax.Array, chunk: int) -> jax.Array:
    """Index of the closest ``train`` row for each row of ``x``, ``chunk`` rows at a time."""
    train_sq = jnp.sum(train * train, axis=1)

    def block(rows: jax.Array) -> jax.Array:
        # |a|² is constant per row, so it does not change the argmin.
        return jnp.argmin(train_sq[None, :] - 2.0 * rows @ train.T, axis=1)

    return jax.lax.map(block, x.reshape(-1, chunk, x.shape[1])).reshape(-1)


def nearest_neighbour_distance(samples: Any, train: Any) -> float:
    """Mean over ``samples`` of the L2 distance (in pixels, flattened) to the
    closest ``train`` image. Near 0 means the samples copy training images.

    Compare with the same number for held-out data: samples much closer to the
    training set than held-out data are memorised, not generated.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(len(samples), -1)
    t = np.asarray(train, dtype=np.float32).reshape(len(train), -1)
    if x.shape[1] != t.shape[1] or len(x) == 0 or len(t) == 0:
        raise ValueError(
            f"samples {list(np.shape(samples))} and train {list(np.shape(train))} must be "
            "non-empty sets of images of one shape"
        )
    # Centre on the training mean so |b|² − 2ab loses less to cancellation.
    centre = t.mean(axis=0, keepdims=True)
    xc, tc = x - centre, t - centre
    chunk = max(1, min(len(x), (1 << 22) // len(t)))
    chunk = 1 << (chunk.bit_length() - 1)  # a power of two: few distinct compiled shapes
    pad = -len(x) % chunk
    if pad:
        xc = np.concatenate([xc, np.zeros((pad, x.shape[1]), np.float32)])
    idx = np.asarray(_nearest(jnp.asarray(xc), jnp.asarray(tc), chunk))[: len(x)]
    # The distance itself is recomputed exactly (a copied image gives exactly 0).
    dist = np.linalg.norm(x.astype(np.float64) - t[idx].astype(np.float64), axis=1)
    return float(np.mean(dist))


def gaussian_blur(images: Any, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[N, H, W, C]`` images, ``sigma`` in pixels.

    The kernel reaches ``4 sigma`` and the edges are reflected. The reference
    rows of the image benchmarks (the FD of blurred held-out digits) use it.

    Raises:
        ValueError: ``images`` is not ``[N, H, W, C]`` or ``sigma`` is not positive.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"gaussian_blur: images must be [N, H, W, C], got shape {list(x.shape)}")
    if not (isinstance(sigma, (int, float)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"gaussian_blur: sigma must be a positive number of pixels, got {sigma!r}")
    h, w = x.shape[1:3]
    r = min(int(4 * sigma + 0.5), h - 1, w - 1)  # reflection needs r < H, W
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(k[i] * p[:, i : i + h] for i in range(len(k)))
    return sum(k[i] * rows[:, :, i : i + w] for i in range(len(k))).astype(np.float32)
