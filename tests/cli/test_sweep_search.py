"""``ebmkit sweep --trials N --search ...``: an Optuna study of ordinary training runs."""

from __future__ import annotations

import csv
import json
import re
import sys

import optuna
import pytest
from click.testing import CliRunner

from ebmkit.cli import cli
from ebmkit.errors import ConfigError, MetricError
from ebmkit.search import SearchStudy, parse_search
from ebmkit.sweep import SweepResult

#: A model that trains in about two seconds, compile included (as in test_sweep.py).
TINY = ["energy.hidden_dims=[8]", "sampler.num_steps=1", "buffer.capacity=64", "train.batch_size=16",
        "train.log_every=2"]
SEARCH = ["--search", "sampler.step_size=loguniform(1e-3, 1e-1)", "--search", "loss.alpha=uniform(0, 0.2)",
          "--search", "energy.activation=choice(silu, tanh)"]


def sweep(out, *args):
    sets = [a for s in TINY for a in ("--set", s)]
    return CliRunner().invoke(cli, ["sweep", "--out", str(out), "--steps", "2", "--no-plots", *sets, *map(str, args)])


def progress(output, status):
    """The run names of the progress lines ``[k/n] STATUS NAME ...``."""
    return re.findall(rf"^\[\s*\d+/\d+\] {status} (\S+)", output, flags=re.M)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def load(out):
    return optuna.load_study(study_name="ebmkit-sweep", storage=f"sqlite:///{out / 'study.db'}")


def mtimes(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Three trials, two at a time (each run in a spawned process), run once for the module."""
    out = tmp_path_factory.mktemp("search") / "s"
    result = sweep(out, *SEARCH, "--trials", 3, "--jobs", 2)
    assert result.exit_code == 0, result.output
    return out, result


def test_each_trial_is_a_run_with_its_settings_and_the_study_holds_its_metric(searched):
    out, result = searched
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == [f"trial={t},seed=0" for t in range(3)]
    assert "2 at a time" in result.output and sorted(progress(result.output, "trained")) == names
    study = load(out)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    rows = read_csv(out / "sweep.csv")
    assert [r["run"] for r in rows] == names
    for row in rows:  # each row is its run's own settings and figures
        run = out / row["run"]
        summary = json.loads((run / "summary.json").read_text())
        for key in ("kl_gap", "loss", "nll"):
            assert row[key] == ("" if summary[key] is None else repr(summary[key])), key
        trial = study.trials[int(row["trial"])]
        assert trial.value == summary["kl_gap"]  # the objective: the default metric, kl_gap
        assert float(row["sampler.step_size"]) == trial.params["sampler.step_size"]
        assert 1e-3 <= trial.params["sampler.step_size"] <= 1e-1 and 0 <= trial.params["loss.alpha"] <= 0.2
        assert row["energy.activation"] == trial.params["energy.activation"] in ("silu", "tanh")
        config = (run / "config.toml").read_text()
        assert f"step_size = {row['sampler.step_size']}" in config and f"alpha = {row['loss.alpha']}" in config
        assert f'activation = "{row["energy.activation"]}"' in config and "seed = 0" in config
    # The table: one row per run, sorted by kl_gap; the best trial is the study's.
    table = [line.split("│") for line in result.output.splitlines() if line.startswith("│")]
    shown = [float(cells[6]) for cells in table]
    assert len(table) == 3 and shown == sorted(shown)
    assert [int(cells[1]) for cells in table][0] == study.best_trial.number
    assert f"best: trial {study.best_trial.number} (sampler.step_size=" in result.output
    assert f"kl_gap {study.best_value:.4g} (one seed)" in result.output


def test_running_again_trains_nothing_and_more_trials_train_only_those(searched):
    out, _ = searched
    before = mtimes(out)
    again = sweep(out, *SEARCH, "--trials", 3)
    assert again.exit_code == 0, again.output
    assert "the study has 3 ended trials; 0 to run" in again.output
    assert not progress(again.output, "training") and mtimes(out) == before and len(load(out).trials) == 3
    assert {r["status"] for r in read_csv(out / "sweep.csv")} == {"skipped"}

    more = sweep(out, *SEARCH, "--trials", 4)
    assert more.exit_code == 0, more.output
    assert progress(more.output, "trained") == ["trial=3,seed=0"]
    assert {k: v for k, v in mtimes(out).items() if k in before} == before
    assert len(load(out).trials) == 4 and len(read_csv(out / "sweep.csv")) == 4


def test_a_trial_cut_short_is_finished_not_drawn_again(searched):
    out, _ = searched
    study = load(out)
    n = len(study.trials)
    axes = [parse_search(t) for t in SEARCH[1::2]]
    stale = study.ask({a.key: a.distribution() for a in axes})  # as if killed right after drawing it
    result = sweep(out, *SEARCH, "--trials", n + 1)
    assert result.exit_code == 0, result.output
    assert "1 cut short (finished first); 1 to run" in result.output
    assert progress(result.output, "trained") == [f"trial={n},seed=0"]
    finished = load(out).trials
    assert len(finished) == n + 1 and finished[-1].state == optuna.trial.TrialState.COMPLETE
    assert finished[-1].params == stale.params


def test_another_search_or_setting_in_the_same_folder_is_refused(searched):
    out, _ = searched
    other = sweep(out, "--search", "loss.alpha=uniform(0, 0.3)", "--trials", 9)
    assert other.exit_code == 1 and "holds a study of another search space" in other.output
    seeds = sweep(out, *SEARCH, "--trials", 9, "--seeds", 2)
    assert seeds.exit_code == 1 and "with --seeds 1" in seeds.output
    changed = sweep(out, *SEARCH, "--trials", 9, "--set", "energy.hidden_dims=[4]")
    assert changed.exit_code == 1 and "energy.hidden_dims differ" in changed.output
    upside = sweep(out, *SEARCH, "--trials", 9, "--maximize")
    assert upside.exit_code == 1 and "minimizes its metric; drop --maximize" in upside.output
    sampler = sweep(out, *SEARCH, "--trials", 9, "--sampler", "random")
    assert sampler.exit_code == 1 and "with --sampler tpe" in sampler.output
    axes = [parse_search(t) for t in SEARCH[1::2]]
    with SearchStudy(None, axes, out, overrides=[*TINY, "train.steps=2"]):  # a search running in the folder
        busy = sweep(out, *SEARCH, "--trials", 9)
    assert busy.exit_code == 1 and f"another ebmkit sweep is running in {out}" in busy.output
    outputs = other.output + seeds.output + changed.output + upside.output + sampler.output + busy.output
    assert not progress(outputs, "training") and len(load(out).trials) < 9


def test_a_trial_averages_its_seeds_and_fails_on_a_failed_or_null_run(tmp_path):
    axes = [parse_search("sampler.step_size=loguniform(1e-3, 1e-1)")]
    with SearchStudy(None, axes, tmp_path, seeds=2, overrides=TINY) as study:
        def tell(*runs):
            trial = study._ask()
            assert [p.name for p in trial.points] == [f"trial={trial.number},seed={s}" for s in (0, 1)]
            for point, run in zip(trial.points, runs, strict=True):
                status, summary = run
                trial.results[point.name] = SweepResult(point=point, run_dir=tmp_path / point.name, status=status,
                                                        summary=summary, error="boom" if status == "failed" else None)
            study._tell(trial)
            return study.study.trials[trial.number]

        mean = tell(("trained", {"kl_gap": 1.0, "loss": 5.0}), ("trained", {"kl_gap": 3.0, "loss": 5.0}))
        assert mean.value == 2.0 and study.study.user_attrs["metric"] == "kl_gap"
        null = tell(("trained", {"kl_gap": 1.0, "loss": 5.0}), ("trained", {"kl_gap": None, "loss": 5.0}))
        failed = tell(("trained", {"kl_gap": 1.0, "loss": 5.0}), ("failed", {}))
        assert null.state == failed.state == optuna.trial.TrialState.FAIL
        assert study.trial_counts() == (3, 0) and study.best()[0] == 0
        previous = study.previous()  # the fake runs wrote no summary.json: all reported failed, with the reason
        assert [r.error for r in previous[2:4]] == ["kl_gap is not finite in every run"] * 2
        assert [r.error for r in previous[4:]] == ["boom"] * 2
    with SearchStudy(None, axes, tmp_path / "m", overrides=TINY, metric="nope") as study:
        trial = study._ask()
        trial.results = {p.name: SweepResult(point=p, run_dir=tmp_path, status="trained", summary={"loss": 1.0})
                         for p in trial.points}
        with pytest.raises(MetricError, match="no run's summary has 'nope'; they have: loss"):
            study._tell(trial)


def test_each_trial_draws_the_same_whether_or_not_the_study_was_resumed(tmp_path):
    axes = [parse_search("sampler.step_size=loguniform(1e-3, 1e-1)"), parse_search("energy.hidden_dims=choice([8], [4, 4])")]

    def draw(study, k):
        for _ in range(k):
            trial = study._ask()
            study.study.tell(trial.number, float(trial.points[0].values[1][1]))  # a stand-in objective
        return [t.params for t in study.study.trials]

    with SearchStudy(None, axes, tmp_path / "a", overrides=TINY, sampler="random") as study:
        straight = draw(study, 3)
    with SearchStudy(None, axes, tmp_path / "b", overrides=TINY, sampler="random") as study:
        draw(study, 2)
    with SearchStudy(None, axes, tmp_path / "b", overrides=TINY, sampler="random") as study:
        assert draw(study, 1) == straight
        assert study._ask().points[0].config.energy.hidden_dims in ((8,), (4, 4))
    # A component's choice goes first, whatever the order of the --search: the step size is kept.
    axes = [parse_search("sampler.step_size=uniform(0.5, 0.6)"), parse_search("sampler=choice(mala)")]
    with SearchStudy(None, axes, tmp_path / "c", overrides=TINY) as study:
        config = study._ask().points[0].config
        assert type(config.sampler).__name__ == "MALAConfig" and 0.5 <= config.sampler.step_size <= 0.6
    assert len({p["sampler.step_size"] for p in straight}) == 3


@pytest.mark.parametrize(
    "search, expected",
    [
        ("sampler.step_size=0.01", "'0.01' is not a distribution"),
        ("sampler.step_size=normal(0, 1)", "unknown distribution 'normal'"),
        ("sampler.step_size=uniform(0.1)", "takes two numbers, LOW and HIGH"),
        ("sampler.step_size=uniform(0.1, 0.01)", "LOW must be below HIGH"),
        ("sampler.step_size=loguniform(0, 0.1)", "a log scale needs LOW > 0"),
        ("energy.hidden_dims=int(8, x)", "takes an integer, got 'x'"),
        ("sampler=choice()", "choice(...) needs values"),
        ("sampler=choice(mala, mala)", 'repeats "mala"'),
        ("sampler=choice(mala, a b)", "neither a TOML value nor a bare word"),
        ("train.seed=int(0, 5)", "--seeds"),
        ("loss.alphaa=uniform(0, 1)", "unexpected field 'alphaa' (did you mean 'alpha'?)"),
        ("sampler.step_size=uniform(-1, 1)", "with sampler.step_size=-1.0: sampler.step_size: must be a finite"),
    ],
)
def test_bad_searches_are_clear_errors_before_any_run(tmp_path, search, expected):
    out = tmp_path / "s"
    result = sweep(out, "--search", "loss.alpha=uniform(0, 0.1)", "--search", search, "--trials", 2)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --search '{search}'" in result.output and expected in result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--search", "loss.alpha=uniform(0, 0.1)"], "--search needs --trials N"),
        (["--trials", 3], "--trials needs the settings to search"),
        (["--trials", 3, "--search", "loss.alpha=uniform(0, 0.1)", "--grid", "sampler.step_size=[0.01]"],
         "--grid and --search do not mix"),
        (["--trials", 3, "--search", "loss.alpha=uniform(0, 0.1)", "--search", "loss.alpha=uniform(0, 0.2)"],
         "loss.alpha is searched by an earlier --search too"),
    ],
)
def test_search_options_that_do_not_fit_are_usage_errors(tmp_path, args, expected):
    result = sweep(tmp_path / "s", *args)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_grammar_of_each_distribution():
    assert parse_search("energy.hidden_dims=choice([8], [16, 16])").choices == ([8], [16, 16])
    axis = parse_search(" sampler = choice(langevin, \"hmc\", 3, true) ")
    assert axis.key == "sampler" and axis.choices == ("langevin", "hmc", 3, True)
    assert parse_search("train.batch_size=logint(16, 256)").describe() == "logint(16, 256)"
    assert parse_search("loss.alpha=uniform(0, 1e-1)").describe() == "uniform(0.0, 0.1)"
    wide = parse_search("energy.hidden_dims=choice([8], [16, 16])")
    assert wide.value(wide.distribution().choices[1]) == [16, 16]
    with pytest.raises(ConfigError, match="malformed search"):
        parse_search("uniform(0, 1)")


def test_a_missing_optuna_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    result = sweep(tmp_path / "s", "--search", "loss.alpha=uniform(0, 0.1)", "--trials", 2)
    assert result.exit_code == 1 and "pip install 'ebmkit-jax[sweep]'" in result.output, result.output
