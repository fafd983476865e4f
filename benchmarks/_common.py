"""Shared helpers of the benchmark scripts: thread pinning, alternating
timing, statistics and the JSON + markdown report.

Import this module (and call :func:`pin_threads`) *before* ``jax``: XLA reads
``XLA_FLAGS`` once, when the backend starts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: One compute thread for XLA's CPU backend, as the issue asks.
PIN_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")

_PINNED: bool | None = None


def pin_threads() -> bool:
    """Add :data:`PIN_FLAGS` to ``XLA_FLAGS``; returns whether they take effect.

    They take effect only if the XLA backend has not started yet (a script
    run on its own: yes; a script's ``main`` called inside a test session that
    already used jax: no). The answer is recorded in every report.
    """
    global _PINNED
    if _PINNED is not None:
        return _PINNED
    flags = os.environ.get("XLA_FLAGS", "").split()
    missing = [f for f in PIN_FLAGS if f not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([*flags, *missing])
    started = False
    if "jax" in sys.modules:
        try:
            from jax._src import xla_bridge

            started = bool(getattr(xla_bridge, "_backends", {}))
        except Exception:  # pragma: no cover - private API moved: assume the worst
            started = True
    _PINNED = not started or not missing
    return _PINNED


def block(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


# -- timing ---------------------------------------------------------------------------


def alternate(
    cases: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Seconds of each case, measured round-robin (A, B, A, B, ...).

    Each callable must finish its work before returning (block on results).
    Round-robin order means slow phases of a shared machine hit every case
    alike, so per-round ratios stay meaningful when absolute numbers move.

    Returns:
        ``{"wall": {case: [s, ...]}, "cpu": {case: [s, ...]}}``: wall-clock
        time and this process's CPU time (all threads). With XLA pinned to one
        compute thread, CPU time is the work done, less sensitive to other
        processes taking the cores than wall time is.
    """
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(repeats):
        # Reverse every other round: no case always runs right after another.
        order = list(cases.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    return {"wall": wall, "cpu": cpu}


def stats(seconds: Sequence[float], work: float = 1.0) -> dict[str, float]:
    """Median and best of a list of timings, as seconds and as ``work``/s."""
    med, best = statistics.median(seconds), min(seconds)
    return {
        "median_s": med,
        "min_s": best,
        "rate_median": work / med if med > 0 else math.nan,
        "rate_best": work / best if best > 0 else math.nan,
        "repeats": len(seconds),
    }


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """``numerator / denominator`` per round (paired), summarised.

    With ``numerator`` the reference's times and ``denominator`` ebmkit's, a
    value above 1 means ebmkit is faster. ``median`` is the median of the
    per-round ratios; ``of_best`` compares the best times; ``low``/``high``
    bound the per-round values.
    """
    pairs = [a / b for a, b in zip(numerator, denominator, strict=True) if b > 0]
    return {
        "median": statistics.median(pairs),
        "of_best": min(numerator) / min(denominator),
        "low": min(pairs),
        "high": max(pairs),
    }


def summarize(
    times: Mapping[str, Mapping[str, Sequence[float]]],
    work: float,
    reference: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per case: wall and CPU :func:`stats`, and the speed ratio against
    ``reference`` (reference time / case time, per round) on both clocks."""
    out: dict[str, dict[str, Any]] = {}
    for name in times["wall"]:
        entry: dict[str, Any] = {clock: stats(times[clock][name], work) for clock in ("wall", "cpu")}
        if reference is not None and name != reference:
            entry["speed_vs_reference"] = {
                clock: ratio(times[clock][reference], times[clock][name]) for clock in ("wall", "cpu")
            }
        out[name] = entry
    return out


# -- environment ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def environment() -> dict[str, Any]:
    """Versions, machine, thread settings and the current load."""
    import flax
    import jax
    import optax

    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads_pinned": bool(_PINNED),
        "load_average": _load(),
    }


# -- report ---------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit(
    name: str,
    results: Mapping[str, Any],
    tables: Sequence[str],
    *,
    json_path: str | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    """Print the markdown tables, then the report as one JSON line (last line).

    Returns the report (also written to ``json_path`` when given).
    """
    stream = stream or sys.stdout
    report = _clean({"benchmark": name, "environment": environment(), **results})
    for table in tables:
        print(table, file=stream)
        print(file=stream)
    text = json.dumps(report, sort_keys=False)
    print(text, file=stream)
    stream.flush()
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(report, indent=2) + "\n")
    return report


def log(message: str) -> None:
    """Progress on stderr (stdout holds only the tables and the JSON)."""
    print(message, file=sys.stderr, flush=True)


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the scaling exponent)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        return math.nan
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx
