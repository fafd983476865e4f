"""ebmkit-mlflow: what runs log is read back through MLflow's own client, from the real store.

The plugin is reached through its ``ebmkit.plugins`` entry point only. When the
distribution is not installed, the fixture installs a fake one built from the
entry points its own pyproject.toml declares, so what is tested is still that
declaration.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
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

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

CONTRIB = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((CONTRIB / "pyproject.toml").read_text(encoding="utf-8"))
DIST = "ebmkit-mlflow"
#: A tiny PCD run on 8gaussians: a few seconds on a CPU.
TINY = ["energy.hidden_dims=[8]", "sampler.num_steps=2", "train.batch_size=16", "buffer.capacity=64",
        "train.log_every=5", "train.checkpoint_every=10"]
PLOTS = {"samples.png", "energy.png", "curves.png"}


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
def mlflow_plugin(tmp_path, monkeypatch):
    """Make sure ebmkit-mlflow is discoverable and enabled, logging to its
    default store; plugin errors are fatal."""
    monkeypatch.delenv("EBMKIT_DISABLE_PLUGINS", raising=False)
    for variable in ("MLFLOW_TRACKING_URI", "EBMKIT_MLFLOW_EXPERIMENT", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(variable, raising=False)
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


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve().as_posix()}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder whose MLflow store the tests share (creating one costs seconds)."""
    return tmp_path_factory.mktemp("runs")


def only_run(client: MlflowClient, experiment: str = "ebmkit"):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, runs
    return runs[0]


def expected_params(run_dir: Path) -> dict[str, str]:
    """config.toml flattened to dotted keys: strings as written, the rest as JSON."""
    out = {}

    def walk(table: dict, prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value if isinstance(value, str) else json.dumps(value)

    walk(tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")), "")
    return out


def assert_metrics_match(client: MlflowClient, run, run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows
    names = {name for row in rows for name in row if name != "step"}
    assert names <= set(run.data.metrics)
    for name in names:
        logged = [(row["step"], row[name]) for row in rows if name in row]
        history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert [s for s, _, _ in history] == [s for s, _ in logged], name
        np.testing.assert_allclose([v for _, _, v in history], [v for _, v in logged], rtol=1e-12, err_msg=name)
    return rows


def artifacts(client: MlflowClient, run_id: str, into: Path) -> Path:
    return Path(client.download_artifacts(run_id, "", str(into)))


def test_declares_one_hook_plugin_entry_point():
    project = PYPROJECT["project"]
    assert project["name"] == DIST
    assert any(dep.startswith("ebmkit-jax>=0.2") for dep in project["dependencies"])
    assert any(dep.startswith("mlflow-skinny>=") for dep in project["dependencies"])
    assert project["entry-points"] == {"ebmkit.plugins": {"mlflow": "ebmkit_mlflow:plugin"}}


def test_ebmkit_train_logs_params_metrics_artifacts_and_resumes(mlflow_plugin, store, tmp_path):
    (row,) = [r for r in hook_plugins() if r.dist == DIST]
    assert (row.name, row.status) == ("mlflow", "loaded")
    assert row.summary.startswith("Log each run's config, metrics, plots and summary to MLflow")

    run_dir = store / "run"
    sets = [arg for s in TINY for arg in ("--set", s)]
    result = CliRunner().invoke(cli, ["train", "--steps", "20", "--out", str(run_dir), "-q", *sets])
    assert result.exit_code == 0, result.output + repr(result.exception)

    # The default store: SQLite in the run directory's parent, artefacts beside it.
    client = MlflowClient(sqlite_uri(store / "mlflow.db"))
    run = only_run(client)
    assert (run.info.status, run.info.run_name) == ("FINISHED", "run")
    assert run.info.artifact_uri.startswith((store / "mlartifacts").resolve().as_uri())
    assert run.data.tags["ebmkit.run_dir"] == str(run_dir.resolve())
    record = json.loads((run_dir / "mlflow_run.json").read_text(encoding="utf-8"))
    assert (record["run_id"], record["tracking_uri"]) == (run.info.run_id, sqlite_uri(store / "mlflow.db"))

    # Params: the resolved config, each component's provider included.
    assert run.data.params == expected_params(run_dir)
    assert run.data.params["train.steps"] == "20" and run.data.params["energy.hidden_dims"] == "[8]"
    assert run.data.params["sampler.provider"].startswith("ebmkit-jax ")

    # Metrics: every row of metrics.jsonl at its step; the summary's numbers at the last step.
    rows = assert_metrics_match(client, run, run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    (nll,) = client.get_metric_history(run.info.run_id, "summary/nll")
    assert nll.step == 20 and nll.value == pytest.approx(summary["nll"], rel=1e-12)

    # Artefacts: the files of the run directory, byte for byte; summary.json as
    # the trainer reported it (ebmkit train's file adds wall time, plots, ...).
    got = artifacts(client, run.info.run_id, tmp_path / "download")
    assert {p.name for p in got.iterdir()} == {"config.toml", "summary.json", *PLOTS}
    assert set(summary["plots"]) == PLOTS
    for name in ["config.toml", *PLOTS]:
        assert (got / name).read_bytes() == (run_dir / name).read_bytes(), name
    logged_summary = json.loads((got / "summary.json").read_text(encoding="utf-8"))
    assert logged_summary["steps"] == 20 and "nll" in logged_summary
    assert {k: summary[k] for k in logged_summary} == logged_summary

    # Resuming continues the same MLflow run; the longer run is a tag (params never change).
    result = CliRunner().invoke(cli, ["train", "--resume", "--steps", "30", "--out", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    resumed = only_run(client)
    assert (resumed.info.run_id, resumed.info.status) == (run.info.run_id, "FINISHED")
    assert [row["step"] for row in assert_metrics_match(client, resumed, run_dir)] == [5, 10, 15, 20, 25, 30]
    assert resumed.data.params["train.steps"] == "20"
    assert resumed.data.tags["ebmkit.resumed.train.steps"] == "30"
    assert resumed.data.metrics["summary/nll"] == pytest.approx(
        json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["nll"], rel=1e-12
    )


def test_a_failed_run_is_failed_in_the_store_the_environment_names(mlflow_plugin, store, tmp_path, monkeypatch):
    uri = sqlite_uri(store / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("EBMKIT_MLFLOW_EXPERIMENT", "custom")
    client = MlflowClient(uri)
    # An existing experiment is used as it is (a new one in a named store
    # would keep its artefacts in ./mlruns, MLflow's default).
    artifact_root = (tmp_path / "custom-artifacts").as_uri()
    client.create_experiment("custom", artifact_location=artifact_root)

    def evaluate(trainer):
        raise RuntimeError("evaluation broke")

    config = ebmkit.load_config(None, overrides=[*TINY, "train.steps=10"])
    dataset = build_dataset(config.dataset)
    trainer = Trainer(ebmkit.EBM(config, data=data_context(dataset)), dataset, run_dir=tmp_path / "run",
                      evaluate=evaluate)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        trainer.fit()

    assert not (tmp_path / "mlflow.db").exists()  # not the default store of this run directory
    run = only_run(client, "custom")
    assert run.info.status == "FAILED" and run.info.artifact_uri.startswith(artifact_root)
    assert run.data.tags["ebmkit.error"] == "RuntimeError: evaluation broke"
    # What was logged before it failed is kept.
    assert [row["step"] for row in assert_metrics_match(client, run, tmp_path / "run")] == [5, 10]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.toml"]


def test_a_broken_store_does_not_stop_the_run(mlflow_plugin, tmp_path, monkeypatch):
    """Without EBMKIT_STRICT_PLUGINS a plugin that fails is disabled with a
    warning, and the run and its files carry on."""
    from ebmkit.plugins import EbmkitPluginWarning

    monkeypatch.delenv("EBMKIT_STRICT_PLUGINS")
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "a_file" / "mlflow.db"))  # cannot be created
    config = ebmkit.load_config(None, overrides=[*TINY, "train.steps=10"])
    dataset = build_dataset(config.dataset)
    run_dir = tmp_path / "run"
    trainer = Trainer(ebmkit.EBM(config, data=data_context(dataset)), dataset, run_dir=run_dir,
                      evaluate=lambda trainer: {})
    with pytest.warns(EbmkitPluginWarning, match=r"ebmkit-mlflow .*raised in ebmkit_run_start"):
        result = trainer.fit()
    assert result.step == 10
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rows] == [5, 10]
    assert (run_dir / "checkpoints" / "10").is_dir()
    assert not (run_dir / "mlflow_run.json").exists()


def test_odd_metric_names_and_non_finite_values(mlflow_plugin, store, tmp_path, monkeypatch):
    """The hooks called directly, as a run without a trainer-written config.toml."""
    from ebmkit_mlflow import plugin

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hooks")
    config = ebmkit.load_config(None, overrides=TINY)
    run_dir = store / "hooks"
    run_dir.mkdir()
    plugin.ebmkit_run_start(config=config, run_dir=run_dir)
    plugin.ebmkit_step_end(step=3, metrics={"kl(p||q)": 0.5, "loss": math.nan, "converged": True, "note": "x"})
    plugin.ebmkit_run_end(run_dir=run_dir, summary={"steps": 3, "nll": math.nan, "kl_gap": 0.25}, error=None)

    client = MlflowClient(sqlite_uri(store / "mlflow.db"))
    run = only_run(client, "hooks")
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"kl_p__q_", "loss", "summary/kl_gap"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "kl_p__q_")] == [(3, 0.5)]
    assert math.isnan(run.data.metrics["loss"])
    got = artifacts(client, run.info.run_id, tmp_path / "download")
    assert (got / "config.toml").read_text(encoding="utf-8") == ebmkit.dump_config(config)
    assert json.loads((got / "summary.json").read_text(encoding="utf-8")) == {"steps": 3, "nll": None, "kl_gap": 0.25}


def test_disabled_by_ebmkit_disable_plugins(mlflow_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "ebmkit-mlflow")
    _reload()
    (row,) = [r for r in hook_plugins() if r.dist == DIST]
    assert row.status == "disabled"
    summary = ebmkit.train_job(None, overrides=[*TINY, "train.steps=10"], out=tmp_path / "run", plots=False)
    assert summary["steps"] == 10
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlartifacts").exists()
    assert not (tmp_path / "run" / "mlflow_run.json").exists()
