"""ebmkit-tensorboard: runs leave event files that TensorBoard's own reader reads back.

The plugin is reached through its ``ebmkit.plugins`` entry point only. When the
distribution is not installed, the fixture installs a fake one built from the
entry points its own pyproject.toml declares, so what is tested is still that
declaration.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ebmkit
from ebmkit.cli import cli
from ebmkit.components import build_dataset, data_context
from ebmkit.plugins import hook_plugins, reset_plugin_manager
from ebmkit.training import Trainer

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

CONTRIB = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((CONTRIB / "pyproject.toml").read_text(encoding="utf-8"))
DIST = "ebmkit-tensorboard"
#: A tiny PCD run on 8gaussians: a few seconds on a CPU.
TINY = ["energy.hidden_dims=[8]", "sampler.num_steps=2", "train.batch_size=16", "buffer.capacity=64",
        "train.log_every=5", "train.checkpoint_every=10"]


def _fake_dist(root: Path) -> None:
    project = PYPROJECT["project"]
    info = root / f"{DIST.replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")


def _reload() -> None:
    ebmkit.registry.invalidate_caches()
    reset_plugin_manager()


@pytest.fixture
def tensorboard_plugin(tmp_path, monkeypatch):
    """Make sure ebmkit-tensorboard is discoverable and enabled; plugin errors are fatal."""
    monkeypatch.delenv("EBMKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("EBMKIT_STRICT_PLUGINS", "1")  # a raising hook fails the test, not just warns
    try:
        md.distribution(DIST)
    except md.PackageNotFoundError:
        _fake_dist(tmp_path / "site")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.syspath_prepend(str(CONTRIB))
    _reload()
    yield
    monkeypatch.undo()
    _reload()


def read_events(run_dir: Path):
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


def assert_scalars_match_metrics(events, run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows
    names = {name for row in rows for name in row if name != "step"}
    assert names <= set(events.Tags()["scalars"])
    for name in names:
        logged = [(row["step"], row[name]) for row in rows if name in row]
        written = [(e.step, e.value) for e in events.Scalars(name)]
        # TensorBoard keeps scalars as float32.
        assert [s for s, _ in written] == [s for s, _ in logged], name
        np.testing.assert_allclose([v for _, v in written], [v for _, v in logged], rtol=1e-6, err_msg=name)
    return rows


def config_text(events) -> str:
    (event,) = events.Tensors("config/text_summary")
    return event.tensor_proto.string_val[0].decode("utf-8")


def test_declares_one_hook_plugin_entry_point():
    project = PYPROJECT["project"]
    assert project["name"] == DIST
    assert any(dep.startswith("ebmkit-jax>=0.2") for dep in project["dependencies"])
    assert any(dep.startswith("tensorboardX>=2.6") for dep in project["dependencies"])
    assert project["entry-points"] == {"ebmkit.plugins": {"tensorboard": "ebmkit_tensorboard:plugin"}}


def test_ebmkit_train_writes_metrics_plots_and_config(tensorboard_plugin, tmp_path):
    (row,) = [r for r in hook_plugins() if r.dist == DIST]
    assert (row.name, row.status) == ("tensorboard", "loaded")
    assert row.summary.startswith("Write each run's metrics, plots and config")

    run_dir = tmp_path / "run"
    sets = [arg for s in TINY for arg in ("--set", s)]
    result = CliRunner().invoke(cli, ["train", "--steps", "20", "--out", str(run_dir), "-q", *sets])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert event_files(run_dir)

    events = read_events(run_dir)
    rows = assert_scalars_match_metrics(events, run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    (nll,) = events.Scalars("summary/nll")
    assert nll.step == 20 and nll.value == pytest.approx(summary["nll"], rel=1e-6)

    # Every plot the run wrote, as an image of the same size at the last step.
    from PIL import Image

    assert sorted(summary["plots"]) == ["curves.png", "energy.png", "samples.png"]
    assert sorted(events.Tags()["images"]) == ["plots/curves", "plots/energy", "plots/samples"]
    for name in summary["plots"]:
        (image,) = events.Images("plots/" + Path(name).stem)
        with Image.open(run_dir / name) as png:
            assert (image.step, image.width, image.height) == (20, *png.size)

    # The resolved config, verbatim (indented as a markdown code block).
    text = config_text(events)
    assert all(line.startswith("    ") for line in text.splitlines() if line)
    toml = "\n".join(line[4:] for line in text.splitlines())
    assert tomllib.loads(toml) == tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))


def test_a_resumed_trainer_run_shows_each_step_once(tensorboard_plugin, tmp_path):
    """The Python Trainer writes events too, and after a resume that redoes
    steps TensorBoard shows what metrics.jsonl holds, each step once."""
    run_dir = tmp_path / "run"

    def fit(steps: int, resume: bool) -> Trainer:
        config = ebmkit.load_config(None, overrides=[*TINY, f"train.steps={steps}"])
        dataset = build_dataset(config.dataset)
        trainer = Trainer(ebmkit.EBM(config, data=data_context(dataset)), dataset, run_dir=run_dir,
                          evaluate=lambda trainer: {})
        trainer.fit(resume=resume)
        return trainer

    fit(20, resume=False)
    # As if the run had died after logging step 20 but before its checkpoint:
    # the resume starts from step 10 and redoes 11-20 (rows 15 and 20 again).
    shutil.rmtree(run_dir / "checkpoints" / "20")
    first_files = event_files(run_dir)
    fit(25, resume=True)
    assert len(event_files(run_dir)) == len(first_files) + 1

    events = read_events(run_dir)
    rows = assert_scalars_match_metrics(events, run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20, 25]
    assert not events.Tags()["images"]  # a bare Trainer writes no plots


def test_disabled_by_ebmkit_disable_plugins(tensorboard_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "ebmkit-tensorboard")
    _reload()
    (row,) = [r for r in hook_plugins() if r.dist == DIST]
    assert row.status == "disabled"
    summary = ebmkit.train_job(None, overrides=[*TINY, "train.steps=10"], out=tmp_path / "run")
    assert summary["steps"] == 10 and summary["plots"]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert event_files(tmp_path / "run") == []
