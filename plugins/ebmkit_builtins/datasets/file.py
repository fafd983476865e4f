"""``file``: the user's own samples from a ``.npy``, ``.npz`` or ``.csv`` file.

Rows are samples. A seeded split holds out ``test_fraction`` of them; with
``standardize`` every feature is centred and scaled by the *training* split's
mean and std. Problems in the file (missing, non-numeric cells, NaN/inf,
too few rows) are reported with the file name and where in it they are.

:func:`split_indices` is the seeded train/test split the other finite data
sets (``digits``, ``mnist``) share.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ebmkit.config import DatasetConfig, config_class
from ebmkit.data import ArrayDataset, fraction_field, seed_field, split_indices
from ebmkit.nn import check_fits_in_memory
from ebmkit.registry import ComponentSpec
from ebmkit.suggest import did_you_mean
from ebmkit.types import BuildContext

__all__ = [
    "FileConfig",
    "DataFileError",
    "build",
    "fraction_field",
    "load_array",
    "seed_field",
    "split_indices",
    "spec",
]

#: Relative margin added on each side of the data range for ``bounds``.
BOUNDS_MARGIN = 0.1
#: CSV files above this size are refused (parsing text is slow): save them as .npy.
MAX_TEXT_BYTES = 256 * 2**20


class DataFileError(ValueError):
    """A data file cannot be used; the message names the file and the place."""


@config_class
class FileConfig(DatasetConfig):
    """Config of ``file``.

    Attributes:
        path: a ``.npy``, ``.npz`` or ``.csv`` file whose rows are samples.
        key: the array to use in an ``.npz``; by default its only array, else
            ``x``, else ``data``, else the first one.
        delimiter: ``.csv`` column separator; by default sniffed from the first
            line (comma, tab, semicolon, else whitespace).
        test_fraction: fraction of rows held out as the test split.
        split_seed: seed of the train/test split.
        standardize: centre and scale each feature by the training split's
            mean and std.
    """

    path: str
    key: str | None = None
    delimiter: str | None = None
    test_fraction: float = fraction_field(0.1)
    split_seed: int = seed_field(0)
    standardize: bool = False


# -- readers ---------------------------------------------------------------------


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if not keys:
            raise DataFileError(f"{path}: the .npz archive holds no arrays")
        if key is not None:
            if key not in keys:
                hint = did_you_mean(key, keys)
                raise DataFileError(
                    f"{path}: no array named {key!r} in the archive; it holds {keys}"
                    + (f" ({hint})" if hint else "")
                )
            chosen = key
        elif len(keys) == 1:
            chosen = keys[0]
        else:
            chosen = next((k for k in ("x", "data") if k in keys), keys[0])
        return archive[chosen]


def _sniff_delimiter(first_line: str) -> str | None:
    for cand in (",", "\t", ";"):
        if cand in first_line:
            return cand
    return None  # whitespace


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_cells(line: str, delim: str | None) -> list[str]:
    if delim is None:
        return line.split()
    return [c.strip() for c in next(csv.reader(io.StringIO(line), delimiter=delim))]


def _read_csv(path: Path, delimiter: str | None) -> np.ndarray:
    text = path.read_text(encoding="utf-8-sig")
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise DataFileError(f"{path}: the file is empty")
    delim = delimiter if delimiter is not None else _sniff_delimiter(lines[0][1])
    first = _csv_cells(lines[0][1], delim)
    # A header is a first row with no number in it; a row mixing numbers and
    # text is data with a typo, and is reported as such below.
    header = None if any(_is_number(c) for c in first) else first
    if header is not None:
        lines = lines[1:]
    if not lines:
        raise DataFileError(f"{path}: the file has a header but no data rows")
    try:
        x = np.loadtxt([line for _, line in lines], delimiter=delim, comments=None, ndmin=2)
    except ValueError:
        x = None
    if x is not None and np.isfinite(x).all():
        return x
    # Slow path, only to say exactly where the problem is.
    return _parse_csv_strictly(path, lines, delim, header, width=len(first))


def _parse_csv_strictly(path, lines, delim, header, width) -> np.ndarray:
    rows = []
    for lineno, line in lines:
        row = _csv_cells(line, delim)
        if len(row) != width:
            raise DataFileError(f"{path}: line {lineno} has {len(row)} columns, expected {width}")
        values = []
        for col, cell in enumerate(row):
            try:
                values.append(float(cell))
            except ValueError:
                name = f" ({header[col]!r})" if header is not None else ""
                shown = repr(cell) if cell else "an empty cell"
                raise DataFileError(
                    f"{path}: line {lineno}, column {col + 1}{name}: {shown} is not a number"
                ) from None
        rows.append(values)
    x = np.asarray(rows, dtype=np.float64)
    linenos = [lineno for lineno, _ in lines]
    _check_finite(x, path, lambda r, c: f"line {linenos[r]} column {c + 1}")
    return x


def _check_finite(x: np.ndarray, path: Path, locate) -> None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    where = np.argwhere(bad.reshape(len(x), -1))
    shown = ", ".join(locate(int(r), int(c)) for r, c in where[:5])
    more = f" and {len(where) - 5} more" if len(where) > 5 else ""
    rows = int(bad.reshape(len(x), -1).any(axis=1).sum())
    raise DataFileError(
        f"{path}: {len(where)} NaN/inf value(s) in {rows} row(s): {shown}{more}; "
        "remove or impute them"
    )


def load_array(path: str | os.PathLike, *, key: str | None = None, delimiter: str | None = None) -> np.ndarray:
    """The samples in ``path`` as ``float[n, *event]`` (1-D data becomes ``[n, 1]``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFileError: unknown suffix, unreadable or non-numeric content,
            NaN/inf values, or fewer than 2 rows.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"file data set: {str(p)!r} does not exist or is not a file "
            "(set path to a .npy, .npz or .csv file)"
        )
    suffix = p.suffix.lower()
    size = p.stat().st_size
    if suffix in (".csv", ".txt", ".tsv") and size > MAX_TEXT_BYTES:
        raise DataFileError(
            f"{p}: {size / 2**20:.0f} MiB of text is too large to parse here (limit "
            f"{MAX_TEXT_BYTES // 2**20} MiB); save it as .npy (numpy.save), which loads at disk speed"
        )
    check_fits_in_memory(size // 4 * 2, f"dataset.path ({p})")  # read, then converted to float64
    try:
        if suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            x = _read_npz(p, key)
        elif suffix in (".csv", ".txt", ".tsv"):
            x = _read_csv(p, delimiter)
        else:
            raise DataFileError(f"{p}: unknown file type {suffix!r}; use .npy, .npz or .csv")
    except DataFileError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"{p}: cannot read it as {suffix}: {exc}") from exc
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataFileError(f"{p}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise DataFileError(f"{p}: expected an array of samples, got a scalar")
    if x.ndim == 1:
        x = x[:, None]
    if len(x) < 2:
        raise DataFileError(f"{p}: need at least 2 samples (rows) for a train/test split, got {len(x)}")
    x = x.astype(np.float64, copy=False)
    _check_finite(x, p, lambda r, c: f"row {r} feature {c} (0-based)")
    if x.size and np.abs(x).max() > np.finfo(np.float32).max:
        raise DataFileError(f"{p}: values beyond the float32 range; rescale the data")
    return x


def _bounds(x: np.ndarray) -> tuple[float, float]:
    low, high = float(x.min()), float(x.max())
    margin = BOUNDS_MARGIN * (high - low) if high > low else 1.0
    return (low - margin, high + margin)


def build(config: FileConfig, ctx: BuildContext | None = None) -> ArrayDataset:
    """Load ``config.path`` and split it."""
    x = load_array(config.path, key=config.key, delimiter=config.delimiter)
    train_idx, test_idx = split_indices(len(x), config.test_fraction, config.split_seed)
    train, test = x[train_idx], x[test_idx]
    if config.standardize:
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        train, test = (train - mean) / std, (test - mean) / std
    ds = ArrayDataset(
        "file",
        train,
        test,
        modality="points",
        bounds=_bounds(np.concatenate([train, test])),
    )
    ds.config = config
    ds.source = str(Path(config.path).expanduser())
    return ds


spec = ComponentSpec(
    kind="dataset",
    name="file",
    config=FileConfig,
    build=build,
    summary="your own samples from a .npy, .npz or .csv file (rows are samples)",
)
