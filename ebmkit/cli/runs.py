"""``ebmkit sample``, ``evaluate`` and ``diagnose``: reopen a run directory."""

from __future__ import annotations

import json
from typing import Any

import click

from ebmkit.cli import (
    _table,
    cli,
)

# -- ebmkit sample / evaluate / diagnose (reopen a run directory) --------------------
# JAX loads inside the commands only, so `ebmkit --help` stays fast.

_RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))


_SAMPLER = click.option(
    "--sampler", "sampler", default=None, metavar="NAME",
    help="Sample with this registered sampler instead of the model's own (e.g. replica_exchange).",
)
_SAMPLER_OPTION = click.option(
    "--sampler-option", "sampler_options", multiple=True, metavar="KEY=VALUE",
    help="A config field of --sampler (TOML value), e.g. num_replicas=12; repeatable.",
)


def _other_sampler(model: object, name: str | None, options: tuple[str, ...]):  # noqa: ANN202
    """The sampler --sampler names, configured by --sampler-option, or ``None``."""
    if name is None:
        if options:
            raise click.UsageError("--sampler-option needs --sampler")
        return None
    from ebmkit.config.io import parse_override
    from ebmkit.errors import ConfigError
    from ebmkit.evaluate.long_run import sampler_for

    fields: dict[str, object] = {}
    for text in options:
        try:
            path, value = parse_override(text)
        except (ValueError, ConfigError) as exc:
            raise click.BadParameter(str(exc), param_hint="--sampler-option") from None
        if len(path) != 1:
            raise click.BadParameter(f"{text!r}: expected FIELD=VALUE", param_hint="--sampler-option")
        fields[path[0]] = value
    try:
        return sampler_for(model, name, fields)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--sampler") from None


def _open_run(run_dir: str):  # noqa: ANN202 - ebmkit.run.Run, imported lazily
    from ebmkit.run import open_run

    return open_run(run_dir)


@cli.command("sample")
@_RUN_DIR
@click.option("-n", "--num", "num", type=click.IntRange(min=1), required=True, help="Number of samples.")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="MCMC steps per chain (default: the sampler's num_steps).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the chains.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="The .npz file to write; a .png picture goes next to it.")
@click.option("--start", type=click.Choice(["noise", "buffer"]), default="noise", show_default=True,
              help="Start the chains from fresh noise, or continue the replay buffer's persistent chains.")
@click.option("--diagnostics", is_flag=True,
              help="Record the chains and print their effective sample size, split R-hat, acceptance and "
                   "cost (the second half of the steps).")
@click.option("--label", "label", type=click.IntRange(min=0), default=None, metavar="K",
              help="Conditional samples of class K: chains run on E(x, K) (a conditional energy such as "
                   "classifier; fresh-noise starts only).")
@_SAMPLER
@_SAMPLER_OPTION
def sample_command(
    run_dir: str, num: int, steps: int | None, seed: int, out: str, start: str, sampler: str | None,
    sampler_options: tuple[str, ...], diagnostics: bool, label: int | None,
) -> None:
    """Draw N samples from the latest checkpoint of RUN_DIR.

    Chains start from fresh noise (default) or continue the replay buffer's
    persistent chains (--start buffer). Writes OUT (.npz with a `samples`
    array) and OUT with .png: a scatter over held-out data for 2-D data sets,
    an image grid for images; prints how the samples sit against the data box
    and, for 2-D data, their total-variation distance to the model's own
    density next to that of exact draws.

    --sampler runs another sampler than the model's own, e.g.
    `--sampler replica_exchange --steps 1000`: parallel tempering with
    Metropolis-adjusted moves, which gets the weights of separated modes right
    (its step size defaults to the model's sampler's; --sampler-option
    num_replicas=12 and the like set its other fields).

    --diagnostics records the chains and prints how well they mix: bulk and
    tail effective sample size and split R-hat over the second half of the
    steps, the acceptance rate, and ESS per 1,000 gradient evaluations and
    per second.

    --label K draws class-conditional samples from p(x | y = K) of a
    conditional energy (the `classifier` energy, e.g. a run trained with
    loss = "jem"): every chain runs on E(x, K) from fresh noise.
    """
    from pathlib import Path

    import numpy as np

    if label is not None and (start == "buffer" or sampler is not None or diagnostics):
        raise click.UsageError("--label draws fresh conditional chains with the model's own sampler; "
                               "it cannot be combined with --start buffer, --sampler or --diagnostics")
    out_path = Path(out)
    if out_path.suffix.lower() != ".npz":
        raise click.BadParameter(f"{out!r} must end in .npz (the picture goes next to it as .png)",
                                 param_hint="--out")
    run = _open_run(run_dir)
    other = _other_sampler(run.model, sampler, sampler_options)
    if run.model.sampler is None and other is None:
        raise click.UsageError("this run's model has no sampler (its loss needs none); set one in the config "
                               "or pass --sampler")
    chains = None
    if start == "buffer" or other is not None or diagnostics:
        import jax

        from ebmkit.evaluate.long_run import continue_chains

        if start == "buffer":
            if run.model.buffer is None or len(run.model.sample_buffer) == 0:
                raise click.UsageError("--start buffer: this run has no filled replay buffer")
            x0 = run.model.sample_from_buffer(num, rng_key=jax.random.key(seed + 1))
        else:
            x0 = run.model.fresh_starts.fresh(jax.random.key(seed + 1), num)
        length = steps if steps is not None else (other or run.model.sampler).num_steps
        if diagnostics:
            from ebmkit.evaluate.chains import sampler_diagnostics

            try:
                samples, chains = sampler_diagnostics(run.model, num_chains=num, num_steps=length, seed=seed,
                                                      sampler=other, x0=x0)
            except ValueError as exc:
                raise click.UsageError(f"--diagnostics: {exc}") from None
        else:
            samples = continue_chains(run.model, x0, length, seed=seed, sampler=other)
    else:
        try:
            samples = run.generate(num, n_steps=steps, seed=seed, label=label)
        except ValueError as exc:
            if label is None:
                raise
            raise click.BadParameter(str(exc), param_hint="--label") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as fh:  # a file object: numpy must not rename the file
        np.savez(fh, samples=samples, step=np.int64(run.step), seed=np.int64(seed))
    click.echo(f"wrote {out_path} ({len(samples)} samples of shape {list(samples.shape[1:])}, step {run.step})")
    if chains is not None:
        rows = [(k, _number(v)) for k, v in chains.items()]
        click.echo(_table(rows, ["chain statistic", "value"]))
    from ebmkit.evaluate.long_run import sample_report

    # Conditional samples follow p(x | y), not the model's density the report compares with.
    report = sample_report(run.model, run.dataset, samples, seed=seed) if label is None else {}
    if "escape_fraction" in report:
        line = f"outside the data box: {report['escape_fraction']:.1%}"
        if "tail_mass" in report:
            line += (f" (the model's mass there: {report['tail_mass']:.1%}); total variation to the model's "
                     f"density {report['tv']:.3f} (exact draws: {report['tv_floor']:.3f})")
        click.echo(line)
        from ebmkit.evaluate.long_run import ESCAPE_LIMIT, TV_MARGIN

        drifting = report["escape_fraction"] > report.get("tail_mass", 0.0) + ESCAPE_LIMIT
        if drifting or report.get("tv", 0.0) > report.get("tv_floor", 0.0) + TV_MARGIN:
            click.echo(
                "note: these samples do not match the model's density; chains that converge for it: "
                f"ebmkit sample {run_dir} -n {num} --start buffer --sampler replica_exchange --steps 1000 "
                "(docs/evaluation.md, the long-run check)",
                err=True,
            )
    picture = out_path.with_suffix(".png")
    if run.plot_samples(samples, picture):
        click.echo(f"wrote {picture}")
    else:
        click.echo(f"no picture for samples of shape {list(samples.shape[1:])}", err=True)


@cli.command("evaluate")
@_RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="MCMC steps of the diagnostic chains.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the diagnostic chains.")
def evaluate_command(run_dir: str, as_json: bool, steps: int, seed: int) -> None:
    """Evaluate the latest checkpoint of RUN_DIR; also writes RUN_DIR/evaluation.json.

    2-D data sets get the NLL normalised over the whole plane, the KL gap
    where the entropy is known, and tail_mass, the share of the model's mass
    outside the data box (with the box-only figures beside them); every model
    gets the diagnostics of `ebmkit diagnose`.
    """
    from pathlib import Path

    from ebmkit.run import jsonable

    run = _open_run(run_dir)
    result = jsonable(run.evaluate(n_steps=steps, seed=seed))
    text = json.dumps(result, indent=2)
    target = Path(run_dir) / "evaluation.json"
    target.write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
        return
    rows = [(k, _number(v), section)
            for section in ("evaluation", "diagnostics") for k, v in result[section].items()]
    click.echo(f"{run_dir} at step {result['step']}\n")
    click.echo(_table(rows, ["metric", "value", "group"]))
    evaluation = result["evaluation"]
    if "tail_mass" in evaluation:
        from ebmkit.evaluate import tail_warning

        note = tail_warning(evaluation["tail_mass"], bool(evaluation.get("decayed", 1.0)))
        if note:
            click.echo(f"warning: {note}", err=True)
    click.echo(f"\nwrote {target}", err=True)


def _number(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@cli.command("diagnose")
@_RUN_DIR
@click.option("-n", "--num", "num", type=click.IntRange(min=1), default=64, show_default=True,
              help="Number of fresh chains.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="MCMC steps per chain.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the chains.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw report as JSON.")
@click.option("--long-run", "long_run", is_flag=True,
              help="Also run the sampler 10x and 100x the training K, from the buffer and from noise, "
                   "and compare the samples with the model's own density.")
@_SAMPLER
@_SAMPLER_OPTION
def diagnose_command(
    run_dir: str, num: int, steps: int, seed: int, as_json: bool, long_run: bool, sampler: str | None,
    sampler_options: tuple[str, ...],
) -> None:
    """Health check of the latest checkpoint of RUN_DIR.

    Energy gap (fake - real; should be > 0), MCMC energy decrease (> 0),
    replay-buffer usage and the range of fresh samples against the data bounds,
    for the components the model has. With --long-run: whether long chains stay
    on the model's density (escaping samples; for 2-D data the total-variation
    distance to the density next to that of exact draws). --sampler runs the
    long chains with another sampler (e.g. replica_exchange).
    """
    from ebmkit.run import diagnosis_notes, jsonable

    run = _open_run(run_dir)
    other = _other_sampler(run.model, sampler, sampler_options)
    if other is not None and not long_run:
        raise click.UsageError("--sampler applies to the long runs: add --long-run")
    report = run.diagnose(n_samples=num, n_steps=steps, seed=seed)
    check = None
    if long_run and (run.model.sampler is not None or other is not None):
        from ebmkit.evaluate import long_run_check

        check = long_run_check(run.model, run.dataset, seed=seed, sampler=other)
    if as_json:
        out = {"step": run.step, **report}
        if check is not None:
            out["long_run"] = check
        click.echo(json.dumps(jsonable(out), indent=2))
        return
    click.echo(f"{run_dir} at step {run.step}: {num} chains of {steps} steps\n")
    click.echo(_table(diagnosis_notes(report, run.dataset.bounds), ["quantity", "value", "verdict"]))
    if check is not None:
        from ebmkit.evaluate.long_run import advice

        rows = [
            (f"{r['steps']} steps from {r['start']}", _number(r.get("escape_fraction")),
             _number(r["energy_mean"]), _number(r.get("tv")), _number(r.get("tv_floor")))
            for r in check["runs"]
        ]
        click.echo(f"\nlong runs of {check['sampler']} (data energy {check['data_energy_mean']:.4g}, "
                   f"model mass outside the box "
                   f"{check['tail_mass']:.2%}):\n")
        click.echo(_table(rows, ["chains", "escaped", "energy", "TV to density", "TV of exact draws"]))
        click.echo(f"\n{'ok' if check['converges'] else 'check'}: {check['verdict']}")
        if not check["converges"]:
            click.echo(advice())
