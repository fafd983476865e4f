"""The one cattrs converter through which every configuration passes.

Files, dicts and keyword arguments are all structured here, so an error looks
the same whichever way the configuration arrived: one :class:`ConfigError`
listing every problem with its dotted path and a suggestion.

Grammar:

* A configuration class is a frozen attrs class (:class:`ConfigBase`).
* A component slot is a field typed with a kind base (``EnergyConfig``, ...).
  Its value is a string (``"mlp"``), a table with ``name`` plus fields
  (``{name = "mlp", hidden_dims = [64, 64]}``) or a config instance. A table
  without ``name`` keeps the slot's default component. ``name`` may be
  provider-qualified (``"ebmkit-jax:mlp"``). A table may carry ``provider``
  (``"dist version"``) as written by :func:`dump_config`.
* An optional slot (sampler, buffer) may be ``"none"``: nothing is built.
* Scalars are strict: ``"3"`` is not an int and ``"false"`` is not a bool.
"""

from __future__ import annotations

import functools
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import BaseValidationError

from ebmkit.config.base import ComponentConfig, ConfigBase
from ebmkit.errors import (
    ComponentConflictError,
    ConfigError,
    ConfigProblem,
    PluginLoadError,
    UnknownComponentError,
)
from ebmkit.suggest import did_you_mean

__all__ = ["converter", "structure", "unstructure", "component_name", "component_field", "AUTO", "NONE"]

#: A component slot left for the run to fill: its default component when the
#: loss needs the slot, else empty (see :class:`ebmkit.config.Config`).
AUTO = "auto"
#: The string that leaves an optional slot empty.
NONE = "none"


# ebmkit.kinds imports the config bases, so it is imported here on first use.
def get_kind(name: str) -> Any:
    from ebmkit.kinds import get_kind as _get_kind

    return _get_kind(name)


def kind_of_config(cls: type) -> str | None:
    from ebmkit.kinds import kind_of_config as _kind_of_config

    return _kind_of_config(cls)


@functools.cache
def _kind_bases() -> tuple[type, ...]:
    from ebmkit.kinds import KINDS

    return tuple(k.config_base for k in KINDS)


class _Problems(Exception):
    """Internal: problems collected below some path (never escapes this module)."""

    def __init__(self, problems: list[ConfigProblem], cause: BaseException | None = None):
        self.problems = problems
        self.cause = cause
        super().__init__(problems)


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            t.__name__, t.__name__
        )
    return str(t).replace("typing.", "")


def _article(word: str | None) -> str:
    word = str(word)
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- strict scalars ----------------------------------------------------------------


_INT64 = 2**63


def _strict_int(value: Any, _t: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and abs(value) < _INT64:
            return int(value)
        raise TypeError(f"expected an integer, got {_describe(value)}")
    if not -_INT64 <= value < _INT64:
        raise TypeError(f"expected an integer in the 64-bit range, got {_describe(value)}")
    return value


def _strict_float(value: Any, _t: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_describe(value)}")
    return float(value)


def _strict_bool(value: Any, _t: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_describe(value)}")
    return value


def _strict_str(value: Any, _t: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_describe(value)}")
    return value


# -- the converter -----------------------------------------------------------------

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(str, _strict_str)


@functools.cache
def _fields(cls: type) -> tuple[attrs.Attribute, ...]:
    attrs.resolve_types(cls)
    return attrs.fields(cls)


def _leaf_problems(exc: BaseException, path: str) -> list[ConfigProblem]:
    """Flatten a cattrs validation group into problems with index paths."""
    if isinstance(exc, _Problems):
        return [p.under(path) if path else p for p in exc.problems]
    if isinstance(exc, ConfigError):
        return [p.under(path) for p in exc.problems]
    if isinstance(exc, BaseValidationError):
        out: list[ConfigProblem] = []
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                # cattrs annotates with typed notes; plain str notes also have
                # an ``index`` attribute (a method), so check the types.
                idx = getattr(note, "index", None)
                name = getattr(note, "name", None)
                if isinstance(idx, int):
                    sub_path = _join(path, idx)
                elif isinstance(name, str):
                    sub_path = _join(path, name)
            out += _leaf_problems(sub, sub_path)
        return out or [ConfigProblem(path=path, message=str(exc))]
    return [ConfigProblem(path=path, message=str(exc) or type(exc).__name__)]


def _structure_value(value: Any, typ: Any, path: str) -> Any:
    try:
        if isinstance(typ, type) and issubclass(typ, ConfigBase):
            return _structure_config(value, typ, path)
        origin = typing.get_origin(typ)
        if origin in (tuple, list) and isinstance(value, (str, bytes, Mapping)):
            # A string is iterable: say it once, not once per character.
            raise _Problems([ConfigProblem(path=path, message=f"expected a list, got {_describe(value)}")])
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(typ)
            if value is None and type(None) in args:
                return None
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                return _structure_value(value, non_none[0], path)
            # Several forms (a number or a list): the first that takes the value.
            failures: list[_Problems] = []
            for arg in non_none:
                try:
                    return _structure_value(value, arg, path)
                except _Problems as problems:
                    failures.append(problems)
            names = " or ".join(_type_name(a) if isinstance(a, type) else "a list of numbers" for a in non_none)
            raise _Problems([ConfigProblem(path=path, message=f"expected {names}, got {_describe(value)}")])
        return converter.structure(value, typ)
    except _Problems:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a problem
        problems = _leaf_problems(exc, path)
        raise _Problems(problems, exc) from None


def _registry_problem(exc: Exception, path: str) -> _Problems:
    if isinstance(exc, (UnknownComponentError, ComponentConflictError)):
        located = exc.at(path)
        return _Problems(list(located.problems), located)
    return _Problems(
        [ConfigProblem(path=path, message=str(exc), suggestion="run `ebmkit plugins check`")], exc
    )


def _component_spec(kind: str, name: Any, path: str, provider: Any = None):
    from ebmkit.registry import get_registry

    if not isinstance(name, str):
        raise _Problems(
            [ConfigProblem(path=_join(path, "name"), message=f"expected a component name string, got {_describe(name)}")]
        )
    reg = get_registry(kind)
    if provider is not None and ":" in name and isinstance(provider, str):
        from ebmkit.registry import normalize_dist

        named, given = name.partition(":")[0], provider.strip().partition(" ")[0]
        if normalize_dist(named) != normalize_dist(given):
            raise _Problems(
                [ConfigProblem(
                    path=_join(path, "provider"),
                    message=f"provider {provider!r} contradicts the name {name!r}",
                    suggestion=f"drop provider, or write name = \"{given}:{name.partition(':')[2]}\"",
                )]
            )
    try:
        if provider is not None and ":" not in name:
            if not isinstance(provider, str) or not provider.strip():
                raise _Problems(
                    [ConfigProblem(path=_join(path, "provider"), message=f"expected 'dist version', got {_describe(provider)}")]
                )
            dist, _, version = provider.strip().partition(" ")
            p = reg.resolve(f"{dist}:{name}")
            if version and p.version and version.strip() != p.version:
                warnings.warn(
                    f"{path}: config was written with {dist} {version.strip()}, "
                    f"installed is {p.version}",
                    stacklevel=2,
                )
            return reg.load(p)
        return reg.get(name)
    except (UnknownComponentError, ComponentConflictError, PluginLoadError) as exc:
        raise _registry_problem(exc, path) from None


def _structure_component(value: Any, base: type[ComponentConfig], path: str, default_name: str | None) -> ComponentConfig:
    kind = kind_of_config(base)
    assert kind is not None
    if isinstance(value, ComponentConfig):
        if not isinstance(value, base):
            raise _Problems(
                [ConfigProblem(path=path, message=f"{type(value).__name__} is {_article(kind_of_config(type(value)))} config, expected {_article(kind)} config")]
            )
        return value
    if isinstance(value, str):
        spec = _component_spec(kind, value, path)
        return _structure_config({}, spec.config, path)
    if isinstance(value, Mapping):
        table = dict(value)
        name = table.pop("name", default_name)
        provider = table.pop("provider", None)
        if name is None:
            raise _Problems(
                [ConfigProblem(path=_join(path, "name"), message="missing component name", suggestion=f"add name = \"<{kind}>\"; see `ebmkit plugins`")]
            )
        spec = _component_spec(kind, name, path, provider)
        return _structure_config(table, spec.config, path)
    raise _Problems(
        [
            ConfigProblem(
                path=path,
                message=f"expected {_article(kind)} name or a table with 'name', got {_describe(value)}",
            )
        ]
    )


def _structure_config(value: Any, cls: type, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if cls in _kind_bases():
        return _structure_component(value, cls, path, None)
    if not isinstance(value, Mapping):
        raise _Problems(
            [ConfigProblem(path=path, message=f"expected a table for {cls.__name__}, got {_describe(value)}")]
        )
    fields = _fields(cls)
    by_name = {a.alias or a.name: a for a in fields if a.init}
    problems: list[ConfigProblem] = []
    for key in value:
        if key not in by_name:
            hint = did_you_mean(str(key), by_name) if isinstance(key, str) else None
            known = ", ".join(by_name) or "none"
            problems.append(
                ConfigProblem(
                    path=path,
                    message=f"unexpected field {key!r}",
                    suggestion=hint or f"known fields: {known}",
                )
            )
    values: dict[str, Any] = {}
    for key, a in by_name.items():
        sub = _join(path, key)
        slot_kind = a.metadata.get("ebmkit_kind")
        is_component = slot_kind is not None
        default = a.default if isinstance(a.default, str) else None
        # The component a table without ``name`` configures.
        default_name = a.metadata.get("ebmkit_fallback", default)
        if key not in value:
            if a.default is attrs.NOTHING:
                problems.append(ConfigProblem(path=sub, message="required field missing"))
            elif is_component and default is not None and default != AUTO:
                # Resolve default components here so that their failures are
                # collected with every other problem, at the right path.
                try:
                    values[key] = _structure_component(default, get_kind(slot_kind).config_base, sub, default)
                except _Problems as exc:
                    problems += exc.problems
            continue
        try:
            if is_component and _is_empty_slot(value[key], slot_kind, sub):
                values[key] = None
            elif is_component and value[key] == AUTO and default == AUTO:
                values[key] = AUTO
            elif is_component:
                values[key] = _structure_component(value[key], get_kind(slot_kind).config_base, sub, default_name)
            else:
                values[key] = _structure_value(value[key], a.type, sub)
        except _Problems as exc:
            problems += exc.problems
            continue
        if a.validator is not None:
            try:
                # Validators see what the field will hold: after its converter.
                a.validator(None, a, a.converter(values[key]) if a.converter is not None else values[key])
            except Exception as exc:  # noqa: BLE001
                message = str(exc)
                # Validators name their field for direct Python calls; the path says it here.
                message = message.removeprefix(f"{a.name}: ")
                problems.append(ConfigProblem(path=sub, message=message))
    if problems:
        raise _Problems(problems)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise _Problems([p.under(path) for p in exc.problems], exc) from None
    except Exception as exc:  # noqa: BLE001 - cross-field validation, converters
        raise _Problems([ConfigProblem(path=path, message=str(exc))], exc) from None


def _is_empty_slot(value: Any, kind: str, path: str) -> bool:
    """``"none"``/``None`` in a slot; an error for a slot that cannot be empty."""
    if value is not None and value != NONE:
        return False
    if not get_kind(kind).optional:
        raise _Problems([ConfigProblem(path=path, message=f"every run needs {_article(kind)}; it cannot be {value!r}")])
    return True


def structure(data: Any, cls: type, *, source: str | None = None) -> Any:
    """Structure ``data`` (a mapping, string or instance) into ``cls``.

    Raises:
        ConfigError: with every problem found, each tagged with ``source``.
    """
    try:
        return _structure_config(data, cls, "")
    except _Problems as exc:
        err = ConfigError(exc.problems, source=source)
        raise err from exc.cause


# -- unstructuring -----------------------------------------------------------------


def component_name(config: ComponentConfig) -> tuple[str, Any]:
    """The config string that selects ``config``'s component, and its provider.

    The name is provider-qualified when several providers offer it.
    """
    from ebmkit.registry import get_registry

    kind = kind_of_config(type(config))
    reg = get_registry(kind)
    provider = reg.provider_of_config(type(config))
    name = provider.name
    if len(reg.all_providers().get(name, [])) > 1:
        name = provider.qualified_name
    return name, provider


def _unstructure_value(value: Any, with_provider: bool) -> Any:
    if isinstance(value, ConfigBase):
        return unstructure(value, with_provider=with_provider)
    if isinstance(value, (tuple, list)):
        return [_unstructure_value(v, with_provider) for v in value]
    if isinstance(value, Mapping):
        return {k: _unstructure_value(v, with_provider) for k, v in value.items()}
    return converter.unstructure(value)


def unstructure(config: Any, *, with_provider: bool = False) -> dict[str, Any]:
    """A plain dict (TOML/JSON-ready) that structures back to an equal config.

    ``None`` values of fields whose default is ``None`` are left out (TOML has no
    null). Component configs carry ``name`` first, and ``provider`` when asked.
    """
    out: dict[str, Any] = {}
    if isinstance(config, ComponentConfig):
        name, provider = component_name(config)
        out["name"] = name
        if with_provider:
            out["provider"] = f"{provider.dist} {provider.version}" if provider.version else provider.dist
    for a in _fields(type(config)):
        if not a.init:
            continue
        v = getattr(config, a.name)
        if v is None and (a.default is None or a.metadata.get("ebmkit_kind")):
            continue  # TOML has no null: an empty slot or unset value is left out
        out[a.alias or a.name] = _unstructure_value(v, with_provider)
    return out


def component_field_value(kind: str, value: Any) -> ComponentConfig:
    """``value`` (a name or table) structured as a ``kind`` config.

    Raises:
        ConfigError: it does not structure (path ``kind``).
    """
    try:
        return _structure_component(value, get_kind(kind).config_base, kind, None)
    except _Problems as exc:
        raise ConfigError(exc.problems) from exc.cause


def component_field(kind: str, default: str, *, fallback: str | None = None, **kwargs: Any) -> Any:
    """An attrs field holding a ``kind`` component config, default ``default``.

    Accepts a name, a table or a config instance in Python code too, so
    ``Config(sampler="hmc")`` and ``Config(sampler={"name": "hmc"})`` work.
    For a kind that may be left out (:attr:`ebmkit.kinds.Kind.optional`),
    ``None`` or ``"none"`` leave the slot empty and ``default=AUTO`` lets the
    run decide (see :class:`ebmkit.config.Config`); ``fallback`` names the
    component a table without ``name`` configures.
    """
    def convert(value: Any) -> ComponentConfig | str | None:
        base = get_kind(kind).config_base
        if isinstance(value, base):
            return value
        try:
            if _is_empty_slot(value, kind, kind):
                return None
            if value == AUTO and default == AUTO:
                return AUTO
            return _structure_component(value, base, kind, fallback or (None if default == AUTO else default))
        except _Problems as exc:
            raise ConfigError(exc.problems) from exc.cause

    metadata = {**kwargs.pop("metadata", {}), "ebmkit_kind": kind}
    if fallback is not None:
        metadata["ebmkit_fallback"] = fallback
    return attrs.field(default=default, converter=convert, metadata=metadata, **kwargs)
