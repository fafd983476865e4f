"""The pluggy plugin manager for host-side hooks (``ebmkit.plugins`` entry points).

Hook plugins are loaded one entry point at a time so that one broken plugin
cannot take ebmkit down yet is never hidden either. A plugin is
rejected when

* importing it raises,
* pluggy refuses to register it (an implementation asks for an argument its
  hook does not have, or the object is registered twice), or
* it implements a hook that does not exist (``ebmkit_step_ned``),

and a rejected plugin is unregistered, recorded as a :class:`HookPluginFailure`
and reported with an :class:`EbmkitPluginWarning` that names its distribution,
version, target and the error. With ``EBMKIT_STRICT_PLUGINS=1`` the first
rejection raises :class:`~ebmkit.errors.PluginLoadError` instead (chaining the
original exception). Distributions listed in ``EBMKIT_DISABLE_PLUGINS`` are not
imported at all.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import os
import threading
import warnings
from typing import Any

import attrs
import pluggy

from ebmkit import hookspecs
from ebmkit.errors import EbmkitPluginWarning, PluginLoadError
from ebmkit.hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME
from ebmkit.registry import LOCAL_DIST, disabled_dists, entry_points, normalize_dist
from ebmkit.suggest import did_you_mean

__all__ = [
    "EbmkitPluginWarning",
    "HookPluginFailure",
    "HookPluginRow",
    "call_hook",
    "get_plugin_manager",
    "hook_names",
    "hook_plugins",
    "plugin_failures",
    "plugin_origin",
    "register_plugin",
    "reset_plugin_manager",
    "strict_plugins",
]


@attrs.frozen
class HookPluginFailure:
    """A hook plugin that was rejected while loading.

    Attributes:
        dist: the distribution that declares the entry point.
        version: that distribution's version.
        target: the entry point's value, ``module`` or ``module:attr``.
        error: the exception that rejected it.
        name: the entry point's name.
    """

    dist: str
    version: str | None
    target: str
    error: BaseException
    name: str = ""

    def error_text(self) -> str:
        """``"ExceptionType: message"`` on one line."""
        text = " ".join(str(self.error).split())
        return f"{type(self.error).__name__}: {text}" if text else type(self.error).__name__

    def message(self, outcome: str = "was skipped") -> str:
        version = f" {self.version}" if self.version else ""
        return (
            f"ebmkit plugin {self.name!r} from {self.dist}{version} ({self.target}) "
            f"{outcome}: {self.error_text()}"
        )


@attrs.frozen
class HookPluginRow:
    """One ``ebmkit.plugins`` entry point, as shown by ``ebmkit plugins``.

    Attributes:
        name: the entry point's name.
        dist: the distribution that declares it.
        version: that distribution's version.
        target: the entry point's value.
        status: ``loaded``, ``failed`` or ``disabled``.
        error: why it failed, or ``None``.
        summary: the first line of the plugin's docstring (when loaded).
    """

    name: str
    dist: str
    version: str | None
    target: str
    status: str
    error: str | None = None
    summary: str = ""


def strict_plugins() -> bool:
    """Whether ``EBMKIT_STRICT_PLUGINS`` asks for plugin failures to be fatal."""
    return os.environ.get("EBMKIT_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def hook_names() -> list[str]:
    """Names of every hook ebmkit defines, sorted."""
    return sorted(
        name
        for name, fn in vars(hookspecs).items()
        if name.startswith("ebmkit_") and callable(fn)
        and hasattr(fn, f"{PROJECT_NAME}_spec")
    )


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _dist_of(ep: md.EntryPoint) -> tuple[str, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", None
    return dist.metadata["Name"] or "unknown", dist.version


class _UnknownHookError(Exception):
    """Internal: a plugin implements hooks that ebmkit does not define."""


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hooks ``plugin`` implements that have no spec (optional hooks excepted)."""
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                unknown.append(caller.name)
    return sorted(set(unknown))


def _unknown_hook_error(names: list[str]) -> _UnknownHookError:
    known = hook_names()
    parts = []
    for name in names:
        hint = did_you_mean(name, known)
        parts.append(f"{name!r}" + (f" ({hint})" if hint else ""))
    return _UnknownHookError(
        f"implements unknown hook{'s' if len(names) > 1 else ''} {', '.join(parts)}; "
        f"ebmkit hooks are: {', '.join(known)}"
    )


class _State:
    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.rows: list[HookPluginRow] = []
        self.failures: list[HookPluginFailure] = []
        #: registered plugin object -> (dist, version, target) for messages.
        self.origins: dict[int, tuple[str, str | None, str]] = {}


_lock = threading.RLock()
_state: _State | None = None


def _reject(state: _State, failure: HookPluginFailure, strict: bool) -> None:
    if strict:
        raise PluginLoadError(
            failure.message("failed to load") + " (fatal because EBMKIT_STRICT_PLUGINS is set)",
            dist=failure.dist,
            version=failure.version,
            target=failure.target,
        ) from failure.error
    state.failures.append(failure)
    state.rows.append(
        HookPluginRow(
            name=failure.name,
            dist=failure.dist,
            version=failure.version,
            target=failure.target,
            status="failed",
            error=failure.error_text(),
        )
    )
    hint = f"; set EBMKIT_DISABLE_PLUGINS={failure.dist} to skip it quietly"
    warnings.warn(failure.message() + hint, EbmkitPluginWarning, stacklevel=2)


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register ``plugin`` and reject unknown hooks; leaves nothing behind on error."""
    if pm.is_registered(plugin):
        raise ValueError(f"the same object is already registered as {pm.get_name(plugin)!r}")
    if pm.has_plugin(name):
        raise ValueError(f"a plugin named {name!r} is already registered")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError:
        # pluggy may have added some implementations before it found the bad one.
        if pm.has_plugin(name):
            pm.unregister(name=name)
        raise
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        raise _unknown_hook_error(unknown)


def _load(strict: bool) -> _State:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    state = _State(pm)
    disabled = disabled_dists()
    eps = sorted(entry_points(ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))
    for ep in eps:
        dist, version = _dist_of(ep)
        if normalize_dist(dist) in disabled:
            state.rows.append(
                HookPluginRow(name=ep.name, dist=dist, version=version, target=ep.value, status="disabled")
            )
            continue
        try:
            plugin = ep.load()
            _register_checked(pm, plugin, f"{normalize_dist(dist)}:{ep.name}")
        except Exception as exc:  # noqa: BLE001 - any import or validation failure is the plugin's
            failure = HookPluginFailure(
                dist=dist, version=version, target=ep.value, error=exc, name=ep.name
            )
            _reject(state, failure, strict)
            continue
        state.origins[id(plugin)] = (dist, version, ep.value)
        state.rows.append(
            HookPluginRow(
                name=ep.name,
                dist=dist,
                version=version,
                target=ep.value,
                status="loaded",
                summary=_first_doc_line(plugin),
            )
        )
    # Belt and braces: anything registered without a spec by other means.
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if strict:
            raise PluginLoadError(f"ebmkit hook plugins: {exc}") from exc
        warnings.warn(f"ebmkit hook plugins: {exc}", EbmkitPluginWarning, stacklevel=3)
    return state


def _get_state() -> _State:
    global _state
    with _lock:
        if _state is None:
            _state = _load(strict_plugins())
        return _state


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every working hook plugin registered.

    The first call loads the ``ebmkit.plugins`` entry points; later calls return
    the same manager until :func:`reset_plugin_manager`.

    Raises:
        PluginLoadError: a plugin was rejected and ``EBMKIT_STRICT_PLUGINS=1``.
    """
    return _get_state().pm


def reset_plugin_manager() -> None:
    """Forget the plugin manager so the next call reloads entry points (tests)."""
    global _state
    with _lock:
        _state = None


def hook_plugins() -> list[HookPluginRow]:
    """Every ``ebmkit.plugins`` entry point with its status, for listings.

    Plugins added in-process with :func:`register_plugin` are not listed.
    """
    return list(_get_state().rows)


def plugin_failures() -> list[HookPluginFailure]:
    """The hook plugins rejected while loading."""
    return list(_get_state().failures)


def plugin_origin(plugin: object) -> tuple[str, str | None, str]:
    """``(dist, version, target)`` of a registered plugin object, for messages."""
    state = _get_state()
    return state.origins.get(id(plugin), (LOCAL_DIST, None, repr(plugin)))


def register_plugin(plugin: object, name: str | None = None) -> object:
    """Register a hook plugin in-process (notebooks, tests), validated like an entry point.

    Returns ``plugin``; undo with ``get_plugin_manager().unregister(plugin)``.

    Raises:
        PluginLoadError: the plugin implements an unknown hook, has an invalid
            hook signature or is already registered. In-process registration
            always fails loudly.
    """
    state = _get_state()
    pm = state.pm
    label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    try:
        _register_checked(pm, plugin, name or f"{LOCAL_DIST}:{label}:{id(plugin)}")
    except (pluggy.PluginValidationError, ValueError, _UnknownHookError) as exc:
        text = " ".join(str(exc).split())
        raise PluginLoadError(
            f"in-process ebmkit plugin {label!r} was rejected: {text}", dist=LOCAL_DIST, target=label
        ) from exc
    state.origins[id(plugin)] = (LOCAL_DIST, None, label)
    return plugin


def call_hook(name: str, **kwargs: Any) -> list[Any]:
    """Call hook ``name`` on every registered plugin; return their results.

    Use keyword arguments only, exactly the hook's arguments. Called by the
    trainer and the CLI on the host, never inside traced code.

    Raises:
        ValueError: ``name`` is not an ebmkit hook (with a suggestion).
    """
    known = hook_names()
    if name not in known:
        hint = did_you_mean(name, known)
        raise ValueError(
            f"unknown ebmkit hook {name!r}" + (f"; {hint}" if hint else "")
            + f" (hooks: {', '.join(known)})"
        )
    return getattr(get_plugin_manager().hook, name)(**kwargs)
