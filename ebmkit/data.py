"""Data set contract and helpers. Data sets themselves are components.

A dataset spec's ``build(config, ctx)`` returns a :class:`Dataset`. Data lives
on the host as NumPy; the trainer moves batches to the device. Every random
draw takes an explicit ``numpy.random.Generator``.

A data set declares its ``support`` (continuous, binary, categorical(K)) and,
when labelled, ``num_classes`` and :meth:`Dataset.sample_labelled`; it offers
a :meth:`Dataset.reference` distribution (by default a Gaussian fitted to the
training data) for losses and evaluators that need a tractable one.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import numpy as np

from ebmkit.config.base import ConfigBase, config_class
from ebmkit.config.validators import in_range, non_negative, non_negative_int

__all__ = [
    "Dataset",
    "ArrayDataset",
    "AugmentConfig",
    "GaussianReference",
    "augment",
    "augment_on_device",
    "DeviceSampler",
    "batch_from",
    "check_batch",
    "split_indices",
    "fraction_field",
    "seed_field",
    "HELD_OUT_SEED",
]

#: Seed of the held-out draw of generative (infinite) data sets, fixed so that
#: every run and every library is scored on the same points.
HELD_OUT_SEED = 20190101


class Dataset:
    """A source of samples ``float32[n, *event_shape]``.

    Attributes:
        name: the registry name.
        event_shape: shape of one sample.
        modality: ``"points"`` (tabular/2-D) or ``"image"`` (``H, W, C`` in [-1, 1]).
        bounds: ``(low, high)`` box that holds the data, for grids and plots.
        entropy: the true differential entropy in nats where known, else ``None``.
        support: ``"continuous"``, ``"binary"`` or ``"categorical(K)"``.
        num_classes: the number of label values for labelled data, else ``None``.
    """

    name: str = "dataset"
    event_shape: tuple[int, ...] = ()
    modality: str = "points"
    bounds: tuple[float, float] | None = None
    entropy: float | None = None
    support: str = "continuous"
    num_classes: int | None = None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` training samples (with augmentation, if configured)."""
        raise NotImplementedError

    def sample_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` training samples and their labels ``int32[n]`` (labelled data sets)."""
        raise NotImplementedError(f"data set {self.name!r} has no labels")

    def device_sampler(self, labelled: bool = False) -> DeviceSampler | None:
        """How to draw training batches with JAX inside the compiled training
        step (no host batch, no transfer), or ``None`` when the data set only
        samples on the host. The draws follow the same distribution as
        :meth:`sample` (with :meth:`sample_labelled`'s labels when
        ``labelled``), from a JAX key instead of a numpy generator."""
        return None

    def reference(self) -> GaussianReference:
        """A tractable distribution close to the data: a Gaussian fitted to
        10,000 training draws (full covariance up to 64 dimensions, diagonal
        above). Computed once per data set."""
        cached = getattr(self, "_reference_cache", None)
        if cached is None:
            x = self.sample(np.random.default_rng(HELD_OUT_SEED + 1), 10_000)
            cached = GaussianReference.fit(x)
            self._reference_cache = cached
        return cached

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        """Held-out samples: the test split, or ``n`` fresh draws from ``seed``."""
        raise NotImplementedError

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not Dataset.log_prob

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log-density of the data distribution, where it is known."""
        raise NotImplementedError(f"data set {self.name!r} has no closed-form log-density")


@config_class
class AugmentConfig(ConfigBase):
    """Per-data-set augmentation (the guide's preprocessing).

    Attributes:
        noise_std: std of Gaussian noise added to every training sample.
        hflip: flip images left-right with probability 1/2.
        crop_padding: pad images by this many pixels (edge values) and crop back
            at a random offset.
    """

    noise_std: float = attrs.field(default=0.0, validator=non_negative)
    hflip: bool = False
    crop_padding: int = attrs.field(default=0, validator=non_negative_int)

    @property
    def is_identity(self) -> bool:
        return self.noise_std == 0 and not self.hflip and self.crop_padding == 0


def augment(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, *, image: bool) -> np.ndarray:
    """Apply ``cfg`` to a batch ``x[n, ...]`` (returns a new array)."""
    if cfg.is_identity:
        return x
    x = np.array(x, dtype=np.float32, copy=True)
    if image and x.ndim == 4:
        n, h, w, _ = x.shape
        if cfg.hflip:
            flip = rng.random(n) < 0.5
            x[flip] = x[flip, :, ::-1, :]
        if cfg.crop_padding:
            p = cfg.crop_padding
            padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
            dy = rng.integers(0, 2 * p + 1, size=n)
            dx = rng.integers(0, 2 * p + 1, size=n)
            for i in range(n):
                x[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w, :]
    if cfg.noise_std:
        x += rng.normal(0.0, cfg.noise_std, size=x.shape).astype(np.float32)
    return x


@attrs.frozen
class DeviceSampler:
    """A data set's training draws as a pure JAX function.

    Attributes:
        arrays: a pytree of host arrays the draw reads (the training split);
            the trainer places it on the device once and passes it to every
            call. ``None`` when the draw needs no data (a toy's generator).
        draw: ``draw(arrays, key, n)`` -> ``x[n, *event]`` (float32), or
            ``(x, y[n])`` (int32 labels) for a sampler built with
            ``labelled=True``; traceable, shapes static in ``n``.
    """

    arrays: Any
    draw: Any


def augment_on_device(x: Any, cfg: AugmentConfig, rng_key: Any, *, image: bool) -> Any:
    """:func:`augment` in JAX, for draws inside a compiled step (the same
    transformations with the same probabilities, from ``rng_key``)."""
    import jax
    import jax.numpy as jnp

    if cfg.is_identity:
        return x
    k_flip, k_crop, k_noise = jax.random.split(rng_key, 3)
    if image and x.ndim == 4:
        n, h, w, c = x.shape
        if cfg.hflip:
            flip = jax.random.uniform(k_flip, (n,)) < 0.5
            x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
        if cfg.crop_padding:
            p = cfg.crop_padding
            padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
            offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * p + 1)
            x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
    if cfg.noise_std:
        x = x + cfg.noise_std * jax.random.normal(k_noise, x.shape, x.dtype)
    return x


class ArrayDataset(Dataset):
    """A finite data set held in memory as train/test arrays."""

    def __init__(
        self,
        name: str,
        train: np.ndarray,
        test: np.ndarray,
        *,
        modality: str = "points",
        augment_config: AugmentConfig | None = None,
        labels: tuple[np.ndarray, np.ndarray] | None = None,
        bounds: tuple[float, float] | None = None,
    ):
        if train.ndim < 2 or test.ndim < 2 or train.shape[1:] != test.shape[1:]:
            raise ValueError(
                f"{name}: train {train.shape} and test {test.shape} must be [n, *event] with equal event shapes"
            )
        self.name = name
        self.train = np.ascontiguousarray(train, dtype=np.float32)
        self.test = np.ascontiguousarray(test, dtype=np.float32)
        self.event_shape = tuple(train.shape[1:])
        self.modality = modality
        self.augment_config = augment_config or AugmentConfig()
        self.labels = labels
        self.bounds = bounds
        if labels is not None:
            if len(labels[0]) != len(self.train) or len(labels[1]) != len(self.test):
                raise ValueError(f"{name}: {len(labels[0])}/{len(labels[1])} labels for {len(self.train)}/{len(self.test)} samples")
            self.labels = (np.asarray(labels[0], np.int32), np.asarray(labels[1], np.int32))
            self.num_classes = int(max(self.labels[0].max(initial=0), self.labels[1].max(initial=0))) + 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(0, len(self.train), size=n)
        return augment(self.train[idx], self.augment_config, rng, image=self.modality == "image")

    def sample_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.labels is None:
            return super().sample_labelled(rng, n)
        idx = rng.integers(0, len(self.train), size=n)
        x = augment(self.train[idx], self.augment_config, rng, image=self.modality == "image")
        return x, self.labels[0][idx]

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        if n is None or n >= len(self.test):
            return self.test
        return self.test[:n]

    def device_sampler(self, labelled: bool = False) -> DeviceSampler | None:
        """Rows of the training split drawn uniformly with replacement (as
        :meth:`sample`), then augmented, all on the device."""
        import jax

        if labelled and self.labels is None:
            return None
        arrays = {"x": self.train, "y": self.labels[0]} if labelled else {"x": self.train}
        cfg, image = self.augment_config, self.modality == "image"

        def draw(arrays: Any, rng_key: Any, n: int) -> Any:
            k_rows, k_augment = jax.random.split(rng_key)
            rows = jax.random.randint(k_rows, (n,), 0, arrays["x"].shape[0])
            x = augment_on_device(arrays["x"][rows], cfg, k_augment, image=image)
            return (x, arrays["y"][rows]) if labelled else x

        return DeviceSampler(arrays=arrays, draw=draw)


def batch_from(batch: Any) -> Any:
    """The array inside a batch: an array, or a dict with ``image`` or ``data``.

    Raises:
        ValueError: a dict without either key.
    """
    if isinstance(batch, dict):
        for key in ("image", "data", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(
            f"batch dict has keys {sorted(batch)}; expected an 'image' or 'data' entry"
        )
    return batch




class GaussianReference:
    """A Gaussian ``N(mean, L L^T)`` over events, as a reference distribution.

    ``sample(rng_key, n)`` and ``log_prob(x)`` are pure and jit-able (JAX).

    Attributes:
        mean: ``[*event]``.
        scale_tril: ``[d, d]`` lower Cholesky factor (``d = prod(event)``), or
            ``None`` with ``std`` for a diagonal Gaussian.
        std: ``[*event]`` per-coordinate standard deviation (diagonal case).
    """

    def __init__(self, mean: np.ndarray, *, scale_tril: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = np.asarray(mean, np.float32)
        self.event_shape = self.mean.shape
        if (scale_tril is None) == (std is None):
            raise ValueError("GaussianReference takes exactly one of scale_tril and std")
        self.scale_tril = None if scale_tril is None else np.asarray(scale_tril, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, *, max_full_dim: int = 64, jitter: float = 1e-4) -> GaussianReference:
        """The maximum-likelihood Gaussian of ``x[n, *event]`` (plus ``jitter``
        on the variances so that it is never degenerate)."""
        x = np.asarray(x, np.float64)
        flat = x.reshape(len(x), -1)
        mean = flat.mean(axis=0)
        d = flat.shape[1]
        if d <= max_full_dim:
            cov = np.cov(flat, rowvar=False).reshape(d, d) + jitter * np.eye(d)
            return cls(mean.reshape(x.shape[1:]), scale_tril=np.linalg.cholesky(cov))
        std = np.sqrt(flat.var(axis=0) + jitter)
        return cls(mean.reshape(x.shape[1:]), std=std.reshape(x.shape[1:]))

    @functools.cached_property
    def _dim(self) -> int:
        return int(np.prod(self.event_shape))

    def sample(self, rng_key, n: int):
        """``n`` draws ``[n, *event]``."""
        import jax
        import jax.numpy as jnp

        z = jax.random.normal(rng_key, (n, self._dim), jnp.float32)
        if self.scale_tril is not None:
            flat = z @ jnp.asarray(self.scale_tril).T
            return jnp.asarray(self.mean) + flat.reshape((n, *self.event_shape))
        return jnp.asarray(self.mean) + jnp.asarray(self.std) * z.reshape((n, *self.event_shape))

    def log_prob(self, x):
        """Log-density ``[B]`` of ``x[B, *event]``."""
        import jax
        import jax.numpy as jnp

        diff = (jnp.asarray(x, jnp.float32) - jnp.asarray(self.mean)).reshape(x.shape[0], -1)
        if self.scale_tril is not None:
            tril = jnp.asarray(self.scale_tril)
            z = jax.scipy.linalg.solve_triangular(tril, diff.T, lower=True).T
            log_det = jnp.sum(jnp.log(jnp.diag(tril)))
        else:
            std = jnp.asarray(self.std).reshape(-1)
            z = diff / std
            log_det = jnp.sum(jnp.log(std))
        return -0.5 * jnp.sum(z * z, axis=-1) - log_det - 0.5 * self._dim * jnp.log(2 * jnp.pi)

    def __repr__(self) -> str:
        kind = "full" if self.scale_tril is not None else "diagonal"
        return f"GaussianReference(event_shape={self.event_shape}, covariance={kind})"


def fraction_field(default: float):
    """An attrs field for a held-out fraction in the open interval (0, 1)."""
    return attrs.field(default=default, validator=in_range(0, 1, low_open=True, high_open=True))


def seed_field(default: int = 0):
    """An attrs field for a non-negative integer seed."""
    return attrs.field(default=default, validator=non_negative_int)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and test indices.

    The test part has ``round(test_fraction * n)`` indices, at least one, and
    leaves at least one for training. The same ``(n, test_fraction, seed)``
    always gives the same split. Both parts stay in shuffled order, so any
    prefix (``held_out(n)``) is a random subset even when the source file is
    sorted, e.g. by class.

    Raises:
        ValueError: ``n < 2``.
    """
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into train and test, got {n}")
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


def check_batch(x: Any, event_shape: tuple[int, ...], what: str) -> Any:
    """``x`` (an array or a dict with ``image``/``data``) as a float32 JAX array
    ``[B, *event_shape]``, after checking its shape and dtype.

    Raises:
        ValueError: naming ``what`` and the expected shape (with a reshape hint).
    """
    import jax.numpy as jnp

    x = batch_from(x)
    shape = tuple(np.shape(x))
    if len(shape) != len(event_shape) + 1 or shape[1:] != event_shape:
        hint = ""
        if np.prod(shape[1:]) == np.prod(event_shape) and len(shape) >= 1:
            hint = f"; reshape with x.reshape(len(x), *{event_shape})"
        raise ValueError(
            f"{what}: expected shape [batch, {', '.join(map(str, event_shape))}], got {list(shape)}{hint}"
        )
    if shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what}: expected numbers, got dtype {x.dtype}")
    return jnp.asarray(x, dtype=jnp.float32)
