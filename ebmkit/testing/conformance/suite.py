"""The suite over registered components: :func:`iter_registered` and :func:`conformance_test`.

:func:`conformance_test` gives a pytest test parametrized over what
:func:`iter_registered` lists (entry-point metadata only: nothing is imported
to list it), and fails, saying why, when the selection is empty.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ebmkit import registry
from ebmkit.kinds import get_kind
from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.runner import check_component, check_spec


class RegisteredComponent(NamedTuple):
    """One selectable provider, as :func:`iter_registered` yields it.

    ``selector`` is the string that selects exactly this provider: the plain
    name, or ``"dist:name"`` when several distributions offer the name.
    """

    kind: str
    name: str
    selector: str
    dist: str
    version: str | None

    @property
    def id(self) -> str:
        """A short pytest id, e.g. ``sampler:mala``."""
        return f"{self.kind}:{self.selector}"


def iter_registered(
    kinds: Iterable[str] | None = None, *, dist: str | None = None
) -> list[RegisteredComponent]:
    """Every selectable component (installed or registered in-process).

    Reads entry-point metadata only: nothing is imported. Disabled providers
    (``EBMKIT_DISABLE_PLUGINS``) are left out.

    Args:
        kinds: restrict to these kinds (default: all).
        dist: restrict to one distribution (a plugin's own tests).

    Raises:
        KeyError: a kind that is not one of :data:`ebmkit.kinds.KINDS`.
    """
    out = []
    for kind in kinds or registry.KIND_GROUPS:
        get_kind(kind)  # an unknown kind is an error, not an empty selection
        reg = registry.get_registry(kind)
        for name, providers in reg.all_providers().items():
            for p in providers:
                if dist is not None and registry.normalize_dist(p.dist) != registry.normalize_dist(dist):
                    continue
                selector = p.qualified_name if len(providers) > 1 else name
                out.append(RegisteredComponent(kind, name, selector, p.dist, p.version))
    return out


def _nothing_to_check(dist: str | None, kinds: Iterable[str] | None) -> str:
    """Why :func:`conformance_test` found no component, in words."""
    kinds = list(kinds) if kinds else []
    of_kinds = f" of kind {', '.join(kinds)}" if kinds else ""
    call = f"conformance_test(dist={dist!r})" if dist is not None else "conformance_test()"
    if dist is None:
        return f"{call}: no ebmkit component{of_kinds} is registered, so nothing was checked"
    if registry.normalize_dist(dist) in registry.disabled_dists():
        return (
            f"{call}: the distribution {dist!r} is disabled by EBMKIT_DISABLE_PLUGINS="
            f"{os.environ.get('EBMKIT_DISABLE_PLUGINS', '')!r}, so none of its components can be "
            "checked; unset it for the test run"
        )
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return (
            f"{call}: no distribution named {dist!r} is installed, so nothing was checked; "
            "install the plugin (pip install -e .) or fix the name (the name in its pyproject.toml)"
        )
    groups = ", ".join(get_kind(k).group for k in (kinds or registry.KIND_GROUPS))
    return (
        f"{call}: {dist!r} is installed but provides no ebmkit component{of_kinds}; declare "
        f"its entry points in {groups} and reinstall it"
    )


def conformance_test(
    kinds: Iterable[str] | None = None,
    *,
    dist: str | None = None,
    specs: Iterable[ComponentSpec] = (),
    event_shape: tuple[int, ...] | None = None,
) -> Callable[..., None]:
    """A pytest test function parametrized over registered components.

    Assign it to a ``test_*`` name in a test module::

        test_conformance = conformance_test(dist="ebmkit-blackjax")

    A selection with nothing in it (a distribution that is not installed, is
    disabled by ``EBMKIT_DISABLE_PLUGINS`` or provides no component) gives a
    test that *fails* saying why, never one that silently checks nothing.

    Args:
        kinds: restrict to these kinds.
        dist: restrict to one distribution's components.
        specs: extra, not necessarily installed, specs to check as well.
        event_shape: passed to :func:`check_spec`.
    """
    import pytest

    kinds = list(kinds) if kinds is not None else None
    registered = iter_registered(kinds, dist=dist)
    specs = list(specs)
    if not registered and (dist is not None or not specs):
        message = _nothing_to_check(dist, kinds)

        def test_conformance() -> None:
            pytest.fail(message, pytrace=False)

        return test_conformance

    params = [pytest.param(c, id=c.id) for c in registered]
    params += [pytest.param(s, id=f"{s.kind}:{s.name}") for s in specs]

    @pytest.mark.parametrize("component", params)
    def test_conformance(component: RegisteredComponent | ComponentSpec) -> None:
        if isinstance(component, ComponentSpec):
            report = check_spec(component, event_shape=event_shape)
        else:
            report = check_component(component.kind, component.selector, event_shape=event_shape)
        if report.skipped:
            pytest.skip(
                f"{report.subject}: {len(report.passed)} checks passed; not checked: "
                + "; ".join(report.skipped)
            )

    return test_conformance
