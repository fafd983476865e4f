"""Data set contract and helpers. Data sets themselves are components.

A dataset spec's ``build(config)`` returns a :class:`Dataset`. Data lives on
the host as NumPy; the trainer moves batches to the device. Every random draw
takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ebmkit.config.base import ConfigBase, config_class, non_negative

__all__ = ["Dataset", "ArrayDataset", "AugmentConfig", "augment", "batch_from", "HELD_OUT_SEED"]

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
    """

    name: str = "dataset"
    event_shape: tuple[int, ...] = ()
    modality: str = "points"
    bounds: tuple[float, float] | None = None
    entropy: float | None = None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` training samples (with augmentation, if configured)."""
        raise NotImplementedError

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
    crop_padding: int = attrs.field(default=0)

    @crop_padding.validator
    def _check_pad(self, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"must be an integer >= 0, got {value!r}")

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

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(0, len(self.train), size=n)
        return augment(self.train[idx], self.augment_config, rng, image=self.modality == "image")

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        if n is None or n >= len(self.test):
            return self.test
        return self.test[:n]


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


