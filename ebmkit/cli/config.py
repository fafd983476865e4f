"""``ebmkit config``: validate and dump run configurations."""

from __future__ import annotations

from collections.abc import Iterable

import click

from ebmkit.cli import (
    cli,
)
from ebmkit.config import Config, dump_config, load_config
from ebmkit.errors import ConfigError

# -- ebmkit config ------------------------------------------------------------------


_SET_HELP = "Override a value, e.g. --set sampler.step_size=0.05 (repeatable)."


@cli.group("config")
def config_group() -> None:
    """Validate and resolve configuration files."""


def _load(file: str | None, sets: Iterable[str]) -> Config:
    return load_config(file, overrides=tuple(sets))


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def config_validate(file: str, sets: tuple[str, ...]) -> None:
    """Check FILE (TOML or JSON); print "ok" or every problem (exit code 1)."""
    try:
        _load(file, sets)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from None
    click.echo("ok")


@config_group.command("dump")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (.toml or .json) instead of printing TOML.")
def config_dump(file: str | None, sets: tuple[str, ...], output: str | None) -> None:
    """Print the fully resolved config of FILE (defaults filled in, providers recorded).

    Without FILE, dumps the default configuration.
    """
    config = _load(file, sets)
    text = dump_config(config, output)
    if output is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output}", err=True)
