"""Building a run's components, and checking that they fit its data.

The data set is built first; its facts (event shape, support, bounds, labels,
reference distribution) become the :class:`~ebmkit.types.BuildContext` every
other component is built with. :func:`check_fits` compares what each
component declares (its spec's ``supports``, a loss's ``needs``) with those
facts and reports every mismatch as one :class:`~ebmkit.ConfigError`.
"""

from __future__ import annotations

import functools
from typing import Any

from ebmkit.config.base import ComponentConfig
from ebmkit.errors import ConfigError, ConfigProblem
from ebmkit.registry import ComponentSpec, get_registry, spec_of
from ebmkit.types import BuildContext, Support

__all__ = ["spec_for", "build_component", "build_dataset", "data_context", "check_fits"]

#: Kept for callers of the first API; :func:`ebmkit.registry.spec_of` is the same.
spec_for = spec_of


def build_component(config: ComponentConfig, ctx: BuildContext | None = None) -> Any:
    """Build the component ``config`` selects, in context ``ctx``.

    Raises:
        ConfigError: the component refused its settings (its ``ValueError``,
            at the component's path, e.g. ``energy: ...``).
    """
    spec = spec_of(config)
    try:
        return spec.create(config, ctx)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError([ConfigProblem(path=spec.kind, message=str(exc))]) from exc


@functools.lru_cache(maxsize=8)
def build_dataset(config: ComponentConfig, ctx: BuildContext | None = None) -> Any:
    """Build (once per config) a data set; configs are frozen and hashable."""
    return build_component(config, ctx)


def data_context(dataset: Any, **extra: Any) -> BuildContext:
    """The :class:`BuildContext` of ``dataset``: its event shape, support,
    bounds, number of classes and reference distribution (computed on first use)."""
    return BuildContext(
        event_shape=tuple(dataset.event_shape),
        support=Support.parse(getattr(dataset, "support", "continuous")),
        bounds=getattr(dataset, "bounds", None),
        num_classes=getattr(dataset, "num_classes", None),
        dataset_name=getattr(dataset, "name", None),
        reference_factory=getattr(dataset, "reference", None),
        **extra,
    )


def _names_supporting(kind: str, support: str) -> list[str]:
    """Registered names of ``kind`` that declare ``support`` (loads their specs)."""
    reg = get_registry(kind)
    out = []
    for name in reg.names():
        try:
            if support in reg.get(name).supported():
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken or conflicting plugin is not a suggestion
            continue
    return out


def check_fits(config: Any, data: BuildContext) -> None:
    """Check that every component of ``config`` fits the data described by ``data``.

    Raises:
        ConfigError: one problem per mismatch (a continuous sampler on binary
            data, a loss that needs labels on unlabelled data, ...).
    """
    problems = []
    support = data.support.kind
    where = f"data set {data.dataset_name!r}" if data.dataset_name else "the data"
    for slot in ("energy", "sampler", "buffer", "loss"):
        cfg = getattr(config, slot, None)
        if cfg is None:
            continue
        spec: ComponentSpec = spec_of(cfg)
        if support not in spec.supported():
            others = _names_supporting(slot, support)
            problems.append(
                ConfigProblem(
                    path=slot,
                    message=f"{slot} {spec.name!r} supports {', '.join(spec.supported())} data, but {where} is {data.support}",
                    suggestion=(f"choose one that supports {support} data: {', '.join(others)}" if others
                                else f"no installed {slot} declares {support} support"),
                )
            )
    loss_spec = spec_of(config.loss)
    if "labels" in loss_spec.needs_of(config.loss) and data.num_classes is None:
        problems.append(
            ConfigProblem(
                path="loss",
                message=f"loss {loss_spec.name!r} needs labelled data, but {where} has no labels",
                suggestion="choose a labelled data set, or a loss that needs no labels",
            )
        )
    if problems:
        raise ConfigError(problems)
