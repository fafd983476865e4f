"""Fake installed distributions for plugin tests.

``make_dist`` writes ``<tmp_path>/<name>-<version>.dist-info/{METADATA,entry_points.txt}``
plus the plugin modules beside it, the same layout ``pip install`` produces. Tests
then put ``tmp_path`` on ``sys.path`` (``monkeypatch.syspath_prepend``) and call
``ebmkit.registry.invalidate_caches()`` (and ``ebmkit.plugins.reset_plugin_manager()``)
so discovery sees it. No mocks: ``importlib.metadata`` finds these like any
real installed distribution.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

__all__ = ["make_dist"]


def make_dist(
    tmp_path: Path,
    name: str,
    version: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str],
) -> Path:
    """Write a fake installed distribution into ``tmp_path``; return its dist-info dir.

    Args:
        tmp_path: directory that will go on ``sys.path``.
        name: distribution name (``Name:`` in METADATA).
        version: distribution version.
        entry_points: ``{group: {entry_point_name: "module:attr"}}``.
        modules: ``{dotted.module.name: source}``; packages are created for
            dotted names (``pkg.mod`` writes ``pkg/__init__.py`` if absent and
            ``pkg/mod.py``). Source is dedented.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    info = tmp_path / f"{re.sub(r'[-.]+', '_', name)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{ep} = {target}" for ep, target in eps.items())
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    for module, source in modules.items():
        parts = module.split(".")
        directory = tmp_path
        for pkg in parts[:-1]:
            directory = directory / pkg
            directory.mkdir(exist_ok=True)
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text("", encoding="utf-8")
        (directory / f"{parts[-1]}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return info
