"""Hook specifications for ebmkit's host-side plugins.

Components (energies, samplers, buffers, losses, data sets) are *not* hooks: they
come from the entry-point registries in :mod:`ebmkit.registry`. The hooks here
let a plugin watch a run and extend the command line. They are called on the host,
in Python, between compiled calls; never inside ``jit``.

A hook plugin is any importable object (usually a module) named by an entry point
in the ``ebmkit.plugins`` group::

    [project.entry-points."ebmkit.plugins"]
    my_logger = "my_package.ebmkit_plugin"

and marks its implementations with :data:`hookimpl`::

    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_step_end(step, metrics):
        print(step, metrics["loss"])

An implementation may accept any subset of a hook's arguments, by name. A plugin
that implements a hook not listed here (a misspelling such as
``ebmkit_step_ned``) or with an argument the hook does not have is rejected when
it is loaded; see :mod:`ebmkit.plugins`.

Unless stated otherwise, every implementation of a hook is called (most recently
registered first, as pluggy does) and return values are ignored. An exception
raised by an implementation propagates to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from ebmkit.config import Config

__all__ = ["PROJECT_NAME", "ENTRY_POINT_GROUP", "hookspec", "hookimpl"]

#: The pluggy project name; markers of another project are ignored.
PROJECT_NAME = "ebmkit"

#: The entry-point group hook plugins are discovered from.
ENTRY_POINT_GROUP = "ebmkit.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ebmkit_run_start(config: Config, run_dir: Path | None) -> None:
    """Called once when a training run starts, before the first step is compiled.

    Args:
        config: the resolved :class:`ebmkit.config.Config` of the run.
        run_dir: the directory the run writes checkpoints and logs to, or
            ``None`` when the run writes nothing to disk.

    Every implementation is called; return values are ignored.
    """


@hookspec
def ebmkit_step_end(step: int, metrics: dict[str, float]) -> None:
    """Called on the host every log interval (``train.log_every`` steps).

    The metrics have already been fetched from the device, so an implementation
    never forces an extra device sync and never runs inside ``jit``.

    Args:
        step: the number of optimiser updates done so far (1-based).
        metrics: metric name to Python ``float``, averaged over the interval;
            always includes ``loss``, ``grad_norm`` and ``steps_per_s``,
            plus what the loss declares (``energy_gap``, ``real_energy_mean``
            and ``fake_energy_mean`` for the contrastive losses). Do not mutate it.

    Every implementation is called; return values are ignored.
    """


@hookspec
def ebmkit_checkpoint_saved(step: int, path: Path) -> None:
    """Called after a checkpoint has been written completely.

    Args:
        step: the step the checkpoint holds.
        path: where it was written (a file or directory, depending on the
            checkpoint format).

    Every implementation is called; return values are ignored.
    """


@hookspec
def ebmkit_plot_saved(run_dir: Path, step: int, path: Path) -> None:
    """Called after a run's plot has been written completely.

    :func:`ebmkit.train_job` (and so ``ebmkit train``) writes its plots
    (``samples.png``, ``energy.png``, ``curves.png``; which ones depends on the
    model and the data) after training, so this hook is called after
    :func:`ebmkit_run_end`, once per file. A bare :class:`~ebmkit.training.Trainer`
    writes no plots and never calls it.

    Args:
        run_dir: the run directory.
        step: the step of the model the plot shows (the run's last step).
        path: the PNG file, in ``run_dir``.

    Every implementation is called; return values are ignored.
    """


@hookspec
def ebmkit_run_end(
    config: Config, run_dir: Path | None, summary: dict[str, Any], error: BaseException | None
) -> None:
    """Called once when a run ends, whether it finished or failed.

    Args:
        config: the resolved config of the run (as given to
            :func:`ebmkit_run_start`).
        run_dir: the run directory, or ``None``.
        summary: final metrics and bookkeeping (Python scalars and strings),
            e.g. ``{"steps": 2000, "loss": 0.01, "wall_time_s": 31.2}``; may be
            partial when the run failed.
        error: the exception that stopped the run, or ``None`` if it finished.
            The exception is re-raised after the hook returns; an implementation
            cannot swallow it.

    Every implementation is called; return values are ignored.
    """


@hookspec
def ebmkit_cli_commands(cli: click.Group) -> None:
    """Called once when the ``ebmkit`` command starts, to add subcommands.

    Args:
        cli: the top-level ``ebmkit`` :class:`click.Group`; add commands with
            ``cli.add_command(...)`` or the ``@cli.command()`` decorator.

    Each plugin's implementation is called separately, so one that raises is
    reported as a warning and does not stop the command line or other
    plugins. A plugin may not replace a built-in command: such a replacement is
    undone with a warning. Return values are ignored.
    """
