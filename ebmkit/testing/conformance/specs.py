"""Spec checks, run for every kind before any behaviour check.

The :class:`~ebmkit.registry.ComponentSpec` is valid (kind, name, API version,
config base, keyword-only fields, reserved names, ``needs``); ``build`` has the
signature of its API version; its config class builds with defaults, or
documents the fields it requires; the default config survives
``structure(unstructure(cfg)) == cfg``, also through TOML and JSON text; no
other component of the kind shares the config class (a resolved config
remembers its component by its class).
"""

from __future__ import annotations

import inspect
import json
import tomllib
from typing import Any

import attrs
import tomli_w

from ebmkit import registry
from ebmkit.config.converter import structure, unstructure
from ebmkit.errors import PluginLoadError
from ebmkit.kinds import get_kind
from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.recorder import _Recorder, _require
from ebmkit.types import BuildContext


def _required_fields(config: type) -> list[str]:
    return [a.name for a in attrs.fields(config) if a.init and a.default is attrs.NOTHING]


def _default_config(spec: ComponentSpec, rec: _Recorder) -> Any:
    """The default config, or ``None`` when it needs documented required fields."""
    required = _required_fields(spec.config)
    if required:
        with rec.check("config documents its required fields"):
            doc = inspect.getdoc(spec.config) or ""
            undocumented = [f for f in required if f not in doc]
            _require(
                not undocumented,
                f"{spec.config.__qualname__} has required fields {undocumented} that its "
                "docstring does not describe (give them defaults or document them under "
                "'Attributes:')",
            )
        rec.skipped.append(
            f"behaviour checks need a config: {spec.config.__qualname__} requires "
            f"{required}; pass config=... to check_spec or check_component to run them"
        )
        return None
    cfg = None
    with rec.check("config builds with defaults", fatal=True):
        cfg = spec.config()
    return cfg


def _shared_config_class(spec: ComponentSpec) -> list[str]:
    """Other components of the kind whose spec uses ``spec.config`` too."""
    reg = registry.get_registry(spec.kind)
    shared = []
    for name, providers in reg.all_providers().items():
        if name == spec.name:
            continue
        for p in providers:
            try:
                other = reg.load(p)
            except PluginLoadError:
                continue
            if other.config is spec.config:
                shared.append(p.qualified_name)
    return shared


def _check_build_signature(spec: ComponentSpec) -> None:
    """``build`` can be called the way :meth:`ComponentSpec.create` calls it."""
    try:
        signature = inspect.signature(spec.build)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to inspect
    config = object()  # binding checks arity and names only
    if spec.api >= 2:
        calls = [("build(config, ctx)", (config, BuildContext()), {})]
    elif spec.kind == "energy":
        calls = [("build(config, *, event_shape, rngs)", (config,), {"event_shape": (2,), "rngs": None})]
    elif spec.kind == "buffer":
        calls = [("build(config, *, event_shape, bounds)", (config,), {"event_shape": (2,), "bounds": None})]
    else:
        calls = [("build(config)", (config,), {})]
    for call, args, kwargs in calls:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            hint = " (API 1 specs set api=1)" if spec.api >= 2 else ""
            raise AssertionError(
                f"{spec.kind} specs of plugin API {spec.api} are built as {call}, but build has "
                f"the signature {signature}: {exc}{hint}"
            ) from None


def _spec_checks(spec: Any, rec: _Recorder) -> Any:
    """Spec-level checks; returns the default config (or ``None``)."""
    with rec.check("is a valid ComponentSpec", fatal=True):
        _require(isinstance(spec, ComponentSpec), f"expected a ComponentSpec, got {type(spec).__name__}")
        _require(
            spec.kind in registry.KIND_GROUPS,
            f"kind {spec.kind!r} is not one of {sorted(registry.KIND_GROUPS)}",
        )
        registry.validate_spec(spec, kind=spec.kind, name=spec.name, where=rec.subject)
    with rec.check(f"build's signature fits plugin API {spec.api}", fatal=True):
        _check_build_signature(spec)
    with rec.check("summary is one line of text"):
        _require(
            isinstance(spec.summary, str) and "\n" not in spec.summary,
            f"summary must be a single-line string, got {spec.summary!r}",
        )
    with rec.check("config class is not shared with another component"):
        shared = _shared_config_class(spec)
        _require(
            not shared,
            f"{spec.config.__qualname__} is also the config of {shared}; give each component "
            "its own config class (subclass a shared base), since a resolved config names "
            "its component through its class",
        )
    cfg = _default_config(spec, rec)
    if cfg is not None:
        _round_trip(spec, cfg, rec)
    return cfg


def _round_trip(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    base = get_kind(spec.kind).config_base
    # The overlay makes the plain name select exactly this spec, whether or not
    # it is installed, shadowed or in conflict with another provider.
    with registry.overlay(spec, replace=True):
        data = None
        with rec.check("structure(unstructure(cfg)) == cfg", fatal=True):
            data = unstructure(cfg)
            _require(data.get("name") == spec.name, f"unstructure names {data.get('name')!r}, not {spec.name!r}")
            back = structure(data, base)
            _require(back == cfg, f"round trip changed the config: {cfg!r} -> {back!r}")
        with rec.check("config round-trips through TOML and JSON text"):
            from_toml = tomllib.loads(tomli_w.dumps({"component": data}))["component"]
            from_json = json.loads(json.dumps(data))
            for fmt, loaded in (("TOML", from_toml), ("JSON", from_json)):
                back = structure(loaded, base)
                _require(back == cfg, f"{fmt} round trip changed the config: {cfg!r} -> {back!r}")
