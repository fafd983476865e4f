"""The trainer's own host-side hook plugins: the metrics file and the progress bar.

They implement the same hooks (:mod:`ebmkit.hookspecs`) a third-party plugin
does; the trainer registers them with its plugin manager for the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from ebmkit.hookspecs import hookimpl

__all__ = ["MetricsWriter", "ProgressBar", "ProgressLines", "read_rows"]


def read_rows(path: Path) -> list[dict]:
    """The JSON rows of a metrics file, skipping a last line cut off by a crash
    (``[]`` when there is no file)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class MetricsWriter:
    """Appends each logged metrics row to a JSON-lines file.

    Args:
        path: the file.
        append: keep the rows already there (a resumed run).
        keep_until: with ``append``, drop rows logged after this step: a run
            resumed from its checkpoint redoes those steps and logs them again.
    """

    def __init__(self, path: Path, *, append: bool, keep_until: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not append and path.exists():
            path.unlink()
        elif keep_until is not None and path.exists():
            kept = [row for row in read_rows(path) if row.get("step", 0) <= keep_until]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
            tmp.replace(path)

    @hookimpl
    def ebmkit_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")


class ProgressBar:
    """A rich progress bar showing the loss, the energy gap (where the loss
    reports one) and the speed."""

    def __init__(self, total: int, start: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.total = total
        self._p = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), transient=False,
        )
        self._p.start()
        self._task = self._p.add_task("train", total=total, completed=start, info="")

    @hookimpl
    def ebmkit_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        info = f"loss {metrics.get('loss', math.nan):+.3f}"
        if "energy_gap" in metrics:
            info += f"  gap {metrics['energy_gap']:+.3f}"
        if "accuracy" in metrics:  # a classifier's (nce: data vs noise)
            info += f"  acc {metrics['accuracy']:.3f}"
        info += f"  {metrics.get('steps_per_s', math.nan):.0f} steps/s"
        self._p.update(self._task, completed=step, info=info)

    def compiling(self) -> None:
        self._p.update(self._task, info="compiling the training step…")

    def close(self) -> None:
        self._p.stop()


class ProgressLines:
    """A plain line per log interval on stderr (step, loss, energy gap or
    accuracy where the loss reports one, speed, time left): progress for logs
    and CI."""

    def __init__(self, total: int, start: int, stream=None):
        import sys
        import time

        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._clock = time.perf_counter
        self._start_step, self._start_time = start, self._clock()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def compiling(self) -> None:
        self._print("compiling the training step…")

    @hookimpl
    def ebmkit_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        text = f"step {step}/{self.total}  loss {metrics.get('loss', math.nan):+.4f}"
        if "energy_gap" in metrics:
            text += f"  gap {metrics['energy_gap']:+.4f}"
        if "accuracy" in metrics:  # a classifier's (nce: data vs noise)
            text += f"  acc {metrics['accuracy']:.3f}"
        rate = metrics.get("steps_per_s", math.nan)
        text += f"  {rate:.0f} steps/s"
        if rate and math.isfinite(rate) and rate > 0:
            text += f"  eta {max(self.total - step, 0) / rate:.0f} s"
        self._print(text)

    def close(self) -> None:
        pass
