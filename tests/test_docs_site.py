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

    # Sphinx roles in docstrings became code or links (docs/_ext/sphinx_roles.py),
    # and ```python no-run fences rendered as code (docs/_ext/hooks.py).
    pages = {p: p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    role = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>")
    assert not [p for p, text in pages.items() if role.search(text)]
    assert not [p for p, text in pages.items() if "```" in text]
