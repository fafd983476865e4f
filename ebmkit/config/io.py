"""Reading, overriding and writing configuration files (TOML and JSON)."""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from ebmkit.config.converter import structure, unstructure
from ebmkit.config.schema import Config
from ebmkit.errors import ConfigError, ConfigProblem

__all__ = ["load_config", "read_config_file", "dump_config", "apply_overrides", "parse_override"]

PathLike = str | os.PathLike[str]


def read_config_file(path: PathLike) -> dict[str, Any]:
    """Parse a TOML or JSON file into a dict.

    Raises:
        ConfigError: unreadable file, syntax error or unknown extension.
    """
    p = Path(path)
    src = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=src) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            source=src,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", source=src) from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ConfigError("a JSON config must be an object at the top level", source=src)
            return data
    except RecursionError:
        raise ConfigError("nested too deeply to read (a config is a few tables deep)", source=src) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", source=src) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=src
        ) from exc
    raise ConfigError(
        [ConfigProblem(path="", message=f"unknown config file type {suffix!r}", suggestion="use .toml or .json")],
        source=src,
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=c"`` into ``(["a", "b"], value)``.

    The value is read as a TOML value (``0.1``, ``true``, ``[64, 64]``,
    ``"x"``, ``{name = "hmc"}``); anything that is not valid TOML is a string.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(
            [ConfigProblem(path="", message=f"malformed override {text!r}", suggestion="write KEY=VALUE, e.g. sampler.step_size=0.05")]
        )
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` style overrides to a copy of ``data`` (never mutated)."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for depth, k in enumerate(keys[:-1]):
            child = node.get(k)
            if isinstance(child, str):  # "sampler = 'hmc'" then "sampler.step_size=..."
                child = {"name": child}
            elif child is None:
                child = {}
            elif not isinstance(child, Mapping):
                raise ConfigError(
                    [ConfigProblem(path=".".join(keys[: depth + 1]), message=f"cannot set {'.'.join(keys)}: {k!r} holds {child!r}, not a table")]
                )
            node[k] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return out


def load_config(
    source: PathLike | Mapping[str, Any] | Config | None = None,
    /,
    *,
    overrides: Iterable[str] = (),
    **fields: Any,
) -> Config:
    """Build a :class:`Config` from a file, a mapping or keywords, plus overrides.

    Later layers win: ``source`` < ``fields`` < ``overrides``.

    Raises:
        ConfigError: listing every problem, tagged with the file name.
    """
    src = None
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Config):
        data = unstructure(source)
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        src = str(source)
        data = read_config_file(source)
    else:
        raise ConfigError(
            f"expected a config file path, a mapping or a Config, got {type(source).__name__}"
        )
    data.update(fields)
    data = apply_overrides(data, overrides)
    return structure(data, Config, source=src)


def dump_config(config: Config, path: PathLike | None = None, *, with_provider: bool = True) -> str:
    """Serialise a resolved config (TOML or JSON by extension; TOML text if no path).

    Every component table records the distribution and version that provided it,
    and the file loads back to an equal config.
    """
    data = unstructure(config, with_provider=with_provider)
    if path is not None and Path(path).suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = tomli_w.dumps(data)
    if path is not None:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    return text
