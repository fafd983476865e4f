"""``ebmkit sweep``: train a grid of settings × seeds, one run directory each."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["sweep_command"]

#: Figures shown beside the sorting metric, where the summaries have them.
_SHOWN = ("kl_gap", "nll", "loss", "energy_gap")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _number(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else math.nan


@click.command("sweep")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--grid", "grids", multiple=True, metavar="KEY=[V1,V2,...]",
              help="A swept setting and its values as a TOML list, e.g. --grid 'sampler.step_size=[0.005, 0.01]' "
                   "(repeatable; every combination runs).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per combination: train.seed, train.seed + 1, ...")
@click.option("--out", type=click.Path(file_okay=False), default="runs/sweep", show_default=True,
              help="The sweep's folder: one run directory per run, sweep.csv and sweep.png.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value for every run, e.g. --set train.batch_size=128 (repeatable).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Shorthand for --set train.steps=N.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once; above 1, each run trains in a fresh process.")
@click.option("--metric", default=None, metavar="NAME",
              help="The summary figure to sort and plot by (default: kl_gap where the data set has one, else loss).")
@click.option("--maximize", is_flag=True, help="Higher --metric is better (default: lower is better).")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write each run's samples.png, energy.png and curves.png.")
@click.option("--trials", type=click.IntRange(min=1), default=None, metavar="N",
              help="Search instead of a grid: Optuna draws N trials in all from the --search spaces "
                   "(needs ebmkit-jax[sweep]); running again continues the study in OUT/study.db.")
@click.option("--search", "searches", multiple=True, metavar="KEY=DIST",
              help="A searched setting: uniform(LOW, HIGH), loguniform(LOW, HIGH), int(LOW, HIGH), "
                   "logint(LOW, HIGH) or choice(V1, V2, ...), e.g. --search 'sampler.step_size=loguniform(1e-3, "
                   "1e-1)' (repeatable; with --trials).")
@click.option("--sampler", "search_sampler", type=click.Choice(["tpe", "random"]), default=None,
              help="How --trials draws settings: Optuna's TPE sampler, or at random.  [default: tpe]")
def sweep_command(config_file, grids, seeds, out, overrides, steps, jobs, metric, maximize, plots, trials, searches,
                  search_sampler):
    """Train every combination of the --grid values × --seeds seeds, or
    --trials N settings drawn from the --search spaces.

    Each run is an ordinary `ebmkit train` run in OUT/<setting=value,...,seed=N>
    (OUT/trial=N,seed=S for a search). Running the same sweep again skips the
    runs that finished and resumes interrupted ones. Writes OUT/sweep.csv (one
    row per run: the swept settings, the seed and the run's summary figures),
    prints the runs sorted by --metric, and writes OUT/sweep.png (the metric
    against each swept setting, mean ± std over seeds).

    Every combination's config (a search: each range's ends, each choice) is
    checked before anything trains.
    """
    from ebmkit.config import load_config
    from ebmkit.errors import ConfigError, TrainingInterrupted
    from ebmkit.sweep import check_axis, parse_grid, plan_sweep, run_sweep

    sets = [*overrides, *([f"train.steps={steps}"] if steps is not None else [])]
    if trials is not None or searches or search_sampler is not None:
        if grids:
            raise click.UsageError("--grid and --search do not mix: a search draws every value; write the grid "
                                   "axis as a choice, e.g. --search 'sampler=choice(langevin, mala)'")
        if not searches:
            raise click.UsageError("--trials needs the settings to search: --search KEY=DIST, e.g. "
                                   "--search 'sampler.step_size=loguniform(1e-3, 1e-1)'")
        if trials is None:
            raise click.UsageError("--search needs --trials N: the number of trials the study holds in all")
        load_config(config_file, overrides=sets)
        _search(config_file, searches, trials=trials, seeds=seeds, out=Path(out), sets=sets, jobs=jobs,
                metric=metric, maximize=maximize, plots=plots, sampler=search_sampler or "tpe")
        return
    load_config(config_file, overrides=sets)  # the base config's own errors first, as `ebmkit train` says them
    axes = []
    for text in grids:
        try:
            axis = parse_grid(text)
            check_axis(config_file, axis, overrides=sets)
        except ConfigError as exc:
            raise click.BadParameter(_one_line(exc), param_hint=f"--grid {text!r}") from None
        if any(a.key == axis.key for a in axes):
            raise click.BadParameter(f"{axis.key} is swept by an earlier --grid too", param_hint=f"--grid {text!r}")
        axes.append(axis)
    try:
        points = plan_sweep(config_file, axes, seeds=seeds, overrides=sets)
    except ConfigError as exc:
        raise click.UsageError(f"a combination of the --grid values is invalid: {_one_line(exc)}") from None

    out_dir = Path(out)
    sizes = " × ".join([*(f"{len(a.values)} {a.key}" for a in axes), f"{seeds} seed{'s' * (seeds != 1)}"])
    click.echo(f"sweep: {len(points)} run{'s' * (len(points) != 1)} ({sizes}) in {out_dir}"
               + (f", {jobs} at a time" if jobs > 1 else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    width = len(str(len(points)))

    def counter() -> str:
        return f"[{len(results) + 1:>{width}}/{len(points)}]"

    def started(point, verb) -> None:  # noqa: ANN001
        click.echo(f"{counter()} {'resuming' if verb == 'resumed' else 'training'} {point.name}")

    try:
        for result in run_sweep(points, out_dir, config=config_file, jobs=jobs, plots=plots,
                                on_start=started if jobs == 1 else None):
            line = f"{counter()} {result.status} {result.point.name}"
            results[result.point.name] = result
            if result.status == "failed":
                click.echo(f"{line}: {result.error}", err=True)
                continue
            figure = metric or ("loss" if math.isnan(_number(result.summary.get("kl_gap"))) else "kl_gap")
            detail = f"{figure} {_fmt(result.summary.get(figure))}"
            if result.status == "skipped":
                detail += ", finished before"
            else:
                detail += f", {result.seconds:.1f} s"
            click.echo(f"{line} ({detail})")
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        done = [results[p.name] for p in points if p.name in results]
        if done:
            _write_csv(done, out_dir)
        click.echo(f"sweep stopped{f': {exc}' if str(exc) else ''}; run the same command again to continue "
                   "(finished runs are skipped, interrupted ones resume)", err=True)
        sys.exit(getattr(exc, "exit_code", 130))

    ordered = [results[p.name] for p in points]
    _report(ordered, [a.key for a in axes], out_dir, metric=metric, maximize=maximize)
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        click.echo(f"Error: {len(failed)} of {len(ordered)} runs failed (see above); run the same command again "
                   "to retry them", err=True)
        raise click.exceptions.Exit(1)


def _search(config_file: str | None, texts: Sequence[str], *, trials: int, seeds: int, out: Path,
            sets: Sequence[str], jobs: int, metric: str | None, maximize: bool, plots: bool, sampler: str) -> None:
    """``--trials N --search ...``: an Optuna study in OUT/study.db."""
    from ebmkit.errors import ConfigError, MetricError, TrainingInterrupted

    try:
        from ebmkit.search import (
            SearchStudy,
            check_search_axis,
            import_optuna,
            parse_search,
        )

        optuna = import_optuna()
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    axes = []
    for text in texts:
        try:
            axis = parse_search(text)
            check_search_axis(config_file, axis, overrides=sets)
        except ConfigError as exc:
            raise click.BadParameter(_one_line(exc), param_hint=f"--search {text!r}") from None
        if any(a.key == axis.key for a in axes):
            raise click.BadParameter(f"{axis.key} is searched by an earlier --search too",
                                     param_hint=f"--search {text!r}")
        axes.append(axis)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with SearchStudy(config_file, axes, out, seeds=seeds, overrides=sets, sampler=sampler, metric=metric,
                     maximize=maximize) as study:
        ended, cut_short = study.trial_counts()
        todo = max(0, trials - ended - cut_short) + cut_short
        total = max(trials, ended + cut_short) * seeds
        space = ", ".join(f"{a.key}={a.describe()}" for a in axes)
        click.echo(f"sweep: {trials} trial{'s' * (trials != 1)} × {seeds} seed{'s' * (seeds != 1)} by {sampler} "
                   f"over {space} in {out}" + (f", {jobs} at a time" if jobs > 1 else ""))
        if ended or cut_short:
            click.echo(f"the study has {ended} ended trial{'s' * (ended != 1)}"
                       + (f" and {cut_short} cut short (finished first)" if cut_short else "")
                       + f"; {todo} to run")
        results = study.previous()
        count = len(results)
        width = len(str(total))

        def counter() -> str:
            return f"[{count + 1:>{width}}/{total}]"

        def started(point, verb) -> None:  # noqa: ANN001
            click.echo(f"{counter()} {'resuming' if verb == 'resumed' else 'training'} {point.name}")

        try:
            for result in study.run(trials, jobs=jobs, plots=plots, on_start=started if jobs == 1 else None):
                line = f"{counter()} {result.status} {result.point.name}"
                count += 1
                results.append(result)
                if result.status == "failed":
                    click.echo(f"{line}: {result.error}", err=True)
                    continue
                figure = study.metric or metric or (
                    "loss" if math.isnan(_number(result.summary.get("kl_gap"))) else "kl_gap")
                click.echo(f"{line} ({figure} {_fmt(result.summary.get(figure))}, {result.seconds:.1f} s)")
        except MetricError as exc:
            raise click.BadParameter(str(exc), param_hint="--metric") from None
        except (KeyboardInterrupt, TrainingInterrupted) as exc:
            if results:
                _write_csv(results, out)
            click.echo(f"sweep stopped{f': {exc}' if str(exc) else ''}; run the same command again to continue "
                       "(the trials cut short are finished first)", err=True)
            sys.exit(getattr(exc, "exit_code", 130))
        results.sort(key=lambda r: (r.point.values[0][1], r.point.seed))
        keys = ["trial", *(a.key for a in axes)]
        _report(results, keys, out, metric=study.metric or metric, maximize=maximize, best=False, short=True)
        best = study.best()
        failed = sorted({r.point.values[0][1] for r in results if r.status == "failed"})
        if failed:
            click.echo(f"{len(failed)} trial{'s' * (len(failed) != 1)} failed ({', '.join(map(str, failed))}); "
                       "a failed trial counts toward --trials and is not run again", err=True)
        if best is None:
            click.echo("Error: no trial completed", err=True)
            raise click.exceptions.Exit(1)
        number, settings, value = best
        over = f"mean over {seeds} seeds" if seeds > 1 else "one seed"
        click.echo(f"best: trial {number} ({', '.join(f'{k}={_setting(v, True)}' for k, v in settings.items())}): "
                   f"{study.metric} {value:.4g} ({over})")


def _one_line(exc: Exception) -> str:
    text = str(exc)
    return text.removeprefix("invalid configuration: ")


def _write_csv(results: Sequence[Any], out_dir: Path) -> Path:
    from ebmkit.sweep import write_csv

    path = out_dir / "sweep.csv"
    write_csv(results, path)
    return path


def _report(results: Sequence[Any], keys: Sequence[str], out_dir: Path, *, metric: str | None,
            maximize: bool, best: bool = True, short: bool = False) -> None:
    """sweep.csv, the table sorted by the metric, the best setting (``best``)
    and sweep.png; ``short`` shows float settings to 4 figures in the table."""
    from ebmkit.sweep import default_metric, metric_names

    csv_path = _write_csv(results, out_dir)
    summaries = [r.summary for r in results if r.status != "failed"]
    known = metric_names(summaries)
    if metric is None:
        metric = default_metric(summaries)
    elif summaries and metric not in known:
        raise click.BadParameter(f"no run's summary has {metric!r}; they have: {', '.join(known)}",
                                 param_hint="--metric")

    def rank(result: Any) -> tuple[int, float]:
        value = _number(result.summary.get(metric))
        return (1, 0.0) if math.isnan(value) else (0, -value if maximize else value)

    shown = [m for m in _SHOWN if m != metric and any(not math.isnan(_number(s.get(m))) for s in summaries)]
    from rich.table import Table

    table = Table(title=f"sorted by {metric} ({'higher' if maximize else 'lower'} is better)")
    for column in [*keys, "seed"]:
        table.add_column(column, no_wrap=True)
    table.add_column(metric, justify="right", style="bold", no_wrap=True)
    for column in shown:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for r in sorted(results, key=rank):
        values = [_setting(v, short) for _, v in r.point.values]
        table.add_row(*values, str(r.point.seed), _fmt(r.summary.get(metric)),
                      *(_fmt(r.summary.get(m)) for m in shown), r.status)
    _print_rich(table)
    best_text = _best_setting(results, metric, maximize) if best else None
    if best_text is not None and keys:
        click.echo(f"best: {best_text}")
    written = [str(csv_path)]
    rows = [{**dict(r.point.values), "seed": r.point.seed, metric: _number(r.summary.get(metric))}
            for r in results]
    if keys and any(not math.isnan(row[metric]) for row in rows):
        from ebmkit.viz import plot_sweep

        plot_sweep(rows, keys, metric, out_dir / "sweep.png",
                   title=f"{metric} ({'higher' if maximize else 'lower'} is better): mean ± std over seeds")
        written.append(str(out_dir / "sweep.png"))
    click.echo(f"wrote {' and '.join(written)}")


def _setting(value: Any, short: bool = False) -> str:
    from ebmkit.sweep import toml_inline

    if short and isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else toml_inline(value)


def _best_setting(results: Sequence[Any], metric: str, maximize: bool) -> str | None:
    """The combination with the best mean metric over its seeds, as text."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for r in results:
        label = tuple(f"{k}={_setting(v)}" for k, v in r.point.values)
        value = _number(r.summary.get(metric))
        if not math.isnan(value):
            groups.setdefault(label, []).append(value)
    if not groups:
        return None
    label, values = (max if maximize else min)(groups.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    spread = f" ± {std:.2g} over {len(values)} seeds" if len(values) > 1 else ""
    return f"{', '.join(label)}: {metric} {mean:.4g}{spread}"


def _print_rich(renderable: Any) -> None:
    """Print with rich: in colour on a terminal, as plain wide text otherwise."""
    from rich.console import Console

    if sys.stdout.isatty():
        Console().print(renderable)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(renderable)
    click.echo(buffer.getvalue(), nl=False)
