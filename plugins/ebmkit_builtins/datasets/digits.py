"""``digits``: scikit-learn's 8×8 handwritten digits, shipped inside scikit-learn.

1,797 images (``sklearn.datasets.load_digits``, no download), pixel values
0..16 mapped linearly to [-1, 1], shaped ``[n, 8, 8, 1]``. A seeded split holds
out ``test_fraction`` of them; labels travel along (``dataset.labels``).
scikit-learn is the optional extra ``ebmkit-jax[digits]``.
"""

from __future__ import annotations

import attrs
import numpy as np

from ebmkit.config import DatasetConfig, config_class
from ebmkit.data import ArrayDataset, AugmentConfig, fraction_field, seed_field, split_indices
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["DigitsConfig", "build", "load_digits_arrays", "spec"]

#: Largest raw pixel value of ``load_digits``.
MAX_PIXEL = 16.0


@config_class
class DigitsConfig(DatasetConfig):
    """Config of ``digits``.

    Attributes:
        test_fraction: fraction of the 1,797 images held out as the test split.
        split_seed: seed of the train/test split.
        augment: augmentation of training samples (default: none).
    """

    test_fraction: float = fraction_field(0.2)
    split_seed: int = seed_field(0)
    augment: AugmentConfig = attrs.field(factory=AugmentConfig)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All digits as ``(images float32[n, 8, 8, 1] in [-1, 1], labels int64[n])``.

    Raises:
        ImportError: scikit-learn is not installed (says how to install it).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the 'digits' data set needs scikit-learn, which ships the images: "
            "pip install 'ebmkit-jax[digits]'"
        ) from exc
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[..., None]
    images = images * np.float32(2.0 / MAX_PIXEL) - np.float32(1.0)
    return images, np.asarray(bunch.target, dtype=np.int64)


def build(config: DigitsConfig, ctx: BuildContext | None = None) -> ArrayDataset:
    """The digits split by ``config``."""
    images, labels = load_digits_arrays()
    train_idx, test_idx = split_indices(len(images), config.test_fraction, config.split_seed)
    ds = ArrayDataset(
        "digits",
        images[train_idx],
        images[test_idx],
        modality="image",
        augment_config=config.augment,
        labels=(labels[train_idx], labels[test_idx]),
        bounds=(-1.0, 1.0),
    )
    ds.config = config
    return ds


spec = ComponentSpec(
    kind="dataset",
    name="digits",
    config=DigitsConfig,
    build=build,
    summary="scikit-learn's 1,797 8x8 digits as [n, 8, 8, 1] images in [-1, 1] (extra: digits)",
)
