"""Component registries resolved from Python entry points.

Each kind of component (:mod:`ebmkit.kinds`) has one registry backed by one
entry-point group (``ebmkit.energies``, ``ebmkit.samplers``, ...).

The entry-point name is the string users write in configs; its value points to a
:class:`ComponentSpec`. ebmkit's built-ins are declared in ebmkit's own
``pyproject.toml`` exactly like a third party's, and the core never imports them.

Rules (docs/plugins.md and docs/architecture.md say more):

* Listing reads entry-point metadata only; a component's module is imported when
  it is selected, then validated and cached.
* A plugin that fails to import raises :class:`PluginLoadError` only for configs
  that select it, naming distribution, version and target.
* Two providers of one name raise :class:`ComponentConflictError` for that name
  only. Users pick one with ``"dist:name"`` or ``EBMKIT_DISABLE_PLUGINS=dist``.
* :func:`register` and :func:`overlay` add in-process components under the same
  rules (``replace=True`` shadows on purpose).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.machinery
import importlib.metadata as md
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ebmkit import kinds as _kinds
from ebmkit.config.base import ComponentConfig
from ebmkit.errors import (
    ComponentConflictError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from ebmkit.kinds import kind_of_config
from ebmkit.suggest import close_matches
from ebmkit.types import LOSS_SLOTS, SUPPORT_KINDS, Batch, BuildContext

__all__ = [
    "API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "KIND_GROUPS",
    "LOCAL_DIST",
    "ComponentSpec",
    "Provider",
    "Registry",
    "get_registry",
    "get_spec",
    "spec_of",
    "register",
    "overlay",
    "listing",
    "invalidate_caches",
    "normalize_dist",
    "disabled_dists",
    "entry_points",
    "BROKEN_DISTRIBUTIONS",
]

#: The plugin API version this ebmkit writes and the versions it can load.
#: API 2: every ``build(config, ctx)`` gets a :class:`~ebmkit.types.BuildContext`;
#: losses get a :class:`~ebmkit.types.Batch`. API 1 specs (``build(config,
#: *, event_shape, ...)``, losses on ``x``) still load, adapted in :meth:`ComponentSpec.create`.
API_VERSION = 2
SUPPORTED_API_VERSIONS = frozenset({1, 2})

#: ``{kind: entry-point group}``, read from :data:`ebmkit.kinds.KINDS`.
KIND_GROUPS: dict[str, str] = dict(_kinds.groups())

#: Distribution name shown for components registered in-process.
LOCAL_DIST = "local"

#: Keys that a component table may carry besides the config's own fields.
RESERVED_KEYS = frozenset({"name", "provider"})

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation, so ``Ebmkit_JAX`` and ``ebmkit-jax`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def disabled_dists() -> frozenset[str]:
    """Normalised distribution names listed in ``EBMKIT_DISABLE_PLUGINS``."""
    raw = os.environ.get("EBMKIT_DISABLE_PLUGINS", "")
    return frozenset(normalize_dist(p.strip()) for p in raw.split(",") if p.strip())


@attrs.frozen
class ComponentSpec:
    """What a plugin's entry point points to.

    Attributes:
        kind: one of the kinds of :mod:`ebmkit.kinds` (``energy``, ``sampler``,
            ``buffer``, ``loss``, ``dataset``).
        name: the config string; must equal the entry-point name.
        config: an attrs config class deriving from the kind's base config.
        build: ``build(config, ctx) -> component``, ``ctx`` a
            :class:`~ebmkit.types.BuildContext` (see :mod:`ebmkit.kinds` for
            what each kind returns). Call it through :meth:`create`.
        summary: one line shown by ``ebmkit plugins``.
        api: the plugin API version the spec was written for.
        supports: the data supports (``continuous``, ``binary``,
            ``categorical``) the component works on; ``None`` takes the kind's
            default (samplers and buffers: continuous; others: any). A run on
            data it does not support is a config error.
        needs: losses only: the slots the loss uses, a subset of
            ``("sampler", "buffer", "labels")``, or a function of the config
            returning one. ``None`` means ``("sampler", "buffer")``. Slots
            nobody needs are not built, saved or checkpointed.
    """

    kind: str
    name: str
    config: type
    build: Callable[..., Any]
    summary: str = ""
    api: int = API_VERSION
    supports: tuple[str, ...] | None = attrs.field(default=None, converter=lambda v: tuple(v) if isinstance(v, list) else v)
    needs: tuple[str, ...] | Callable[[Any], Any] | None = None

    def supported(self) -> tuple[str, ...]:
        """The data supports this component accepts (declared or the kind's default)."""
        return self.supports if self.supports is not None else _kinds.get_kind(self.kind).default_supports

    def needs_of(self, config: Any) -> frozenset[str]:
        """The slots a loss built from ``config`` uses (empty for other kinds)."""
        if self.kind != "loss":
            return frozenset()
        needs = self.needs
        if needs is None:
            return frozenset({"sampler", "buffer"})
        if callable(needs):
            needs = needs(config)
        return frozenset(needs)

    def create(self, config: Any, ctx: BuildContext | None = None) -> Any:
        """Build the component from ``config`` in context ``ctx``.

        The one entry to ``build``: it checks that ``config`` belongs to this
        spec (so no ``build`` needs its own guard) and adapts API 1 specs.

        Raises:
            TypeError: ``config`` is not an instance of ``self.config``.
        """
        if not isinstance(config, self.config):
            raise TypeError(
                f"{self.kind} {self.name!r} is built from a {self.config.__qualname__}, "
                f"got {type(config).__qualname__}"
            )
        ctx = ctx if ctx is not None else BuildContext()
        if self.api >= 2:
            return self.build(config, ctx)
        if self.kind == "energy":
            return self.build(config, event_shape=ctx.event_shape, rngs=ctx.rngs)
        if self.kind == "buffer":
            return self.build(config, event_shape=ctx.event_shape, bounds=ctx.bounds)
        built = self.build(config)
        return _ApiOneLoss(built) if self.kind == "loss" else built


class _ApiOneLoss:
    """An API 1 loss (``loss(key, energy_fn, x_pos, ctx)``) called with a Batch."""

    def __init__(self, loss: Callable[..., Any]):
        self.loss = loss

    def __call__(self, rng_key: Any, energy_fn: Any, batch: Any, ctx: Any) -> Any:
        x = batch.x if isinstance(batch, Batch) else batch
        return self.loss(rng_key, energy_fn, x, ctx)

    def __repr__(self) -> str:
        return repr(self.loss)


@attrs.frozen
class Provider:
    """One source of one component name: an entry point or an in-process spec."""

    kind: str
    name: str
    dist: str
    version: str | None
    target: str
    entry_point: md.EntryPoint | None = attrs.field(default=None, eq=False, repr=False)
    spec: ComponentSpec | None = attrs.field(default=None, eq=False, repr=False)
    disabled: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.dist}:{self.name}"

    @property
    def is_local(self) -> bool:
        return self.entry_point is None

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.dist}{version} ({self.target})"


#: Distributions whose entry_points.txt could not be read: ``{name: reason}``.
BROKEN_DISTRIBUTIONS: dict[str, str] = {}


def entry_points(group: str) -> list[md.EntryPoint]:
    """The entry points of ``group`` over every installed distribution.

    Each distribution's ``entry_points.txt`` is read on its own: one malformed
    file anywhere on the path marks that distribution broken (with a warning,
    once, and in ``BROKEN_DISTRIBUTIONS``) instead of breaking every command.
    """
    found = []
    seen = set()
    for dist in md.distributions():
        name = (dist.metadata["Name"] if dist.metadata else None) or "unknown"
        try:
            eps = dist.entry_points
        except Exception as exc:  # noqa: BLE001 - a third party's malformed metadata
            if name not in BROKEN_DISTRIBUTIONS:
                import warnings

                from ebmkit.errors import EbmkitPluginWarning

                BROKEN_DISTRIBUTIONS[name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"distribution {name} {dist.version or ''} has a malformed entry_points.txt "
                    f"({type(exc).__name__}: {exc}); its plugins are ignored",
                    EbmkitPluginWarning, stacklevel=2,
                )
            continue
        for ep in eps:
            if ep.group == group and (ep.name, ep.value, name) not in seen:
                seen.add((ep.name, ep.value, name))
                found.append(ep)
    return found


def _dist_of(ep: md.EntryPoint) -> tuple[str, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", None
    return dist.metadata["Name"] or "unknown", dist.version


def validate_spec(spec: Any, *, kind: str, name: str, where: str) -> ComponentSpec:
    """Check that ``spec`` is a well-formed ComponentSpec for ``kind``/``name``.

    Raises:
        InvalidComponentError: naming ``where`` and what is wrong.
    """
    if not isinstance(spec, ComponentSpec):
        raise InvalidComponentError(
            f"{where}: expected an ebmkit.ComponentSpec, got {type(spec).__name__}"
        )
    problems = []
    if spec.kind != kind:
        problems.append(f"declares kind {spec.kind!r} but is registered as a {kind!r} component")
    if spec.name != name:
        problems.append(f"declares name {spec.name!r} but its entry point is named {name!r}")
    if not _NAME_RE.match(spec.name):
        problems.append(f"name {spec.name!r} must be lowercase snake case")
    if spec.api not in SUPPORTED_API_VERSIONS:
        problems.append(
            f"was written for plugin API version {spec.api!r}; this ebmkit supports "
            f"{sorted(SUPPORTED_API_VERSIONS)} (upgrade ebmkit or the plugin)"
        )
    if spec.supports is not None:
        unknown = sorted(set(spec.supports) - set(SUPPORT_KINDS))
        if unknown or not spec.supports:
            problems.append(f"supports {spec.supports!r} must be a non-empty subset of {SUPPORT_KINDS}")
    if spec.needs is not None:
        if spec.kind != "loss":
            problems.append("only losses declare needs")
        elif not callable(spec.needs) and set(spec.needs) - set(LOSS_SLOTS):
            problems.append(f"needs {spec.needs!r} must be a subset of {LOSS_SLOTS}")
    base = _kinds.get_kind(kind).config_base if kind in KIND_GROUPS else None
    if not (isinstance(spec.config, type) and attrs.has(spec.config)):
        problems.append(f"config {spec.config!r} is not an attrs class")
    elif base is not None and not issubclass(spec.config, base):
        actual = kind_of_config(spec.config)
        extra = f" (it derives from the {actual} base)" if actual else ""
        problems.append(
            f"config {spec.config.__qualname__} must derive from ebmkit.config.{base.__name__}{extra}"
        )
    else:
        fields = attrs.fields(spec.config)
        reserved = sorted(RESERVED_KEYS & {a.name for a in fields})
        if reserved:
            problems.append(f"config {spec.config.__qualname__} uses reserved field names {reserved}")
        positional = [a.name for a in fields if not a.kw_only]
        if positional:
            problems.append(
                f"config {spec.config.__qualname__} must be keyword-only "
                f"(use @ebmkit.config.config_class); positional fields: {positional}"
            )
    if not callable(spec.build):
        problems.append("build is not callable")
    if problems:
        raise InvalidComponentError(f"{where}: " + "; ".join(problems))
    return spec


class Registry:
    """Components of one kind, from entry points and in-process registrations."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._layers: list[dict[str, tuple[Provider, bool]]] = [{}]
        self._loaded: dict[tuple[str, str], ComponentSpec] = {}
        self._failed: dict[tuple[str, str], PluginLoadError] = {}
        self._ep_cache: tuple[Any, list[Provider]] | None = None
        self._lock = threading.RLock()

    # -- discovery (metadata only) -------------------------------------------------

    def _entry_point_providers(self) -> list[Provider]:
        key = (tuple(sys.path), os.environ.get("EBMKIT_DISABLE_PLUGINS", ""))
        cached = self._ep_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        disabled = disabled_dists()
        providers = []
        for ep in entry_points(self.group):
            dist, version = _dist_of(ep)
            providers.append(
                Provider(
                    kind=self.kind,
                    name=ep.name,
                    dist=dist,
                    version=version,
                    target=ep.value,
                    entry_point=ep,
                    disabled=normalize_dist(dist) in disabled,
                )
            )
        providers.sort(key=lambda p: (p.name, normalize_dist(p.dist)))
        self._ep_cache = (key, providers)
        return providers

    def _local(self) -> dict[str, tuple[Provider, bool]]:
        merged: dict[str, tuple[Provider, bool]] = {}
        for layer in self._layers:
            merged.update(layer)
        return merged

    def all_providers(self, *, include_disabled: bool = False) -> dict[str, list[Provider]]:
        """Every name with every provider offering it (no plugin imports)."""
        out: dict[str, list[Provider]] = {}
        for p in self._entry_point_providers():
            if include_disabled or not p.disabled:
                out.setdefault(p.name, []).append(p)
        for name, (p, replace) in self._local().items():
            out[name] = [p] if replace else [*out.get(name, []), p]
        return dict(sorted(out.items()))

    def names(self) -> list[str]:
        """Selectable names, sorted. Conflicting names are included."""
        return list(self.all_providers())

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except (UnknownComponentError, ComponentConflictError):
            return False
        return True

    def resolve(self, name: str) -> Provider:
        """The one provider that ``name`` (plain or ``"dist:name"``) selects.

        Raises:
            UnknownComponentError: nothing provides that name.
            ComponentConflictError: several providers offer a plain name.
        """
        if not isinstance(name, str) or not name:
            raise UnknownComponentError(self.kind, repr(name), self.names(), [])
        providers = self.all_providers()
        if ":" in name:
            dist, _, bare = name.partition(":")
            candidates = [
                p for p in providers.get(bare, []) if normalize_dist(p.dist) == normalize_dist(dist)
            ]
            if not candidates:
                offered = [p.qualified_name for p in providers.get(bare, [])]
                if offered:
                    raise UnknownComponentError(self.kind, name, offered, offered)
                raise UnknownComponentError(
                    self.kind, name, self.names(), close_matches(bare, providers)
                )
            return candidates[-1]
        found = providers.get(name)
        if not found:
            raise UnknownComponentError(
                self.kind, name, list(providers), close_matches(name, providers)
            )
        if len(found) > 1:
            raise ComponentConflictError(self.kind, name, found)
        return found[0]

    # -- loading -------------------------------------------------------------------

    def load(self, provider: Provider) -> ComponentSpec:
        """Import (once), validate and cache the spec behind ``provider``."""
        if provider.spec is not None:
            return provider.spec
        key = (normalize_dist(provider.dist), provider.name)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            if key in self._failed:
                raise self._failed[key]
            where = f"{self.group} entry point {provider.name!r} = {provider.target!r} from {provider.dist} {provider.version}"
            try:
                obj = provider.entry_point.load()  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                err = PluginLoadError(
                    f"could not import {self.kind} {provider.name!r}: {where} raised "
                    f"{type(exc).__name__}: {exc}",
                    dist=provider.dist,
                    version=provider.version,
                    target=provider.target,
                )
                err.__cause__ = exc
                self._failed[key] = err
                raise err from exc
            try:
                spec = validate_spec(obj, kind=self.kind, name=provider.name, where=where)
            except InvalidComponentError as err:
                err.dist, err.version, err.target = provider.dist, provider.version, provider.target
                self._failed[key] = err
                raise
            self._loaded[key] = spec
            return spec

    def get(self, name: str) -> ComponentSpec:
        """The validated spec selected by ``name``."""
        return self.load(self.resolve(name))

    def status(self, provider: Provider) -> str:
        """``loaded``, ``failed``, ``conflict``, ``disabled`` or ``available``."""
        if provider.disabled:
            return "disabled"
        key = (normalize_dist(provider.dist), provider.name)
        if key in self._failed:
            return "failed"
        if len(self.all_providers().get(provider.name, [])) > 1:
            return "conflict"
        if provider.spec is not None or key in self._loaded:
            return "loaded"
        return "available"

    def failure(self, provider: Provider) -> PluginLoadError | None:
        return self._failed.get((normalize_dist(provider.dist), provider.name))

    def summary(self, provider: Provider) -> str:
        """The spec's summary, read statically from source when not yet imported."""
        if provider.spec is not None:
            return provider.spec.summary
        spec = self._loaded.get((normalize_dist(provider.dist), provider.name))
        if spec is not None:
            return spec.summary
        return _static_summary(provider.target)

    def provider_of_config(self, config: ComponentConfig | type) -> Provider:
        """Which provider's spec uses this config class (imports specs if needed).

        Raises:
            UnknownComponentError: no registered component uses that class.
        """
        cls = config if isinstance(config, type) else type(config)
        candidates = [p for ps in self.all_providers().values() for p in ps]
        # Loaded specs first: no imports needed for the common case.
        candidates.sort(key=lambda p: self.status(p) != "loaded")
        for p in candidates:
            try:
                spec = self.load(p)
            except PluginLoadError:
                continue
            if spec.config is cls:
                return p
        raise UnknownComponentError(
            self.kind, cls.__qualname__, self.names(), []
        )

    # -- in-process registration ---------------------------------------------------

    def _check_new(self, spec: ComponentSpec, replace: bool) -> Provider:
        validate_spec(spec, kind=self.kind, name=spec.name, where=f"in-process {self.kind} {spec.name!r}")
        provider = Provider(
            kind=self.kind,
            name=spec.name,
            dist=LOCAL_DIST,
            version=None,
            target=f"{getattr(spec.build, '__module__', '?')}:{getattr(spec.build, '__qualname__', '?')}",
            spec=spec,
        )
        existing = self.all_providers().get(spec.name, [])
        if existing and not replace:
            raise ComponentConflictError(self.kind, spec.name, [*existing, provider])
        return provider

    def register(self, spec: ComponentSpec, *, replace: bool = False) -> None:
        with self._lock:
            provider = self._check_new(spec, replace)
            self._layers[0][spec.name] = (provider, replace)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._layers[0].pop(name, None)

    @contextlib.contextmanager
    def overlay(self, *specs: ComponentSpec, replace: bool = False) -> Iterator[Registry]:
        with self._lock:
            layer: dict[str, tuple[Provider, bool]] = {}
            for spec in specs:
                if spec.name in layer:
                    raise ComponentConflictError(self.kind, spec.name, [layer[spec.name][0], spec])
                layer[spec.name] = (self._check_new(spec, replace), replace)
            self._layers.append(layer)
        try:
            yield self
        finally:
            with self._lock:
                self._layers.remove(layer)

    def invalidate(self) -> None:
        with self._lock:
            self._ep_cache = None
            self._loaded.clear()
            self._failed.clear()


def parse_source(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` that survives CPython 3.11's shared AST recursion counter.

    Before 3.11.8 the counter that the AST constructor checks is shared by all
    threads, so a parse racing another thread's (orbax and asyncio keep worker
    threads alive) can fail with ``SystemError: AST constructor recursion depth
    mismatch`` although the source is fine. A retry parses it again; a source that
    keeps failing still raises.
    """
    for attempt in range(4):
        try:
            return ast.parse(source, filename=filename)
        except SystemError:
            if attempt == 3:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _static_summary(target: str) -> str:
    """Read ``summary=`` of the ComponentSpec at ``target`` without importing it."""
    module, _, attr = target.partition(":")
    attr = attr.split("[")[0].strip()
    try:
        mod = sys.modules.get(module)
        if mod is not None:
            spec = getattr(mod, attr.split(".")[0], None)
            return getattr(spec, "summary", "") or ""
        path = None
        found = None
        for part in module.strip().split("."):
            found = importlib.machinery.PathFinder.find_spec(part, path)
            if found is None:
                return ""
            path = found.submodule_search_locations
        if found is None or not found.origin or not found.origin.endswith(".py"):
            return ""
        with open(found.origin, encoding="utf-8") as fh:
            tree = parse_source(fh.read(), found.origin)
    except (OSError, SyntaxError, SystemError, ValueError, ImportError):
        return ""
    for node in tree.body:
        value = None
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attr for t in node.targets
        ):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == attr:
            value = node.value
        if isinstance(value, ast.Call):
            for kw in value.keywords:
                if kw.arg == "summary" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
            if len(value.args) >= 5 and isinstance(value.args[4], ast.Constant):
                return str(value.args[4].value)
    return ""


_REGISTRIES: dict[str, Registry] = {kind: Registry(kind, group) for kind, group in KIND_GROUPS.items()}


def get_registry(kind: str) -> Registry:
    """The registry of ``kind``.

    Raises:
        UnknownComponentError: ``kind`` is not a component kind.
    """
    try:
        return _REGISTRIES[kind]
    except KeyError:
        raise UnknownComponentError(
            "component kind", kind, list(_REGISTRIES), close_matches(kind, _REGISTRIES)
        ) from None


def get_spec(kind: str, name: str) -> ComponentSpec:
    """Shorthand for ``get_registry(kind).get(name)``."""
    return get_registry(kind).get(name)


def spec_of(config: ComponentConfig) -> ComponentSpec:
    """The spec whose config class ``config`` is an instance of.

    Raises:
        TypeError: ``config`` is not a component config.
        UnknownComponentError: no registered component uses its class.
    """
    kind = kind_of_config(type(config))
    if kind is None:
        raise TypeError(f"{type(config).__name__} is not a component config")
    reg = get_registry(kind)
    return reg.load(reg.provider_of_config(type(config)))


def register(spec: ComponentSpec, *, replace: bool = False) -> ComponentSpec:
    """Register ``spec`` in-process (notebooks, tests) for the rest of the session.

    A name that an installed plugin already provides is a
    :class:`ComponentConflictError` unless ``replace=True``, which shadows it
    explicitly. Returns ``spec`` so it can be used as an expression.
    """
    if not isinstance(spec, ComponentSpec):
        raise InvalidComponentError(f"register() expects a ComponentSpec, got {type(spec).__name__}")
    get_registry(spec.kind).register(spec, replace=replace)
    return spec


@contextlib.contextmanager
def overlay(*specs: ComponentSpec, replace: bool = False) -> Iterator[None]:
    """Make ``specs`` available inside a ``with`` block only."""
    by_kind: dict[str, list[ComponentSpec]] = {}
    for spec in specs:
        if not isinstance(spec, ComponentSpec):
            raise InvalidComponentError(f"overlay() expects ComponentSpecs, got {type(spec).__name__}")
        by_kind.setdefault(spec.kind, []).append(spec)
    with contextlib.ExitStack() as stack:
        for kind, group in by_kind.items():
            stack.enter_context(get_registry(kind).overlay(*group, replace=replace))
        yield


@attrs.frozen
class ListingRow:
    kind: str
    name: str
    dist: str
    version: str | None
    target: str
    status: str
    summary: str
    error: str | None = None


def listing(kinds: Mapping[str, str] | None = None) -> list[ListingRow]:
    """Every provider of every kind, with status, without importing plugins."""
    rows = []
    for kind in kinds or KIND_GROUPS:
        reg = get_registry(kind)
        for _name, providers in reg.all_providers(include_disabled=True).items():
            for p in providers:
                err = reg.failure(p)
                rows.append(
                    ListingRow(
                        kind=kind,
                        name=p.name,
                        dist=p.dist,
                        version=p.version,
                        target=p.target,
                        status=reg.status(p),
                        summary=reg.summary(p),
                        error=str(err) if err else None,
                    )
                )
    return rows


def invalidate_caches() -> None:
    """Forget discovered entry points and loaded specs (after installing a plugin)."""
    md_cache_clear = getattr(importlib, "invalidate_caches", None)
    if md_cache_clear:
        md_cache_clear()
    for reg in _REGISTRIES.values():
        reg.invalidate()
