"""Reopening a run directory: ebmkit.run.open_run and `ebmkit sample/evaluate/diagnose`."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

import ebmkit
from ebmkit.cli import cli
from ebmkit.components import build_dataset
from ebmkit.run import Run, RunError, diagnosis_notes, jsonable, open_run
from ebmkit.training.checkpoint import CheckpointError

PROBE = np.array([[0.0, 0.0], [2.0, 0.0], [-1.0, 3.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 20-step run with checkpoints at steps 0, 10 and 20; returns (run_dir, model)."""
    from ebmkit.training import Trainer

    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    cfg = ebmkit.load_config(
        energy={"name": "mlp", "hidden_dims": [16, 16]},
        sampler={"name": "langevin", "num_steps": 3},
        buffer={"name": "replay", "capacity": 256},
        train={"steps": 20, "batch_size": 32, "log_every": 10, "checkpoint_every": 10},
    )
    ds = build_dataset(cfg.dataset)
    model = ebmkit.EBM(cfg, event_shape=ds.event_shape, data_bounds=ds.bounds)
    Trainer(model, ds, run_dir=run_dir).fit()
    return run_dir, model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- open_run ------------------------------------------------------------------------


def test_open_run_restores_the_latest_checkpoint(trained):
    run_dir, model = trained
    run = open_run(run_dir)
    assert isinstance(run, Run)
    assert run.step == 20 and run.run_dir == run_dir
    assert run.config.train.steps == 20 and run.dataset.name == "8gaussians"
    assert run.model.event_shape == (2,) and run.dataset.event_shape == (2,)
    np.testing.assert_allclose(run.model.energy(PROBE), model.energy(PROBE), rtol=1e-6, atol=1e-6)
    assert len(run.model.sample_buffer) == len(model.sample_buffer) > 0  # the buffer came back too
    assert [row["step"] for row in run.history] == [10, 20]


def test_open_run_older_step_and_reproducible_samples(trained):
    run_dir, model = trained
    older = open_run(run_dir, step=10)
    assert older.step == 10
    assert not np.allclose(older.model.energy(PROBE), model.energy(PROBE))
    a = older.generate(8, n_steps=2, seed=3)
    assert a.shape == (8, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, older.generate(8, n_steps=2, seed=3))


def test_open_run_missing_or_not_a_run(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RunError, match=f"run directory {missing} does not exist"):
        open_run(missing)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunError, match="is not a directory"):
        open_run(tmp_path / "file.txt")
    with pytest.raises(RunError, match=f"{tmp_path} has no config.toml"):
        open_run(tmp_path)
    assert isinstance(RunError("x"), ebmkit.EbmkitError)


def test_open_run_without_checkpoints_creates_nothing(trained, tmp_path):
    shutil.copy(trained[0] / "config.toml", tmp_path / "config.toml")
    with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path / 'checkpoints'}"):
        open_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_open_run_invalid_config(tmp_path):
    (tmp_path / "config.toml").write_text("[sampler]\nname = 'langevn'\n", encoding="utf-8")
    with pytest.raises(ebmkit.ConfigError, match="config.toml.*did you mean 'langevin'"):
        open_run(tmp_path)


def test_open_run_corrupt_checkpoint(trained, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(trained[0], run_dir)
    (run_dir / "checkpoints" / "20" / "state" / "_METADATA").write_text("garbage", encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"checkpoint {run_dir / 'checkpoints' / '20'} is unreadable"):
        open_run(run_dir, step=20)
    with pytest.warns(RuntimeWarning, match="is corrupt .* resumed from .*checkpoints/10"):
        assert open_run(run_dir).step == 10  # the latest intact one


def test_plot_samples_of_images_and_other_shapes(tmp_path):
    def run_with(shape, bounds):
        model = SimpleNamespace(event_shape=shape)
        dataset = SimpleNamespace(bounds=bounds, name="fake")
        return Run(run_dir=tmp_path, config=None, dataset=dataset, model=model, trainer=None, step=0)

    images = np.random.default_rng(0).uniform(-1, 1, (9, 8, 8, 1))
    assert run_with((8, 8, 1), (-1.0, 1.0)).plot_samples(images, tmp_path / "grid.png")
    pixels = matplotlib.image.imread(tmp_path / "grid.png")
    assert max(pixels.shape[:2]) >= 256 and pixels[..., :3].std() > 0.05
    assert not run_with((5,), None).plot_samples(np.zeros((3, 5)), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_diagnosis_notes_and_jsonable():
    report = {"real_energy": 0.0, "fake_energy": 1.0, "energy_gap": 1.0, "mcmc_decrease": -0.5,
              "buffer_usage": 0.25, "sample_min": -5.0, "sample_max": 1.0, "non_finite_fraction": 0.0}
    notes = {q: (v, verdict) for q, v, verdict in diagnosis_notes(report, (-4.0, 4.0))}
    assert notes["energy gap (fake - real)"][1].startswith("ok")
    assert notes["MCMC energy decrease"][1].startswith("check")
    assert notes["buffer usage"][0] == "25%"
    assert notes["sample range"] == ("[-5, 1]", "check: leaves the data bounds [-4, 4]")
    assert jsonable({"a": np.float32(np.nan), "b": [np.int64(2), float("inf")], "c": 1.5}) == {
        "a": None, "b": [2, None], "c": 1.5,
    }


# -- the commands --------------------------------------------------------------------


def test_sample_command_writes_npz_and_scatter(trained, tmp_path):
    out = tmp_path / "out" / "samples.npz"
    result = invoke("sample", trained[0], "-n", 50, "--steps", 5, "--seed", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (50 samples of shape [2], step 20)" in result.output
    with np.load(out) as npz:
        samples = npz["samples"]
        assert int(npz["step"]) == 20 and int(npz["seed"]) == 1
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    pixels = matplotlib.image.imread(out.with_suffix(".png"))
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.02

    again = tmp_path / "again.npz"
    assert invoke("sample", trained[0], "-n", 50, "--steps", 5, "--seed", 1, "--out", again).exit_code == 0
    with np.load(again) as npz:
        np.testing.assert_array_equal(npz["samples"], samples)


def test_sample_command_continues_the_buffer_and_reports_against_the_density(trained, tmp_path):
    out = tmp_path / "buffer.npz"
    result = invoke("sample", trained[0], "-n", 200, "--steps", 3, "--start", "buffer", "--out", out)
    assert result.exit_code == 0, result.output
    assert "outside the data box:" in result.output and "exact draws:" in result.output
    with np.load(out) as npz:
        assert npz["samples"].shape == (200, 2)


def test_sample_and_diagnose_with_another_sampler(trained, tmp_path):
    out = tmp_path / "rx.npz"
    result = invoke(
        "sample", trained[0], "-n", 64, "--steps", 4, "--start", "buffer", "--sampler", "replica_exchange",
        "--sampler-option", "num_replicas=3", "--out", out,
    )
    assert result.exit_code == 0, result.output
    with np.load(out) as npz:
        assert npz["samples"].shape == (64, 2) and np.isfinite(npz["samples"]).all()
    assert "exact draws:" in result.output
    # Mistakes name the option and what is wrong.
    result = invoke("sample", trained[0], "-n", 4, "--sampler", "replica_exchang", "--out", out)
    assert result.exit_code == 2 and "did you mean 'replica_exchange'" in result.output
    result = invoke("sample", trained[0], "-n", 4, "--sampler", "replica_exchange", "--sampler-option",
                    "num_replicas=1", "--out", out)
    assert result.exit_code == 2 and "at least 2 replicas" in result.output
    result = invoke("sample", trained[0], "-n", 4, "--sampler-option", "num_replicas=3", "--out", out)
    assert result.exit_code == 2 and "needs --sampler" in result.output
    result = invoke("diagnose", trained[0], "--sampler", "replica_exchange")
    assert result.exit_code == 2 and "--long-run" in result.output


def test_sample_diagnostics_prints_ess_and_rhat(trained, tmp_path):
    out = tmp_path / "d.npz"
    result = invoke("sample", trained[0], "-n", 16, "--steps", 20, "--sampler", "mala",
                    "--sampler-option", "warmup_steps=10", "--diagnostics", "--out", out)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.split()}
    assert float(rows["ess_bulk"]) > 0 and float(rows["rhat"]) > 0.9 and 0 < float(rows["acceptance_rate"]) <= 1
    assert rows["chain_steps"] == "20" and rows["burn_in_steps"] == "10"
    with np.load(out) as npz:
        assert npz["samples"].shape == (16, 2)
    result = invoke("sample", trained[0], "-n", 16, "--steps", 4, "--diagnostics", "--out", out)
    assert result.exit_code == 2 and "num_steps >= 8" in result.output


def test_diagnose_long_run_prints_the_check(trained):
    result = invoke("diagnose", trained[0], "--long-run", "-n", 8, "--steps", 2)
    assert result.exit_code == 0, result.output
    assert "long runs" in result.output and "30 steps from buffer" in result.output
    assert "TV to density" in result.output


def test_sample_command_needs_an_npz_name(trained, tmp_path):
    result = invoke("sample", trained[0], "-n", 5, "--out", tmp_path / "samples.png")
    assert result.exit_code == 2
    assert "must end in .npz" in result.output
    assert invoke("sample", trained[0], "-n", 0, "--out", tmp_path / "s.npz").exit_code == 2


def test_evaluate_command_json_and_table(trained):
    run_dir = trained[0]
    result = invoke("evaluate", run_dir, "--json", "--steps", 16)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["step"] == 20
    assert {"nll", "log_z", "kl_gap", "entropy"} <= set(report["evaluation"])
    assert np.isfinite(report["evaluation"]["nll"])
    assert {"energy_gap", "mcmc_decrease", "buffer_usage", "sample_min", "sample_max"} <= set(report["diagnostics"])
    # The chains' mixing: 64 chains x 8 recorded steps.
    chains = report["diagnostics"]
    assert 0 < chains["ess_bulk"] <= 64 * 8 * 1.5 and chains["rhat"] > 0.9 and chains["ess_per_1000_grads"] > 0
    # Each fit figure once: the evaluation's (finer grid), not again in the diagnostics.
    assert "kl_gap" not in chains and "tail_mass" not in chains
    assert json.loads((run_dir / "evaluation.json").read_text(encoding="utf-8")) == report

    table = invoke("evaluate", run_dir, "--steps", 16)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == f"{run_dir} at step 20"
    assert any(line.split()[:1] == ["rhat"] for line in lines) and any(line.split()[:1] == ["ess_bulk"] for line in lines)
    assert any(line.split()[:1] == ["nll"] and line.split()[-1] == "evaluation" for line in lines)
    assert any(line.split()[:1] == ["energy_gap"] and line.split()[-1] == "diagnostics" for line in lines)


def test_diagnose_command(trained):
    result = invoke("diagnose", trained[0], "-n", 16, "--steps", 5)
    assert result.exit_code == 0, result.output
    assert f"{trained[0]} at step 20: 16 chains of 5 steps" in result.output
    for quantity in ("energy gap (fake - real)", "MCMC energy decrease", "buffer usage", "sample range"):
        assert quantity in result.output
    raw = invoke("diagnose", trained[0], "-n", 16, "--steps", 5, "--json")
    report = json.loads(raw.stdout)
    assert report["step"] == 20 and report["buffer_usage"] > 0


@pytest.mark.parametrize(
    "args",
    [("sample", "-n", 3, "--out", "s.npz"), ("evaluate",), ("diagnose",)],
    ids=["sample", "evaluate", "diagnose"],
)
def test_commands_report_a_missing_run_dir(tmp_path, args):
    missing = tmp_path / "no-such-run"
    result = invoke(args[0], missing, *args[1:])
    assert result.exit_code == 1
    assert f"Error: run directory {missing} does not exist" in result.output
    assert "Traceback" not in result.output
    assert not missing.exists()


def test_commands_report_a_directory_without_checkpoints(trained, tmp_path):
    shutil.copy(trained[0] / "config.toml", tmp_path / "config.toml")
    result = invoke("diagnose", tmp_path)
    assert result.exit_code == 1
    assert f"Error: no checkpoint in {tmp_path / 'checkpoints'}" in result.output


def test_open_run_reports_a_missing_optional_dependency(trained, monkeypatch):
    import ebmkit.components

    def no_sklearn(config):
        raise ImportError("the data set needs scikit-learn: pip install 'ebmkit-jax[digits]'")

    monkeypatch.setattr(ebmkit.components, "build_dataset", no_sklearn)
    with pytest.raises(RunError, match=r"cannot build the data set '8gaussians' of .*config.toml: .*scikit-learn"):
        open_run(trained[0])


def test_diagnose_separates_a_good_fit_from_a_poor_one(trained):
    """The 20-step fixture is a poor fit; its chain statistics alone look fine."""
    run = open_run(trained[0])
    report = run.diagnose(n_samples=16, n_steps=10)
    assert report["kl_gap"] > 0.3
    verdicts = {q: v for q, _, v in diagnosis_notes(report, run.dataset.bounds)}
    assert verdicts["KL gap (nats, whole plane)"].startswith("check")
    good = {**report, "kl_gap": 0.05, "tail_mass": 1e-4}
    verdicts = {q: v for q, _, v in diagnosis_notes(good, run.dataset.bounds)}
    assert verdicts["KL gap (nats, whole plane)"].startswith("ok")
    assert verdicts["mass outside the data box"] == "ok"


def test_the_readme_short_tour_runs_as_written(tmp_path, monkeypatch):
    """The README's short tour, line by line, with fewer steps (the first run
    200 instead of the recipe's 8,000; the resume to 400 instead of 4,000)."""
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash", 2)[2].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("ebmkit ")]
    assert len(lines) == 4
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(root / "examples")
    for line in lines:
        args = shlex.split(line)[1:]
        if args[0] == "train":
            args = [("200" if "--resume" not in args else "400") if a == "4000" else a for a in args]
            if "--steps" not in args:
                args += ["--steps", "200"]
            args += ["--set", "train.log_every=100", "--set", "train.checkpoint_every=100", "--no-progress"]
        if args[0] == "sample":
            args = ["100" if a == "1000" else a for a in args]
        result = invoke(*args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert (tmp_path / "rings_samples.npz").is_file() and (tmp_path / "runs" / "rings" / "evaluation.json").is_file()
    change = (tmp_path / "runs" / "rings" / "resumes.jsonl").read_text()
    assert "train.learning_rate" in change and "train.steps" in change
