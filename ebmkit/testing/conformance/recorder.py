"""Recording checks: the report, the error, and the helpers every check uses.

A run of the suite records each named check as passed or failed in a
:class:`_Recorder`; a failure does not stop the later checks unless they need
what failed (``fatal=True``). :meth:`_Recorder.report` turns the record into a
:class:`ConformanceReport`, or raises :class:`ConformanceError` listing every
failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import numpy as np


class ConformanceError(AssertionError):
    """A component broke its contract. ``failures`` lists each broken check."""

    def __init__(self, subject: str, failures: Iterable[str]):
        self.subject = subject
        self.failures = tuple(failures)
        lines = [f"{subject} failed {len(self.failures)} conformance check(s):"]
        lines += [f"  - {f}" for f in self.failures]
        super().__init__("\n".join(lines))


@attrs.frozen
class ConformanceReport:
    """What a passing run checked.

    Attributes:
        subject: which component (kind, name, provider).
        passed: names of the checks that ran and passed.
        skipped: why checks did not run, if some did not (e.g. a data set
            whose config needs a user file). Spec checks always run.
    """

    subject: str
    passed: tuple[str, ...]
    skipped: tuple[str, ...] = ()


class _Skip(Exception):
    """Internal: the behaviour checks cannot run here (reason in args[0])."""


class _Stop(Exception):
    """Internal: a check failed that later checks of the same group need."""


class _Recorder:
    def __init__(self, subject: str):
        self.subject = subject
        self.passed: list[str] = []
        self.failures: list[str] = []
        self.skipped: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str, *, fatal: bool = False) -> Iterator[None]:
        """Run the body as one named check; an exception records a failure."""
        try:
            yield
        except (_Skip, _Stop):
            raise
        except Exception as exc:  # noqa: BLE001 - any exception is a failed check
            message = str(exc) if isinstance(exc, AssertionError) and str(exc) else f"{type(exc).__name__}: {exc}"
            self.failures.append(f"{name}: {message}")
            if fatal:
                raise _Stop from exc
        else:
            self.passed.append(name)

    def report(self) -> ConformanceReport:
        if self.failures:
            raise ConformanceError(self.subject, self.failures)
        return ConformanceReport(self.subject, tuple(self.passed), tuple(self.skipped))


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _rounded(a: Any, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in np.ravel(a)]
