"""A griffe extension for the documentation site: Sphinx roles in docstrings.

ebmkit's docstrings use Google style with Sphinx cross-reference roles
(``:class:`EBM```, ``:func:`~ebmkit.config.load_config```). mkdocstrings
renders Markdown, where a role would show as ``:class:EBM``; this extension
rewrites each role before rendering into a link to the object's API entry when
the name resolves and that entry is on the site, and into plain code otherwise
(an *optional* autorefs reference never fails ``mkdocs build --strict``).

Loaded by mkdocs.yml (``plugins: mkdocstrings: handlers: python: options:
extensions``); nothing else imports it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(?P<target>[^`]+)`")


def _canonical(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``, or None."""
    collection = obj.modules_collection
    candidates = []
    if "." in target:
        candidates.append(target)
        head, _, rest = target.partition(".")
        try:
            candidates.append(f"{obj.resolve(head)}.{rest}")
        except Exception:  # noqa: BLE001 - unresolvable names fall back to plain code
            pass
    else:
        try:
            candidates.append(obj.resolve(target))
        except Exception:  # noqa: BLE001
            pass
        for scope in (obj, obj.parent):  # a method or attribute of the same class
            if scope is not None and target in getattr(scope, "members", {}):
                candidates.append(f"{scope.path}.{target}")
    for path in candidates:
        try:
            found = collection[path]
            if found.is_alias:
                found = found.final_target
            return found.path
        except Exception:  # noqa: BLE001 - not loaded, or an external name
            continue
    return None


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` with every Sphinx role replaced by Markdown/autorefs HTML."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        title = target.lstrip("~.")
        if target.startswith("~"):
            title = title.rsplit(".", 1)[-1]
        code = f"<code>{html.escape(title)}</code>"
        path = _canonical(obj, target.lstrip("~"))
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path, quote=True)}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = convert(obj, obj.docstring.value)

    # griffe < 1.14 names the hook on_package_loaded; converting twice is harmless.
    on_package_loaded = on_package


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)
