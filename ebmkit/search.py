"""Budgeted sweeps: ``--trials N`` runs drawn from search spaces by Optuna.

A search axis is ``KEY=DISTRIBUTION`` (:func:`parse_search`), e.g.
``sampler.step_size=loguniform(1e-3, 1e-1)``. :class:`SearchStudy` keeps an
Optuna study in ``OUT/study.db`` (SQLite): each trial is one ordinary
training run per seed, in ``OUT/trial=N,seed=S``, trained by the same
machinery as a grid sweep (:mod:`ebmkit.sweep`: config overrides, skip if
finished, resume if interrupted); its objective is the mean of a
``summary.json`` figure over its seeds. Running the same search again
continues the study: finished trials are kept, trials that were cut short
are finished, and ``trials`` counts every trial of the study.

Optuna is the optional extra ``ebmkit-jax[sweep]``; only this module needs it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ebmkit.config import load_config, unstructure
from ebmkit.errors import ConfigError, ConfigProblem, MetricError, RunDirectoryError
from ebmkit.sweep import (
    GridAxis,
    SweepPoint,
    SweepResult,
    check_axis,
    default_metric,
    metric_names,
    read_summary,
    run_state,
    toml_inline,
    train_point,
)

__all__ = ["SearchAxis", "SearchStudy", "parse_search", "check_search_axis", "import_optuna",
           "SEARCH_FORMS"]

PathLike = str | os.PathLike[str]

#: The distributions ``--search`` understands, as written.
SEARCH_FORMS = ("uniform(LOW, HIGH)", "loguniform(LOW, HIGH)", "int(LOW, HIGH)", "logint(LOW, HIGH)",
                "choice(V1, V2, ...)")
_EXPECTED = ("write KEY=" + " | ".join(SEARCH_FORMS)
             + ", e.g. sampler.step_size=loguniform(1e-3, 1e-1) or sampler=choice(langevin, mala)")
_FORM = re.compile(r"^\s*(?P<kind>[A-Za-z_]+)\s*\((?P<args>.*)\)\s*$", re.S)
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+-]*$")
_STUDY = "ebmkit-sweep"


def import_optuna() -> Any:
    """Import Optuna (quietly), or say how to install it.

    Raises:
        ImportError: Optuna is not installed.
    """
    try:
        import optuna
    except ImportError as exc:
        raise ImportError("ebmkit sweep --trials needs Optuna: pip install 'ebmkit-jax[sweep]'") from exc
    return optuna


@attrs.frozen
class SearchAxis:
    """One searched setting.

    Attributes:
        key: its dotted path, e.g. ``"sampler.step_size"``.
        kind: ``uniform``, ``loguniform``, ``int``, ``logint`` or ``choice``.
        low: the range's lower end (inclusive; ``None`` for ``choice``).
        high: the range's upper end (inclusive; ``None`` for ``choice``).
        choices: the values of a ``choice`` (TOML values).
        text: the ``KEY=...`` text it was parsed from.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    text: str = ""

    def describe(self) -> str:
        """The axis in canonical form, e.g. ``loguniform(0.001, 0.1)``."""
        if self.kind == "choice":
            return f"choice({', '.join(toml_inline(c) for c in self.choices)})"
        return f"{self.kind}({toml_inline(self.low)}, {toml_inline(self.high)})"

    def distribution(self) -> Any:
        """The Optuna distribution; a ``choice``'s lists and tables are its TOML texts."""
        optuna = import_optuna()
        dists = optuna.distributions
        if self.kind == "choice":
            return dists.CategoricalDistribution([_as_choice(c) for c in self.choices])
        if self.kind in ("int", "logint"):
            return dists.IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return dists.FloatDistribution(float(self.low), float(self.high), log=self.kind == "loguniform")

    def value(self, param: Any) -> Any:
        """The config value of an Optuna parameter of this axis."""
        if self.kind == "choice":
            return next(c for c in self.choices if _as_choice(c) == param and type(_as_choice(c)) is type(param))
        return int(param) if self.kind in ("int", "logint") else float(param)

    def ends(self) -> GridAxis:
        """The values to check up front: the range's ends, or every choice."""
        values = self.choices if self.kind == "choice" else (self.low, self.high)
        return GridAxis(key=self.key, values=tuple(values), text=self.text)


def _as_choice(value: Any) -> Any:
    """A choice as Optuna stores it: a scalar as is, a list or table as its TOML text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return toml_inline(value)


def _problem(key: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(path=key, message=message, suggestion=_EXPECTED)])


def _split_args(text: str) -> list[str]:
    """Split at the commas outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _number(key: str, kind: str, text: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        what = "an integer" if integer else "a number"
        raise _problem(key, f"{kind}(...) takes {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise _problem(key, f"{kind}(...) takes finite numbers, got {text!r}")
    return value


def _choice_value(key: str, text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE.match(text):
            return text
    raise _problem(key, f"choice value {text!r} is neither a TOML value nor a bare word")


def parse_search(text: str) -> SearchAxis:
    """Parse ``"KEY=DISTRIBUTION"``.

    The distributions (:data:`SEARCH_FORMS`): ``uniform(LOW, HIGH)`` and
    ``loguniform(LOW, HIGH)`` (floats; ``LOW > 0`` for the log scale),
    ``int(LOW, HIGH)`` and ``logint(LOW, HIGH)`` (integers, both ends
    included) and ``choice(V1, V2, ...)`` (TOML values, or bare words as
    strings: ``choice(langevin, mala)``, ``choice([64, 64], [128])``).

    Raises:
        ConfigError: the text is not of that form; the message says what was expected.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise _problem(key, f"malformed search {text!r}")
    key = ".".join(part.strip() for part in key.split("."))
    if key == "train.seed":
        raise ConfigError([ConfigProblem(path=key, message="seeds are not searched",
                                         suggestion="use --seeds N: each trial runs N seeds")])
    match = _FORM.match(raw)
    if match is None:
        raise _problem(key, f"{raw.strip()!r} is not a distribution")
    kind, args = match["kind"], match["args"]
    if kind not in ("uniform", "loguniform", "int", "logint", "choice"):
        raise _problem(key, f"unknown distribution {kind!r}")
    parts = _split_args(args)
    if kind == "choice":
        if parts == [""] or any(not p for p in parts):
            raise _problem(key, "choice(...) needs values separated by commas")
        choices = tuple(_choice_value(key, p) for p in parts)
        texts = [toml_inline(c) for c in choices]
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise _problem(key, f"choice(...) repeats {', '.join(repeated)}")
        return SearchAxis(key=key, kind=kind, choices=choices, text=text)
    if len(parts) != 2 or not all(parts):
        raise _problem(key, f"{kind}(...) takes two numbers, LOW and HIGH, got {args.strip()!r}")
    integer = kind in ("int", "logint")
    low, high = (_number(key, kind, p, integer) for p in parts)
    if not low < high:
        raise _problem(key, f"{kind}({parts[0]}, {parts[1]}): LOW must be below HIGH")
    if kind.startswith("log") and low <= 0:
        raise _problem(key, f"{kind}({parts[0]}, {parts[1]}): a log scale needs LOW > 0")
    return SearchAxis(key=key, kind=kind, low=low, high=high, text=text)


def check_search_axis(config: PathLike | Mapping[str, Any] | None, axis: SearchAxis, *,
                      overrides: Sequence[str] = ()) -> None:
    """Check that the axis's ends (or each choice) make a valid config on their own.

    Raises:
        ConfigError: the first value that does not, named in the message.
    """
    check_axis(config, axis.ends(), overrides=overrides)


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _changed(saved: Any, wanted: Any, path: str = "") -> list[str]:
    if isinstance(saved, Mapping) and isinstance(wanted, Mapping):
        return [d for key in sorted(set(saved) | set(wanted)) if key != "provider"
                for d in _changed(saved.get(key), wanted.get(key), f"{path}.{key}" if path else key)]
    return [] if saved == wanted else [path]


@attrs.define
class _Trial:
    number: int
    points: list[SweepPoint]
    results: dict[str, SweepResult] = attrs.field(factory=dict)
    error: str | None = None


class SearchStudy:
    """An Optuna study of training runs, kept in ``out/study.db``.

    Opening it creates the study, or loads the one there after checking that
    it searches the same space with the same base config, seeds, metric and
    direction (:class:`~ebmkit.errors.RunDirectoryError` otherwise).

    Args:
        config: the base config file (``None``: the default assembly).
        axes: the search space (:func:`parse_search`), each checked with
            :func:`check_search_axis` beforehand.
        out: the sweep's folder.
        seeds: seeds per trial (``train.seed``, ``train.seed + 1``, ...); the
            objective is the mean over them.
        overrides: ``--set`` texts applied to every run before its trial's values.
        sampler: ``"tpe"`` or ``"random"``; each trial's draw is seeded from
            the base config's ``train.seed`` and the trial's number.
        metric: the ``summary.json`` figure to optimise (``None``: the
            :func:`~ebmkit.sweep.default_metric` of the first trial's runs).
        maximize: higher is better.

    Use it as a context manager (or call :meth:`close`): while open, it holds
    ``out/sweep.lock``, so one search at a time runs in a folder.

    Raises:
        ImportError: Optuna is missing.
        ValueError: no axes, a key searched twice or ``seeds`` below 1.
        RunDirectoryError: ``out`` holds another study, or trial runs without one.
    """

    def __init__(self, config: PathLike | None, axes: Sequence[SearchAxis], out: PathLike, *, seeds: int = 1,
                 overrides: Sequence[str] = (), sampler: str = "tpe", metric: str | None = None,
                 maximize: bool = False):
        import_optuna()
        if not axes:
            raise ValueError("a search needs at least one axis")
        keys = [a.key for a in axes]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"the search covers {', '.join(twice)} more than once")
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {seeds}")
        if sampler not in ("tpe", "random"):
            raise ValueError(f"unknown sampler {sampler!r}: choose tpe or random")

        self.config, self.axes, self.out = config, tuple(axes), Path(out)
        self.seeds, self.overrides, self.sampler_name = seeds, tuple(overrides), sampler
        self.base_dir = Path(config).parent if isinstance(config, (str, os.PathLike)) else Path.cwd()
        base = load_config(config, overrides=self.overrides)
        self.first_seed = base.train.seed
        self.distributions = {a.key: a.distribution() for a in axes}
        self.out.mkdir(parents=True, exist_ok=True)
        # One search at a time in a folder: a trial left running is then one cut short, to be finished.
        from filelock import FileLock, Timeout

        self._lock = FileLock(self.out / "sweep.lock")
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunDirectoryError(f"another ebmkit sweep is running in {self.out}; wait for it, "
                                    "or choose another --out") from None
        try:
            self._open(config, axes, seeds, sampler, metric, maximize, base)
        except BaseException:
            self.close()
            raise

    def _open(self, config: PathLike | None, axes: Sequence[SearchAxis], seeds: int, sampler: str,
              metric: str | None, maximize: bool, base: Any) -> None:
        from ebmkit.job import absolute_paths

        optuna = import_optuna()
        self.path = self.out / "study.db"
        new = not self.path.exists()
        if new and any(self.out.glob("trial=*")):
            raise RunDirectoryError(f"{self.out} holds trial runs but no study.db; choose another --out")
        self.study = optuna.create_study(storage=f"sqlite:///{self.path.resolve()}", study_name=_STUDY,
                                         direction="maximize" if maximize else "minimize", load_if_exists=True)
        wanted = {"search": [f"{a.key}={a.describe()}" for a in axes], "seeds": seeds, "sampler": sampler,
                  "base": _plain(unstructure(absolute_paths(base, self.base_dir)))}
        saved = self.study.user_attrs
        if "search" not in saved:
            for name, value in wanted.items():
                self.study.set_user_attr(name, value)
        else:
            self._check(saved, wanted, maximize)
        self.metric = saved.get("metric", metric)
        if metric is not None and self.metric != metric:
            raise RunDirectoryError(f"{self.path} optimises {self.metric}, not {metric}; "
                                    f"use --metric {self.metric} or choose another --out")

    def close(self) -> None:
        """Let another search use the folder."""
        self._lock.release()

    def __enter__(self) -> SearchStudy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, saved: Mapping[str, Any], wanted: Mapping[str, Any], maximize: bool) -> None:
        where = f"{self.path} holds a study"
        if saved["search"] != wanted["search"]:
            raise RunDirectoryError(f"{where} of another search space ({'; '.join(saved['search'])}); "
                                    "search that, or choose another --out")
        if saved["seeds"] != wanted["seeds"]:
            raise RunDirectoryError(f"{where} with --seeds {saved['seeds']}; use it, or choose another --out")
        if saved["sampler"] != wanted["sampler"]:
            raise RunDirectoryError(f"{where} with --sampler {saved['sampler']}; use it, or choose another --out")
        changed = _changed(saved["base"], wanted["base"])
        if changed:
            raise RunDirectoryError(f"{where} of runs with other settings ({', '.join(changed)} differ); "
                                    "delete it or choose another --out")
        direction = self.study.direction.name.lower()
        if direction != ("maximize" if maximize else "minimize"):
            raise RunDirectoryError(f"{where} that {direction}s its metric; "
                                    f"{'add' if direction == 'maximize' else 'drop'} --maximize, "
                                    "or choose another --out")

    # -- trials ----------------------------------------------------------------------

    def trial_counts(self) -> tuple[int, int]:
        """``(ended, cut short)``: trials that completed or failed, and ones left running."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        return len(trials) - running, running

    def _points(self, number: int, params: Mapping[str, Any]) -> tuple[list[SweepPoint], str | None]:
        values = tuple((a.key, a.value(params[a.key])) for a in self.axes)
        # A component's choice replaces its table: set it before the settings inside it.
        ordered = sorted(values, key=lambda kv: kv[0].count("."))
        sets = [*self.overrides, *(f"{k}={toml_inline(v)}" for k, v in ordered)]
        points, error = [], None
        for seed in range(self.first_seed, self.first_seed + self.seeds):
            overrides = (*sets, f"train.seed={seed}")
            try:
                cfg = load_config(self.config, overrides=overrides)
            except ConfigError as exc:
                where = ", ".join(f"{k}={toml_inline(v)}" for k, v in values)
                error = f"the trial's settings are invalid with {where}: {str(exc).removeprefix('invalid configuration: ')}"
                cfg = None
            points.append(SweepPoint(name=f"trial={number},seed={seed}", values=(("trial", number), *values),
                                     seed=seed, overrides=overrides, config=cfg))
        return points, error

    def _ask(self) -> _Trial:
        optuna = import_optuna()
        number = len(self.study.get_trials(deepcopy=False))
        # A sampler seeded per trial: trial N draws the same whether or not the study was resumed before it.
        seed = int(np.random.SeedSequence([self.first_seed, number]).generate_state(1)[0])
        if self.sampler_name == "random":
            self.study.sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            self.study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        trial = self.study.ask(self.distributions)
        points, error = self._points(trial.number, trial.params)
        return _Trial(trial.number, points, error=error)

    def previous(self) -> list[SweepResult]:
        """The runs of the trials that ended before, from their ``summary.json``."""
        from optuna.trial import TrialState

        out = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            points, error = self._points(trial.number, trial.params)
            for point in points:
                run_dir = self.out / point.name
                if (run_dir / "summary.json").is_file():
                    out.append(SweepResult(point=point, run_dir=run_dir, status="skipped",
                                           summary=read_summary(run_dir)))
                else:
                    out.append(SweepResult(point=point, run_dir=run_dir, status="failed",
                                           error=error or self.study.user_attrs.get(f"error {trial.number}",
                                                                              "no summary.json")))
        return out

    def run(self, trials: int, *, jobs: int = 1, plots: bool = True,
            on_start: Callable[[SweepPoint, str], None] | None = None) -> Iterator[SweepResult]:
        """Bring the study to ``trials`` trials, yielding each run's result as it ends.

        Trials left running by an earlier, stopped search are finished first
        (their runs resume from their checkpoints); then new trials are drawn
        until the study holds ``trials``. A trial ends when its seeds' runs
        have: it completes with the mean of the metric over them, or fails
        (a run failed, its settings are invalid, or the metric is not finite).

        Args:
            trials: the study's size, counting every trial it holds.
            jobs: runs at once (fresh spawned processes above 1, as in
                :func:`ebmkit.sweep.run_sweep`); only this process touches the study.
            plots: write each run's PNGs.
            on_start: called as a run starts (``jobs`` 1 only).

        Raises:
            MetricError: the metric named is in no run's summary (raised as
                the first trial ends, which stays running in the study).
            RunDirectoryError: a trial's run directory holds another run.
            TrainingInterrupted / KeyboardInterrupt: stopped; the trials in
                flight stay running in the study and the same search resumes them.
        """
        from optuna.trial import TrialState

        stale = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))]
        queue = []
        for t in stale:
            points, error = self._points(t.number, t.params)
            queue.append(_Trial(t.number, points, error=error))
        ended = self.trial_counts()[0]
        budget = max(0, trials - ended - len(queue))
        config_arg = str(self.config) if self.config is not None else None
        pool = None
        if jobs > 1:
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                       max_tasks_per_child=1)

        def submit(point: SweepPoint, run_dir: Path, resume: bool) -> Future:
            if pool is not None:
                return pool.submit(train_point, config_arg, point.overrides, str(run_dir), resume, plots, False)
            if on_start is not None:
                on_start(point, "resumed" if resume else "trained")
            future: Future = Future()
            future.set_result(train_point(config_arg, point.overrides, str(run_dir), resume, plots, True))
            return future

        in_flight: dict[Future, tuple[_Trial, SweepPoint, Path, bool]] = {}
        waiting: list[tuple[_Trial, SweepPoint]] = []  # runs of started trials not yet submitted
        interrupted: list[str] = []
        from ebmkit.job import absolute_paths

        try:
            while True:
                ready: list[tuple[_Trial, SweepResult]] = []
                while len(in_flight) < jobs and not interrupted:
                    if not waiting:
                        if queue:
                            trial = queue.pop(0)
                        elif budget > 0:
                            budget -= 1
                            trial = self._ask()
                        else:
                            break
                        if trial.error is not None:
                            ready += [(trial, SweepResult(point=p, run_dir=self.out / p.name, status="failed",
                                                          error=trial.error)) for p in trial.points]
                            continue
                        waiting += [(trial, p) for p in trial.points]
                    trial, point = waiting.pop(0)
                    run_dir = self.out / point.name
                    state = run_state(run_dir, absolute_paths(point.config, self.base_dir))
                    if state == "finished":
                        ready.append((trial, SweepResult(point=point, run_dir=run_dir, status="skipped",
                                                         summary=read_summary(run_dir))))
                        continue
                    in_flight[submit(point, run_dir, state == "resume")] = (trial, point, run_dir, state == "resume")
                if not ready and not in_flight:
                    break
                if not ready:
                    done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for future in done:
                        trial, point, run_dir, resume = in_flight.pop(future)
                        try:
                            outcome, error, seconds = future.result()
                        except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                            outcome, error, seconds = "failed", f"the worker process died: {type(exc).__name__}: {exc}", 0.0
                        if outcome == "interrupted":
                            interrupted.append(error or "interrupted")
                            continue
                        if outcome == "ok":
                            result = SweepResult(point=point, run_dir=run_dir, status="resumed" if resume else "trained",
                                                 summary=read_summary(run_dir), seconds=seconds)
                        else:
                            result = SweepResult(point=point, run_dir=run_dir, status="failed", error=error,
                                                 seconds=seconds)
                        ready.append((trial, result))
                for trial, result in ready:
                    trial.results[result.point.name] = result
                    if len(trial.results) == len(trial.points):
                        self._tell(trial)
                    yield result
                if interrupted and not in_flight:
                    raise KeyboardInterrupt(interrupted[0])
        except KeyboardInterrupt:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # the workers save their checkpoints first
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _tell(self, trial: _Trial) -> None:
        from optuna.trial import TrialState

        results = [trial.results[p.name] for p in trial.points]
        failed = [r for r in results if r.status == "failed"]
        if failed:
            self.study.set_user_attr(f"error {trial.number}", failed[0].error or "a run failed")
            self.study.tell(trial.number, state=TrialState.FAIL)
            return
        summaries = [r.summary for r in results]
        if self.metric is None:
            self.metric = default_metric(summaries)
        elif self.metric not in metric_names(summaries):
            raise MetricError(f"no run's summary has {self.metric!r}; they have: {', '.join(metric_names(summaries))}")
        if "metric" not in self.study.user_attrs:
            self.study.set_user_attr("metric", self.metric)
        values = [s.get(self.metric) for s in summaries]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            self.study.tell(trial.number, float(np.mean(values)))
        else:  # a figure that is null (not finite) in a run: nothing to compare
            self.study.set_user_attr(f"error {trial.number}", f"{self.metric} is not finite in every run")
            self.study.tell(trial.number, state=TrialState.FAIL)

    def best(self) -> tuple[int, dict[str, Any], float] | None:
        """``(trial number, settings, objective)`` of the best completed trial, or ``None``."""
        from optuna.trial import TrialState

        if not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        trial = self.study.best_trial
        settings = {a.key: a.value(trial.params[a.key]) for a in self.axes}
        return trial.number, settings, float(trial.value)
