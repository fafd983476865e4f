"""The plugin recipes of docs/plugins.md are complete modules that pass the conformance suite.

Every ```python block of the page that starts with ``# my_ebm/<module>.py`` is
what a plugin author would put in that file. Each runs here on its own, in a
fresh namespace (so it imports everything it uses), and every
``ComponentSpec`` it defines passes :func:`ebmkit.testing.check_spec`. The
page itself runs in ``tests/test_docs.py``; these checks are too slow to add
to it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_docs import runnable_python

from ebmkit.plugins import get_plugin_manager, register_plugin
from ebmkit.registry import ComponentSpec
from ebmkit.testing import check_spec

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
_MODULE = re.compile(r"^# (my_ebm/\w+\.py)\n")


def recipe_modules() -> dict[str, str]:
    """``{path: source}`` of the page's module blocks, in page order."""
    out = {}
    for block in runnable_python(PAGE.read_text(encoding="utf-8")):
        match = _MODULE.match(block.code)
        if match:
            out[match.group(1)] = "\n" * (block.line - 1) + block.code
    return out


MODULES = recipe_modules()


def load(path: str) -> dict:
    namespace = {"__name__": path.removesuffix(".py").replace("/", ".")}
    exec(compile(MODULES[path], str(PAGE), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def specs() -> list:
    found = []
    for path in MODULES:
        for value in load(path).values():
            if isinstance(value, ComponentSpec):
                found.append(pytest.param(value, id=f"{value.kind}:{value.name}"))
    return found


def test_the_page_has_a_recipe_per_kind_and_a_hook_plugin():
    kinds = {p.values[0].kind for p in specs()}
    assert kinds == {"energy", "sampler", "loss", "dataset"}, kinds
    assert "my_ebm/loss_logger.py" in MODULES


@pytest.mark.parametrize("spec", specs())
def test_recipe_passes_the_conformance_suite(spec):
    report = check_spec(spec)
    assert report.passed and not report.skipped, report


def test_hook_recipe_is_a_valid_hook_plugin():
    plugin = load("my_ebm/loss_logger.py")["loss_logger"]
    register_plugin(plugin)
    try:
        get_plugin_manager().hook.ebmkit_step_end(step=3, metrics={"loss": 1.5})
    finally:
        get_plugin_manager().unregister(plugin)
    assert plugin.losses == {3: 1.5}
