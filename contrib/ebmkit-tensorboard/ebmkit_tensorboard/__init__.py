"""TensorBoard for ebmkit runs: metrics as scalars, plots as images, the config as text.

Installing the distribution is all it takes: its entry point in the
``ebmkit.plugins`` group registers :data:`plugin`, which writes TensorBoard event
files (with tensorboardX; TensorFlow is not needed) into the directory of every
run that has one (``ebmkit train``, :func:`ebmkit.train_job`, a
:class:`~ebmkit.training.Trainer` given a ``run_dir``). ``EBMKIT_DISABLE_PLUGINS=
ebmkit-tensorboard`` turns it off; ``Trainer(..., hooks=False)`` leaves it out.

What a run's event files hold:

* every metric of ``metrics.jsonl`` as a scalar: tag = metric name, step = the
  training step;
* the final summary's numbers (``nll``, ``kl_gap``, ...) as scalars tagged
  ``summary/<name>`` at the last step, when the run finishes;
* each plot the run writes (``samples.png``, ``energy.png``, ``curves.png``) as an
  image tagged ``plots/<file stem>`` at the step it shows;
* the resolved config (TOML) as text, tagged ``config``, at the step the run
  starts from.

Only this module's names are imported when ebmkit loads its plugins (every
``ebmkit`` command does): tensorboardX and Pillow are imported by the first run.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ebmkit.hookspecs import hookimpl

__all__ = ["CONFIG_TAG", "FLUSH_SECS", "IMAGE_PREFIX", "SUMMARY_PREFIX", "TensorBoardWriter", "plugin"]

#: The text tag of the resolved config (tensorboardX stores it as ``config/text_summary``).
CONFIG_TAG = "config"
#: Plots are images tagged ``plots/samples``, ``plots/energy``, ...
IMAGE_PREFIX = "plots/"
#: The final summary's numbers are scalars tagged ``summary/nll``, ...
SUMMARY_PREFIX = "summary/"
#: A running job's events reach the disk at least this often (seconds), for a live TensorBoard.
FLUSH_SECS = 10


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class TensorBoardWriter:
    """Write each run's metrics, plots and config as TensorBoard event files in its run directory."""

    def __init__(self) -> None:
        # Hooks of one run are called in the thread that runs it; the step
        # hook does not name its run, so each thread keeps its own stack of
        # open runs (a writer, or None for a run without a directory).
        self._local = threading.local()
        self._files = itertools.count()

    def _runs(self) -> list[Any]:
        if not hasattr(self._local, "runs"):
            self._local.runs = []
        return self._local.runs

    def _open(self, run_dir: Path, purge_step: int | None = None) -> Any:
        from tensorboardX import SummaryWriter

        # Event file names carry the time in whole seconds: the suffix keeps two
        # files opened in one second apart (the second would overwrite the first)
        # and sorted in the order they were opened, which TensorBoard reads them in.
        suffix = f".{os.getpid()}.{next(self._files):06d}"
        return SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=FLUSH_SECS, filename_suffix=suffix)

    @hookimpl
    def ebmkit_run_start(self, config: Any, run_dir: Path | None) -> None:
        if run_dir is None:
            self._runs().append(None)
            return
        from ebmkit.config import dump_config
        from ebmkit.training.hooks import read_rows

        run_dir = Path(run_dir)
        # When a run starts, metrics.jsonl holds exactly the rows it keeps (a
        # resumed run has dropped those of the steps it redoes; a new one has
        # none). TensorBoard hides what older event files logged from the step
        # after the last of them, so it shows what metrics.jsonl holds.
        rows = read_rows(run_dir / "metrics.jsonl")
        start = int(rows[-1].get("step", 0)) if rows else 0
        writer = self._open(run_dir, purge_step=start + 1 if rows else 0)
        self._runs().append(writer)
        # Indented: TensorBoard renders text as markdown, and this keeps it verbatim.
        toml = "\n".join("    " + line for line in dump_config(config).splitlines())
        writer.add_text(CONFIG_TAG, toml, global_step=start)

    @hookimpl
    def ebmkit_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        runs = self._runs()
        writer = runs[-1] if runs else None
        if writer is None:
            return
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                writer.add_scalar(name, number, global_step=step)

    @hookimpl
    def ebmkit_run_end(self, summary: Mapping[str, Any], error: BaseException | None) -> None:
        runs = self._runs()
        writer = runs.pop() if runs else None
        if writer is None:
            return
        try:
            if error is None and "steps" in summary:
                step = int(summary["steps"])
                for name, value in summary.items():
                    number = _number(value)
                    if name != "steps" and number is not None and math.isfinite(number):
                        writer.add_scalar(SUMMARY_PREFIX + name, number, global_step=step)
        finally:
            writer.close()

    @hookimpl
    def ebmkit_plot_saved(self, run_dir: Path, step: int, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        # Plots come after the run's own writer is closed: a short-lived one per file.
        writer = self._open(Path(run_dir))
        try:
            writer.add_image(IMAGE_PREFIX + Path(path).stem, pixels, global_step=step, dataformats="HWC")
        finally:
            writer.close()


#: What the entry point names: pluggy registers this object's hook methods.
plugin = TensorBoardWriter()
