"""ebmkit.viz: every plot writes a readable, non-blank PNG; bad input fails clearly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from ebmkit import viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path, *, min_height=100, min_width=100) -> np.ndarray:
    """The pixels of a PNG that exists, is large enough and is not one flat colour."""
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width
    assert pixels[..., :3].std() > 0.02, "the image is (nearly) blank"
    return pixels


def two_wells(x):
    x = np.asarray(x)
    return np.minimum((x[:, 0] - 2) ** 2, (x[:, 0] + 2) ** 2) + 0.5 * x[:, 1] ** 2


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """The functions must not open pyplot figures (they would leak in loops)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


# -- energy landscape ----------------------------------------------------------------


def test_landscape_of_a_function_writes_png(tmp_path, rng):
    path = tmp_path / "landscape.png"
    fig = viz.visualize_energy_landscape(
        two_wells, resolution=50, samples=rng.normal(size=(30, 2)), data=rng.normal(size=(40, 2)),
        path=path, title="two wells",
    )
    assert isinstance(fig, Figure)
    read_png(path, min_height=300, min_width=400)
    main, colorbar = fig.axes
    assert main.get_title() == "two wells"
    assert colorbar.get_ylabel() == "energy E(x)"
    assert [t.get_text() for t in main.get_legend().get_texts()] == ["data", "samples"]
    assert main.get_xlim() == (-4.0, 4.0)


def test_landscape_density_is_normalised_on_the_grid(tmp_path):
    fig = viz.visualize_energy_landscape(two_wells, bounds=((-5, 5), (-3, 3)), resolution=80,
                                         log_density=True, path=tmp_path / "d.png")
    read_png(tmp_path / "d.png")
    main, colorbar = fig.axes
    assert "density" in colorbar.get_ylabel()
    assert main.get_xlim() == (-5.0, 5.0) and main.get_ylim() == (-3.0, 3.0)
    # Two unit-variance-ish Gaussian wells: the peak density is about 1 / (2 * 2π·0.5^0.5).
    peak = 1 / (2 * 2 * np.pi * np.sqrt(0.5))
    assert colorbar.get_ylim()[0] == 0.0
    assert colorbar.get_ylim()[1] == pytest.approx(peak, rel=0.15)  # the top level caps the peak


def test_landscape_of_a_model(tmp_path):
    from ebmkit import assemble

    model = assemble(energy={"name": "mlp", "hidden_dims": [8]}, dataset="8gaussians")
    fig = viz.visualize_energy_landscape(model, resolution=30)  # the guide's call
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []  # no path, nothing written
    fig.savefig(tmp_path / "m.png")
    read_png(tmp_path / "m.png")


def test_landscape_handles_flat_and_partly_infinite_energies(tmp_path):
    viz.visualize_energy_landscape(lambda x: np.zeros(len(x)), resolution=20, path=tmp_path / "flat.png")
    assert (tmp_path / "flat.png").stat().st_size > 0

    def walled(x):
        e = two_wells(x)
        return np.where(np.abs(x[:, 0]) > 3.5, np.inf, e)

    viz.visualize_energy_landscape(walled, resolution=40, path=tmp_path / "walled.png")
    read_png(tmp_path / "walled.png")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples": np.zeros((5, 3))}, r"samples: expected 2-D points of shape \[N, 2\], got shape \[5, 3\]"),
        ({"data": np.zeros(4)}, r"data: expected 2-D points"),
        ({"bounds": (4, -4)}, "low < high"),
        ({"bounds": (1, 2, 3)}, "bounds must be"),
        ({"resolution": 1}, "resolution must be an integer >= 2"),
    ],
)
def test_landscape_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.visualize_energy_landscape(two_wells, **{"resolution": 10, **kwargs})


def test_landscape_rejects_bad_energies_and_models():
    with pytest.raises(ValueError, match="one energy per point"):
        viz.visualize_energy_landscape(lambda x: np.zeros((len(x), 2)), resolution=10)
    with pytest.raises(ValueError, match="not finite anywhere"):
        viz.visualize_energy_landscape(lambda x: np.full(len(x), np.nan), resolution=10)
    image_model = SimpleNamespace(event_shape=(8, 8, 1), energy=lambda x: x.sum(axis=(1, 2, 3)))
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*2-D points.*save_image_grid"):
        viz.visualize_energy_landscape(image_model)
    with pytest.raises(TypeError, match="expected an EBM or a function"):
        viz.visualize_energy_landscape(42)


# -- samples -------------------------------------------------------------------------


def test_plot_samples(tmp_path, rng):
    path = tmp_path / "sub" / "samples.png"  # parent folders are created
    samples = rng.normal(0, 3, size=(200, 2))
    fig = viz.plot_samples(samples, data=rng.normal(size=(100, 2)), bounds=(-2, 2), path=path)
    read_png(path)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-2.0, 2.0)
    outside = int(np.sum(np.any(np.abs(samples) > 2, axis=1)))
    assert f"{outside} of 200 samples outside the plot" in [t.get_text() for t in ax.texts]


def test_plot_samples_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"plot_samples: samples: expected 2-D points .* got shape \[10\]"):
        viz.plot_samples(np.zeros(10))
    with pytest.raises(ValueError, match="plot_samples: data"):
        viz.plot_samples(np.zeros((10, 2)), data=np.zeros((3, 2, 2)))


# -- image grids ---------------------------------------------------------------------


def test_image_grid_is_pixel_exact(tmp_path):
    values = np.array([-1.0, 0.0, 1.0, 5.0, -5.0])  # the last two are clipped
    images = np.broadcast_to(values[:, None, None, None], (5, 8, 8, 1))
    path = tmp_path / "grid.png"
    fig = viz.save_image_grid(images, path, min_size=0)
    assert isinstance(fig, Figure)
    pixels = matplotlib.image.imread(path)
    # 3 per row (ceil(sqrt(5))), 2 rows, 2 pixels of border around every tile.
    assert pixels.shape[:2] == (2 * 10 + 2, 3 * 10 + 2)
    expected = {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.0, 4: 0.0}
    for i, grey in expected.items():
        r, c = divmod(i, 3)
        tile = pixels[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10, :3]
        np.testing.assert_allclose(tile, grey, atol=1 / 255)
    border = pixels[0, 0, :3]
    assert not np.allclose(border, border[0])  # tinted: distinct from any grey tile


def test_image_grid_rgb_nrow_and_scaling(tmp_path, rng):
    images = rng.uniform(-1, 1, size=(6, 16, 16, 3)).astype(np.float32)
    images[0, 0, 0] = np.nan  # shown as the low end, not an error
    path = tmp_path / "rgb.png"
    viz.save_image_grid(images, path, nrow=2, value_range=(-1, 1))
    grid = (3 * 18 + 2, 2 * 18 + 2)  # 3 rows of 2
    scale = -(-256 // max(grid))
    pixels = read_png(path, min_height=1, min_width=1)
    assert pixels.shape[:2] == (grid[0] * scale, grid[1] * scale)
    assert max(pixels.shape[:2]) >= 256


def test_image_grid_without_extension_is_png(tmp_path):
    path = tmp_path / "grid"
    viz.save_image_grid(np.zeros((2, 4, 4, 1)), path)
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((8, 8)), r"\[N, H, W, C\] with C = 1 or 3, got shape \[8, 8\]"),
        (np.zeros((5, 8, 8)), r"got shape \[5, 8, 8\] \(for one image use images\[None\]; .*images\[\.\.\., None\]"),
        (np.zeros((5, 8, 8, 2)), r"C = 1 or 3, got shape \[5, 8, 8, 2\]"),
        (np.zeros((0, 8, 8, 1)), r"got shape \[0, 8, 8, 1\]"),
        (np.array([[[["a"]]]]), "numeric images"),
    ],
)
def test_image_grid_rejects_bad_shapes(tmp_path, images, message):
    with pytest.raises(ValueError, match=message):
        viz.save_image_grid(images, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_image_grid_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="value_range"):
        viz.save_image_grid(np.zeros((2, 4, 4, 1)), tmp_path / "x.png", value_range=(1, -1))
    with pytest.raises(ValueError, match="nrow must be a positive integer"):
        viz.save_image_grid(np.zeros((2, 4, 4, 1)), tmp_path / "x.png", nrow=0)


# -- training curves -----------------------------------------------------------------


def _history(n=20, *, nll_every=0):
    rows = []
    for i in range(1, n + 1):
        row = {"step": 10 * i, "loss": 1 / i, "real_energy_mean": -1 + 1 / i,
               "fake_energy_mean": 1 - 1 / i, "energy_gap": 2 - 2 / i, "steps_per_s": 100.0}
        if nll_every and i % nll_every == 0:
            row.update(nll=3 - i / n, kl_gap=0.5 - i / (4 * n))
        rows.append(row)
    return rows


def test_training_curves_panels(tmp_path):
    fig = viz.plot_training_curves(_history(), path=tmp_path / "c.png")
    read_png(tmp_path / "c.png", min_width=600)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "energy", "energy gap (fake − real)"]
    energy = fig.axes[1]
    assert [t.get_text() for t in energy.get_legend().get_texts()] == ["real (data)", "fake (samples)"]
    np.testing.assert_allclose(energy.lines[0].get_xdata(), np.arange(10, 210, 10))

    fig = viz.plot_training_curves(_history(nll_every=5))
    assert len(fig.axes) == 4 and fig.axes[3].get_title().startswith("held-out NLL")
    assert len(fig.axes[3].lines[0].get_xdata()) == 4  # rows without nll are skipped


def test_training_curves_from_metrics_jsonl_run_dir_and_result(tmp_path):
    lines = [json.dumps(r) for r in _history(5)]
    lines.insert(2, "")  # blank lines are fine
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for source in (tmp_path / "metrics.jsonl", str(tmp_path), SimpleNamespace(history=_history(5))):
        fig = viz.plot_training_curves(source)
        np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert len(viz.read_metrics(tmp_path)) == 5


def test_training_curves_without_step_and_partial_keys(tmp_path):
    fig = viz.plot_training_curves([{"real_energy_mean": 0.0, "fake_energy_mean": 1.0},
                                    {"real_energy_mean": -0.5, "fake_energy_mean": 0.5}],
                                   path=tmp_path / "p.png")
    read_png(tmp_path / "p.png")
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), [1.0, 1.0])  # gap derived
    assert "not logged" in [t.get_text() for t in fig.axes[0].texts]


def test_training_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        viz.plot_training_curves([])
    with pytest.raises(ValueError, match="no loss or energy metrics.*its keys are a, b"):
        viz.plot_training_curves([{"a": 1, "b": 2}])
    with pytest.raises(ValueError, match="list of dicts"):
        viz.plot_training_curves([1, 2])
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"loss": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        viz.plot_training_curves(bad)
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        viz.plot_training_curves(tmp_path / "missing.jsonl")


# -- energy histogram ----------------------------------------------------------------


def test_energy_histogram(tmp_path, rng):
    real, fake = rng.normal(-1, 0.5, 300), rng.normal(0.5, 0.5, 300)
    fig = viz.plot_energy_histogram(real, fake, tmp_path / "h.png")
    read_png(tmp_path / "h.png")
    ax = fig.axes[0]
    assert ax.get_title() == f"energy gap (fake − real) = {fake.mean() - real.mean():.3g}"
    assert len(ax.lines) == 2  # the two means
    viz.plot_energy_histogram(np.ones(3), np.ones(3))  # identical values: still bins


def test_energy_histogram_errors():
    with pytest.raises(ValueError, match=r"real_energies must be a non-empty 1-D array E\[B\], got shape \[2, 2\]"):
        viz.plot_energy_histogram(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="no finite values in fake_energies"):
        viz.plot_energy_histogram(np.zeros(2), np.full(2, np.nan))
