"""Sweeps: one ordinary training run per point of a grid of settings × seeds.

A sweep is a list of :class:`SweepPoint`\\ s, each a config (the base config,
its ``--set`` overrides, one value per grid axis and a seed) and the name of
its run directory. :func:`plan_sweep` builds and validates every point before
anything trains; :func:`run_sweep` trains each point with
:func:`ebmkit.job.train_job` (what ``ebmkit train`` runs), skipping points
whose run already finished and resuming interrupted ones; :func:`write_csv`
and :func:`ebmkit.viz.plot_sweep` collect the results. ``ebmkit sweep`` is a
thin shell over them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ebmkit.config import Config, load_config, unstructure
from ebmkit.config.io import parse_override
from ebmkit.errors import (
    ConfigError,
    ConfigProblem,
    EbmkitError,
    RunDirectoryError,
    TrainingInterrupted,
)

__all__ = [
    "GridAxis",
    "SweepPoint",
    "SweepResult",
    "parse_grid",
    "value_text",
    "check_axis",
    "plan_sweep",
    "run_state",
    "run_sweep",
    "train_point",
    "read_summary",
    "default_metric",
    "metric_names",
    "toml_inline",
    "write_csv",
    "RESUMABLE_CHANGES",
]

PathLike = str | os.PathLike[str]

#: Settings in which a run directory's config may differ from the sweep's and
#: still be continued with ``--resume`` (more steps, other bookkeeping); any
#: other difference means the directory holds another experiment.
RESUMABLE_CHANGES = (
    "train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
)


@attrs.frozen
class GridAxis:
    """One swept setting.

    Attributes:
        key: its dotted path, e.g. ``"sampler.step_size"``.
        values: the values it takes, in order (TOML values).
        text: the ``KEY=[...]`` text it was parsed from (for error messages).
    """

    key: str
    values: tuple[Any, ...]
    text: str = ""

    def override(self, value: Any) -> str:
        """The ``--set`` text that sets this axis to ``value``."""
        return f"{self.key}={toml_inline(value)}"


@attrs.frozen
class SweepPoint:
    """One run of a sweep.

    Attributes:
        name: the run directory's name under the sweep's folder, e.g.
            ``sampler.step_size=0.005,loss.alpha=0.05,seed=0``.
        values: ``(key, value)`` per grid axis, in the grid's order (a
            search's trial: ``("trial", N)``, then each searched setting).
        seed: the run's ``train.seed``.
        overrides: the ``--set`` texts that make its config from the base
            config file (the sweep's own, then the axes', then the seed).
        config: the resolved config (``None`` for a search's trial whose
            settings make no valid config).
    """

    name: str
    values: tuple[tuple[str, Any], ...]
    seed: int
    overrides: tuple[str, ...]
    config: Config | None = attrs.field(eq=False, repr=False)


@attrs.frozen
class SweepResult:
    """What became of one point.

    Attributes:
        point: the point.
        run_dir: its run directory.
        status: ``"skipped"`` (had finished before), ``"trained"``,
            ``"resumed"`` or ``"failed"``.
        summary: the run's ``summary.json`` (``{}`` when it failed).
        error: the error's message when it failed.
        seconds: wall time spent on it by this sweep.
    """

    point: SweepPoint
    run_dir: Path
    status: str
    summary: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None
    seconds: float = 0.0


# -- the grid --------------------------------------------------------------------


def parse_grid(text: str) -> GridAxis:
    """Parse ``"KEY=[v1, v2, ...]"`` (the values are TOML, as for ``--set``).

    Raises:
        ConfigError: no ``=``, a value that is not a non-empty TOML list, a
            repeated value, or ``train.seed`` (seeds have their own option).
    """
    keys, values = parse_override(text)
    key = ".".join(keys)
    raw = text.partition("=")[2].strip()
    example = f"write {key}=[v1, v2, ...], e.g. sampler.step_size=[0.005, 0.01]"
    if not isinstance(values, list):
        reason = "is not a TOML list" if raw.startswith("[") else "is not a list"
        raise ConfigError([ConfigProblem(path=key, message=f"grid values {raw!r} {reason}", suggestion=example)])
    if not values:
        raise ConfigError([ConfigProblem(path=key, message="the grid has no values", suggestion=example)])
    if key == "train.seed":
        raise ConfigError([ConfigProblem(path=key, message="seeds are not a grid axis",
                                         suggestion="use --seeds N (seeds train.seed, train.seed + 1, ...)")])
    texts = [toml_inline(v) for v in values]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise ConfigError([ConfigProblem(path=key, message=f"the grid repeats {', '.join(repeated)}")])
    return GridAxis(key=key, values=tuple(values), text=text)


def toml_inline(value: Any) -> str:
    """``value`` as an inline TOML value (what ``--set`` reads back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', str(k)) else json.dumps(str(k))} = {toml_inline(v)}"
                 for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(str(value))  # dates and times: TOML has them, a config has not


def value_text(value: Any) -> str:
    """``value`` as a short, readable text: a string as it is, a list's
    items joined by ``-``, anything else as TOML."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "-".join(value_text(v) for v in value)
    if isinstance(value, Mapping):
        return "-".join(f"{k}-{value_text(v)}" for k, v in value.items())
    return toml_inline(value)


_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
_MAX_NAME = 200  # file names stop at 255 bytes on most file systems


def _run_name(values: Sequence[tuple[str, Any]], seed: int) -> str:
    name = ",".join([*(f"{k}={value_text(v)}" for k, v in values), f"seed={seed}"])
    name = _UNSAFE.sub("_", name)
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 9]}-{_digest(values, seed)}"
    return name


def _digest(values: Sequence[tuple[str, Any]], seed: int) -> str:
    text = json.dumps([[k, toml_inline(v)] for k, v in values] + [seed])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def plan_sweep(
    config: PathLike | Mapping[str, Any] | None,
    axes: Sequence[GridAxis],
    *,
    seeds: int = 1,
    overrides: Sequence[str] = (),
) -> list[SweepPoint]:
    """Every combination of the axes' values × ``seeds`` seeds, each validated.

    Seeds run from the base config's ``train.seed``: ``seeds=3`` with the
    default seed 0 gives seeds 0, 1 and 2.

    Args:
        config: the base config (a TOML/JSON path, a mapping, or ``None``
            for the default assembly), as for :func:`~ebmkit.job.train_job`.
        axes: the grid (:func:`parse_grid`); the first axis varies slowest.
        seeds: how many seeds each combination runs with.
        overrides: ``--set`` texts applied to every point before its axes.

    Raises:
        ConfigError: the base config, one axis's value, or a combination of
            values is invalid; the message names the axis (``KEY=VALUE``) or
            the combination.
        ValueError: ``seeds`` below 1 or an axis given twice.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    keys = [axis.key for axis in axes]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the grid sweeps {', '.join(twice)} more than once")
    overrides = list(overrides)
    base = load_config(config, overrides=overrides)
    for axis in axes:  # each value on its own first: the error then names one axis
        check_axis(config, axis, overrides=overrides)
    first_seed = base.train.seed
    points: list[SweepPoint] = []
    for combo in itertools.product(*(axis.values for axis in axes)):
        values = tuple(zip(keys, combo, strict=True))
        # A component's choice replaces its table: set it before the settings inside it.
        ordered = sorted(zip(axes, combo, strict=True), key=lambda av: av[0].key.count("."))
        grid_sets = [axis.override(v) for axis, v in ordered]
        for seed in range(first_seed, first_seed + seeds):
            sets = (*overrides, *grid_sets, f"train.seed={seed}")
            name = _run_name(values, seed)
            try:
                cfg = load_config(config, overrides=sets)
            except ConfigError as exc:
                raise _named(exc, ", ".join(f"{k}={toml_inline(v)}" for k, v in values)) from None
            points.append(SweepPoint(name=name, values=values, seed=seed, overrides=sets, config=cfg))
    names = [p.name for p in points]
    if len(set(names)) < len(names):  # values that read alike, e.g. "a b" and "a_b": tell them apart
        points = [attrs.evolve(p, name=f"{p.name[:_MAX_NAME - 9]}-{_digest(p.values, p.seed)}")
                  if names.count(p.name) > 1 else p for p in points]
    return points


def check_axis(config: PathLike | Mapping[str, Any] | None, axis: GridAxis, *,
               overrides: Sequence[str] = ()) -> None:
    """Check that each of ``axis``'s values makes a valid config on its own.

    Raises:
        ConfigError: the first value that does not, named in the message.
    """
    for value in axis.values:
        try:
            load_config(config, overrides=[*overrides, axis.override(value)])
        except ConfigError as exc:
            raise _named(exc, f"{axis.key}={toml_inline(value)}") from None


def _named(exc: ConfigError, where: str) -> ConfigError:
    """``exc`` with each problem saying which grid values it came with."""
    return ConfigError([attrs.evolve(p, source=f"{p.source}: with {where}" if p.source else f"with {where}")
                        for p in exc.problems])


# -- the state of a run directory ---------------------------------------------------


def _differences(saved: Config, wanted: Config) -> list[str]:
    """Dotted paths whose values differ (providers aside: a newer ebmkit is the same run)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                if key != "provider":
                    walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(path)

    walk(unstructure(saved), unstructure(wanted), "")
    return out


def _checkpoint_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def run_state(run_dir: PathLike, config: Config) -> str:
    """What a sweep does with ``run_dir`` to get a finished run of ``config``.

    Returns:
        ``"finished"``: ``summary.json`` is there and the run's config is
        ``config``; ``"resume"``: it has a checkpoint and differs at most in
        :data:`RESUMABLE_CHANGES` (more steps, bookkeeping) or
        ``distributed.*``, or was interrupted; ``"new"``: it holds no checkpoint.

    Raises:
        RunDirectoryError: the directory holds a run of another config, or
            one past the steps asked for.
    """
    path = Path(run_dir)
    steps = _checkpoint_steps(path)
    if not steps:
        return "new"
    try:
        saved = load_config(path / "config.toml")
    except (EbmkitError, OSError) as exc:
        raise RunDirectoryError(f"{path} holds a run whose config.toml cannot be read ({exc}); "
                                "delete the directory or choose another --out") from None
    changed = _differences(saved, config)
    other = [k for k in changed if k not in RESUMABLE_CHANGES and not k.startswith("distributed.")]
    if other:
        raise RunDirectoryError(
            f"{path} holds a run with other settings ({', '.join(other)} differ); delete it or choose another --out"
        )
    if steps[-1] > config.train.steps:
        raise RunDirectoryError(
            f"{path} holds a run at step {steps[-1]}, past the {config.train.steps} steps asked for; "
            f"ask for {steps[-1]} or more (--steps {steps[-1]}), or choose another --out"
        )
    return "finished" if not changed and (path / "summary.json").is_file() else "resume"


# -- running -------------------------------------------------------------------------


def train_point(config: PathLike | None, overrides: Sequence[str], run_dir: str, resume: bool,
                plots: bool, in_process: bool) -> tuple[str, str | None, float]:
    """Train one point; ``(outcome, error, seconds)`` with outcome ``ok``,
    ``failed`` or ``interrupted``. Runs in a spawned worker for parallel sweeps (module
    level, so the worker can import it). ``in_process``: let an interrupt or
    an unexpected error through instead of reporting it."""
    from ebmkit.job import train_job

    started = time.perf_counter()
    try:
        train_job(config, overrides=overrides, out=run_dir, resume=resume, progress=False, plots=plots)
    except TrainingInterrupted as exc:
        if in_process:
            raise
        return "interrupted", str(exc), time.perf_counter() - started
    except EbmkitError as exc:
        return "failed", str(exc), time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - a worker reports, the sweep goes on
        if in_process:
            raise
        return "failed", f"unexpected {type(exc).__name__}: {exc}", time.perf_counter() - started
    return "ok", None, time.perf_counter() - started


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``."""
    with open(run_dir / "summary.json", encoding="utf-8") as fh:
        return json.load(fh)


def run_sweep(
    points: Sequence[SweepPoint],
    out: PathLike,
    *,
    config: PathLike | None = None,
    jobs: int = 1,
    plots: bool = True,
    on_start: Callable[[SweepPoint, str], None] | None = None,
) -> Iterator[SweepResult]:
    """Train every point into ``out/<point.name>``, yielding results as runs end.

    Finished runs (:func:`run_state`) are skipped and yielded first;
    interrupted ones resume from their latest checkpoint. Every directory is
    checked before anything trains, so a conflicting one stops the sweep at
    once. With ``jobs`` > 1, runs train in that many fresh worker processes
    (spawned, one per run: JAX is not safe to fork, and each run stays
    isolated); otherwise one after another in this process.

    Args:
        points: from :func:`plan_sweep` with the same ``config``.
        out: the sweep's folder.
        config: the base config file (``None``: the default assembly).
        jobs: runs at once.
        plots: write each run's PNGs.
        on_start: called with a point and ``"trained"``/``"resumed"`` as its run starts
            (sequential sweeps only).

    Raises:
        RunDirectoryError: a run directory holds another run (before any run starts).
        TrainingInterrupted: a sequential sweep was stopped (Ctrl-C); the run
            saved a checkpoint, and the same sweep resumes it.
        KeyboardInterrupt: a parallel sweep was stopped; its workers saved
            checkpoints and the same sweep resumes them.
    """
    from ebmkit.job import absolute_paths

    out = Path(out)
    base_dir = Path(config).parent if isinstance(config, (str, os.PathLike)) else Path.cwd()
    states = []
    for point in points:
        run_dir = out / point.name
        states.append((point, run_dir, run_state(run_dir, absolute_paths(point.config, base_dir))))
    todo = []
    for point, run_dir, state in states:
        if state == "finished":
            yield SweepResult(point=point, run_dir=run_dir, status="skipped", summary=read_summary(run_dir))
        else:
            todo.append((point, run_dir, state == "resume"))
    config_arg = str(config) if config is not None else None

    def result(point: SweepPoint, run_dir: Path, resume: bool, outcome: str, error: str | None,
               seconds: float) -> SweepResult:
        if outcome == "ok":
            return SweepResult(point=point, run_dir=run_dir, status="resumed" if resume else "trained",
                               summary=read_summary(run_dir), seconds=seconds)
        return SweepResult(point=point, run_dir=run_dir, status="failed", error=error, seconds=seconds)

    if jobs <= 1 or len(todo) <= 1:
        for point, run_dir, resume in todo:
            if on_start is not None:
                on_start(point, "resumed" if resume else "trained")
            yield result(point, run_dir, resume,
                         *train_point(config_arg, point.overrides, str(run_dir), resume, plots, True))
        return

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1)
    try:
        futures = {
            pool.submit(train_point, config_arg, point.overrides, str(run_dir), resume, plots, False):
                (point, run_dir, resume)
            for point, run_dir, resume in todo
        }
        pending = set(futures)
        interrupted = []
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                point, run_dir, resume = futures[future]
                try:
                    outcome, error, seconds = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                    outcome, error, seconds = "failed", f"the worker process died: {type(exc).__name__}: {exc}", 0.0
                if outcome == "interrupted":
                    interrupted.append(error)
                    continue
                yield result(point, run_dir, resume, outcome, error, seconds)
        if interrupted:
            raise KeyboardInterrupt(interrupted[0])
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)  # the workers save their checkpoints first
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- results ---------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def default_metric(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The main quality figure the summaries share: ``kl_gap`` where the data
    set knows its entropy (2-D toys), else the final ``loss``."""
    if any(_finite(s.get("kl_gap")) for s in summaries):
        return "kl_gap"
    return "loss"


def metric_names(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric summary keys (``null`` is a number that was not finite),
    in the order they first appear."""
    names: dict[str, None] = {}
    for summary in summaries:
        for key, value in summary.items():
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                names.setdefault(key, None)
    return list(names)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, int)):
        return str(value)
    return toml_inline(value)


def write_csv(results: Sequence[SweepResult], path: PathLike) -> list[str]:
    """One row per run: ``run``, the swept settings, ``seed``, ``status`` and
    every numeric entry of its ``summary.json`` (blank where it has none or
    it is not finite). Numbers are written exactly (``repr``). Returns the columns."""
    import csv

    keys = [k for k, _ in results[0].point.values] if results else []
    metrics = metric_names([r.summary for r in results])
    columns = ["run", *keys, "seed", "status", *metrics]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for r in results:
            writer.writerow([r.point.name, *(_cell(v) for _, v in r.point.values), r.point.seed, r.status, *(_cell(r.summary.get(m)) for m in metrics)])
    return columns
