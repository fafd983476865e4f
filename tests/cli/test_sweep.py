"""``ebmkit sweep``: a grid of settings × seeds, each an ordinary training run."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
from click.testing import CliRunner

from ebmkit.cli import cli
from ebmkit.errors import ConfigError
from ebmkit.sweep import parse_grid, plan_sweep

#: A model that trains in about two seconds, compile included.
TINY = ["energy.hidden_dims=[8]", "sampler.num_steps=1", "buffer.capacity=64", "train.batch_size=16",
        "train.log_every=2"]
GRID = ["--grid", "sampler.step_size=[0.005, 0.01]", "--grid", "loss.alpha=[0.05,0.1]"]


def sweep(out, *args):
    sets = [a for s in TINY for a in ("--set", s)]
    return CliRunner().invoke(cli, ["sweep", "--out", str(out), "--steps", "2", "--no-plots", *sets, *map(str, args)])


def progress(output, status):
    """The run names of the progress lines ``[k/n] STATUS NAME ...``."""
    return re.findall(rf"^\[\s*\d+/\d+\] {status} (\S+)", output, flags=re.M)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2 × 2 grid × 2 seeds sweep, run once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    result = sweep(out, *GRID, "--seeds", 2)
    assert result.exit_code == 0, result.output
    return out, result


def test_every_combination_and_seed_trains_into_its_own_run(finished):
    out, result = finished
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == sorted(f"sampler.step_size={s},loss.alpha={a},seed={seed}"
                           for s in ("0.005", "0.01") for a in ("0.05", "0.1") for seed in (0, 1))
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 8 and {r["run"] for r in rows} == set(names)
    for row in rows:
        run = out / row["run"]
        summary = json.loads((run / "summary.json").read_text())
        metrics = [k for k in row if k not in ("run", "sampler.step_size", "loss.alpha", "seed", "status")]
        assert {"kl_gap", "loss", "nll", "steps"} <= set(metrics)
        for key in metrics:  # exactly the run's own figures (blank where JSON has null)
            assert row[key] == ("" if summary[key] is None else repr(summary[key]) if isinstance(summary[key], float)
                                else str(summary[key])), key
        config = (run / "config.toml").read_text()
        assert f"step_size = {row['sampler.step_size']}" in config and f"alpha = {row['loss.alpha']}" in config
        assert f"seed = {row['seed']}" in config and row["status"] == "trained"
    # The table is sorted by the default metric, kl_gap (lower first).
    assert "sorted by kl_gap (lower is better)" in result.output
    gaps = [float(r["kl_gap"]) for r in rows]
    table = [line for line in result.output.splitlines() if line.startswith("│")]
    shown = [float(line.split("│")[4]) for line in table]
    assert len(shown) == 8 and shown == sorted(shown) and min(gaps) == pytest.approx(shown[0], rel=1e-3)
    assert "best: sampler.step_size=" in result.output
    assert (out / "sweep.png").stat().st_size > 0


def test_running_the_same_sweep_again_trains_nothing(finished):
    out, _ = finished
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    rows_before = read_csv(out / "sweep.csv")
    result = sweep(out, *GRID, "--seeds", 2)
    assert result.exit_code == 0, result.output
    assert len(progress(result.output, "skipped")) == 8 and not progress(result.output, "training")
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == before
    rows = read_csv(out / "sweep.csv")
    assert [{k: v for k, v in r.items() if k != "status"} for r in rows] == [
        {k: v for k, v in r.items() if k != "status"} for r in rows_before]
    assert {r["status"] for r in rows} == {"skipped"}


def test_an_interrupted_run_resumes_and_another_config_is_refused(finished):
    out, _ = finished
    name = "sampler.step_size=0.01,loss.alpha=0.1,seed=1"
    (out / name / "summary.json").unlink()  # as if killed after its last checkpoint
    result = sweep(out, *GRID, "--seeds", 2)
    assert result.exit_code == 0, result.output
    assert progress(result.output, "resumed") == [name] and len(progress(result.output, "skipped")) == 7
    assert (out / name / "summary.json").is_file()
    # Other settings than the runs in OUT were trained with: an error before anything trains.
    other = sweep(out, *GRID, "--seeds", 2, "--set", "energy.hidden_dims=[4]")
    assert other.exit_code == 1
    assert "holds a run with other settings (energy.hidden_dims differ)" in other.output
    assert not progress(other.output, "training")


@pytest.mark.parametrize(
    "grid, expected",
    [
        ("sampler.step_size=0.005,0.01", "is not a list"),
        ("sampler.step_size=[0.005, 0.01", "is not a TOML list"),
        ("sampler.step_size", "malformed override"),
        ("sampler.step_size=[]", "the grid has no values"),
        ("sampler.step_size=[0.01, 0.01]", "the grid repeats 0.01"),
        ("train.seed=[1, 2]", "--seeds"),
        ("loss.alphaa=[0.1, 0.2]", "unexpected field 'alphaa' (did you mean 'alpha'?)"),
        ("sampler.step_size=[0.01, -1]", "with sampler.step_size=-1: sampler.step_size: must be a finite "
                                         "number > 0, got -1.0"),
    ],
)
def test_bad_grids_are_clear_errors_before_any_run(tmp_path, grid, expected):
    out = tmp_path / "s"
    result = sweep(out, "--grid", "loss.alpha=[0.05]", "--grid", grid)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --grid '{grid}'" in result.output and expected in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_an_invalid_combination_is_refused_before_any_run(tmp_path):
    out = tmp_path / "s"
    # Each value is valid on its own (the base sampler is langevin); hmc has no noise_scale.
    result = sweep(out, "--grid", 'sampler=["langevin", "hmc"]', "--grid", "sampler.noise_scale=[0.5]")
    assert result.exit_code == 2, result.output
    assert "a combination of the --grid values is invalid" in result.output
    assert "noise_scale" in result.output and 'sampler="hmc"' in result.output and not out.exists()


def test_plan_names_seeds_and_duplicates():
    axes = [parse_grid("energy.hidden_dims=[[8, 8], [16]]"), parse_grid('dataset=["moons", "8gaussians"]')]
    points = plan_sweep(None, axes, seeds=2, overrides=["train.seed=5"])
    assert [p.name for p in points[:3]] == [
        "energy.hidden_dims=8-8,dataset=moons,seed=5", "energy.hidden_dims=8-8,dataset=moons,seed=6",
        "energy.hidden_dims=8-8,dataset=8gaussians,seed=5",
    ]
    assert points[0].config.energy.hidden_dims == (8, 8) and points[1].config.train.seed == 6
    with pytest.raises(ValueError, match="more than once"):
        plan_sweep(None, [axes[0], axes[0]])
    with pytest.raises(ConfigError, match="loss.alpha"):
        parse_grid("loss.alpha=0.1")
    # A component's choice is applied before the settings inside it, whatever the order of the axes.
    (point,) = plan_sweep(None, [parse_grid("sampler.step_size=[0.5]"), parse_grid('sampler=["mala"]')])
    assert type(point.config.sampler).__name__ == "MALAConfig" and point.config.sampler.step_size == 0.5


def test_jobs_run_in_parallel_processes(tmp_path):
    out = tmp_path / "p"
    result = sweep(out, "--grid", "loss.alpha=[0.05, 0.1]", "--jobs", 2, "--metric", "loss")
    assert result.exit_code == 0, result.output
    assert "2 at a time" in result.output and len(progress(result.output, "trained")) == 2
    rows = read_csv(out / "sweep.csv")
    assert [r["loss.alpha"] for r in rows] == ["0.05", "0.1"]
    for row in rows:
        summary = json.loads((out / row["run"] / "summary.json").read_text())
        assert math.isclose(float(row["loss"]), summary["loss"]) and row["status"] == "trained"
    assert "sorted by loss (lower is better)" in result.output
