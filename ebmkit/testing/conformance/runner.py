"""Running the suite on one component: :func:`check_spec` and :func:`check_component`.

Spec checks always run; the behaviour checks of the component's kind run when
there is a config to build with (the defaults, or the one given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ebmkit import registry
from ebmkit.errors import EbmkitError
from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.buffer import _buffer_checks
from ebmkit.testing.conformance.dataset import _dataset_checks
from ebmkit.testing.conformance.discrete_sampler import _sampler_checks_by_support
from ebmkit.testing.conformance.energy import _energy_checks
from ebmkit.testing.conformance.loss import _loss_checks
from ebmkit.testing.conformance.recorder import (
    ConformanceError,
    ConformanceReport,
    _Recorder,
    _require,
    _Skip,
    _Stop,
)
from ebmkit.testing.conformance.specs import _round_trip, _spec_checks


def _subject(spec: Any, provider: registry.Provider | None = None) -> str:
    if not isinstance(spec, ComponentSpec):
        return f"{spec!r}"
    where = f" from {provider}" if provider is not None else ""
    return f"{spec.kind} {spec.name!r}{where}"


def check_spec(
    spec: ComponentSpec,
    *,
    event_shape: tuple[int, ...] | None = None,
    config: Any = None,
) -> ConformanceReport:
    """Check ``spec`` and the component it builds against ebmkit's contracts.

    The spec need not be installed: the checks make it selectable in-process
    for their duration.

    Args:
        spec: the plugin's :class:`~ebmkit.registry.ComponentSpec`.
        event_shape: the event shape energies and buffers are checked with;
            by default ``(2,)``, then small image shapes for energies.
        config: the config behaviour checks build with (default: the config
            class's defaults). Needed when the config has required fields.

    Returns:
        A :class:`ConformanceReport`; ``skipped`` says why checks did not run,
        if some did not.

    Raises:
        ConformanceError: listing every failed check.
    """
    return _run_checks(spec, _subject(spec), event_shape=event_shape, config=config)


def _run_checks(
    spec: Any, subject: str, *, event_shape: tuple[int, ...] | None, config: Any
) -> ConformanceReport:
    rec = _Recorder(subject)
    try:
        cfg = _spec_checks(spec, rec)
        if config is not None:
            with rec.check("given config is an instance of the spec's config class", fatal=True):
                _require(isinstance(config, spec.config), f"got {type(config).__name__}")
            if cfg is None:
                _round_trip(spec, config, rec)
            cfg, rec.skipped = config, []
        if cfg is not None:
            behaviour: dict[str, Callable[[], None]] = {
                "energy": lambda: _energy_checks(spec, cfg, rec, event_shape),
                "sampler": lambda: _sampler_checks_by_support(spec, cfg, rec),
                "buffer": lambda: _buffer_checks(spec, cfg, rec, event_shape),
                "loss": lambda: _loss_checks(spec, cfg, rec),
                "dataset": lambda: _dataset_checks(spec, cfg, rec),
            }
            behaviour[spec.kind]()
    except _Stop:
        pass
    except _Skip as skip:
        rec.skipped.append(str(skip))
    return rec.report()


def check_component(
    kind: str, name: str, *, event_shape: tuple[int, ...] | None = None, config: Any = None
) -> ConformanceReport:
    """Load the registered component ``name`` (plain or ``"dist:name"``) and check it.

    Raises:
        ConformanceError: it cannot be loaded, or it fails checks.
    """
    reg = registry.get_registry(kind)
    try:
        provider = reg.resolve(name)
        spec = reg.load(provider)
    except EbmkitError as exc:
        raise ConformanceError(f"{kind} {name!r}", [f"cannot be selected: {exc}"]) from exc
    return _run_checks(spec, _subject(spec, provider), event_shape=event_shape, config=config)
