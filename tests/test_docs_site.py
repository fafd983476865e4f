"""The documentation site (mkdocs.yml) builds with ``mkdocs build --strict``.

Strict mode fails on a broken link or anchor between pages, a page missing
from the nav, an API directive (``::: ebmkit.x``) that does not resolve, and a
docstring mkdocstrings cannot parse (a documented parameter the signature
lacks). mkdocs, mkdocs-material and mkdocstrings come with the ``test`` extra
(and the ``docs`` extra), so a missing one is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"

    # The API reference rendered the objects its pages name, from both packages.
    model = (site / "api" / "model" / "index.html").read_text(encoding="utf-8")
    for anchor in ("ebmkit.assemble.assemble", "ebmkit.model.EBM", "ebmkit.model.DeepEBM",
                   "ebmkit.training.loop.Trainer"):
        assert f'id="{anchor}"' in model, anchor
    samplers = (site / "api" / "builtins" / "samplers" / "index.html").read_text(encoding="utf-8")
    assert 'id="ebmkit_builtins.samplers.mala.MALAConfig"' in samplers

    # Every config class (the run's tables, each kind's base, each built-in
    # component's) and every error has an entry in the API reference.
    api = "".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    missing = [f"{cls.__module__}.{cls.__qualname__}" for cls in documented_classes()
               if f'id="{cls.__module__}.{cls.__qualname__}"' not in api]
    assert not missing, f"not in the API reference (docs/api/): {missing}"

    # Sphinx roles in docstrings became code or links (docs/_ext/sphinx_roles.py),
    # and ```python no-run fences rendered as code (docs/_ext/hooks.py).
    pages = {p: p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    role = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>")
    assert not [p for p, text in pages.items() if role.search(text)]
    assert not [p for p, text in pages.items() if "```" in text]


def documented_classes() -> list[type]:
    """The classes the API reference must list: every config class of ebmkit
    and of each component ebmkit-jax ships, and every error class."""
    import attrs

    import ebmkit.config
    import ebmkit.errors
    from ebmkit import registry

    classes = [getattr(ebmkit.errors, n) for n in ebmkit.errors.__all__]
    classes += [getattr(ebmkit.config, n) for n in ebmkit.config.__all__]
    for row in registry.listing():
        if row.dist == "ebmkit-jax":
            classes.append(registry.get_spec(row.kind, row.name).config)
    seen: list[type] = []
    for cls in classes:
        if isinstance(cls, type) and (attrs.has(cls) or issubclass(cls, (Exception, Warning))) and cls not in seen:
            seen.append(cls)
    return seen
