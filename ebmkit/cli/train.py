"""``ebmkit train``: the main job on the command line."""

from __future__ import annotations

import math
import sys

import click

__all__ = ["train_command"]


def _is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


@click.command("train")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set sampler.step_size=0.05 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<dataset>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its latest checkpoint (with its own config.toml when no "
                   "CONFIG_FILE is given; then only steps, logging, checkpoint cadence and learning rate may change).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Shorthand for --set train.steps=N.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on a terminal, plain progress lines otherwise (default); --no-progress: neither.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary.")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Train data-parallel on N devices (shorthand for --set distributed.devices=N).")
@click.option("--mesh", default=None, metavar="data=N",
              help="The device mesh, e.g. data=4 (the same as --devices 4).")
def train_command(config_file, overrides, out, resume, steps, progress, quiet, devices, mesh):
    """Train an EBM; writes config.toml, checkpoints/, metrics.jsonl,
    samples.png, energy.png, curves.png and summary.json.

    With no CONFIG_FILE it trains the default assembly (mlp + langevin + pcd +
    replay) on 8gaussians.

    Several devices: --devices N splits the batch and the replay buffer over N
    devices (on a CPU-only machine, N CPU devices are made for it).
    Several hosts: start one process per host with JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID set (see docs/distributed.md).
    """
    from ebmkit.job import train_job

    overrides = list(overrides)
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    if devices is not None:
        overrides.append(f"distributed.devices={devices}")
    if mesh is not None:
        overrides.append(f'distributed.mesh="{mesh}"')
    if quiet or progress is False:
        progress = False
    else:
        progress = "bar" if sys.stderr.isatty() else "lines"
    from ebmkit.errors import TrainingInterrupted

    try:
        summary = train_job(config_file, overrides=overrides, out=out, resume=resume, progress=progress)
    except TrainingInterrupted as exc:
        click.echo(f"{exc}", err=True)
        if exc.run_dir is not None:
            again = " ".join(["ebmkit train", *([config_file] if config_file else []), "--out", str(exc.run_dir), "--resume"])
            click.echo(f"resume with: {again}", err=True)
        sys.exit(exc.exit_code)
    if not _is_main_process():
        return  # another process of a multi-process run: process 0 reports
    click.echo(f"run directory: {summary['run_dir']}")
    if summary.get("note"):
        click.echo(f"  {summary['note']}")
    shifts = tuple(key for key in summary if key.startswith("auroc_"))
    for key in ("nll", "kl_gap", "tail_mass", "accuracy", "bayes_accuracy", "ece", *shifts, "energy_gap",
                "steps_per_s", "steps", "devices", "wall_time_s"):
        if key in summary:
            click.echo(f"  {key:<12} {_fmt(summary[key])}")
    if summary.get("evaluated_with") == "ema":
        live = ", ".join(f"{key} {_fmt(summary[f'live_{key}'])}" for key in ("nll", "kl_gap") if f"live_{key}" in summary)
        click.echo(f"  evaluated with the parameter EMA (decay {summary['ema_decay']:g})"
                   + (f"; live parameters: {live}" if live else ""))
    if summary.get("plots"):
        click.echo(f"  plots        {', '.join(summary['plots'])}")
    for note in summary.get("warnings", []):
        click.echo(f"warning: {note}", err=True)
