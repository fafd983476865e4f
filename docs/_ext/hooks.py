"""MkDocs hooks for the documentation site (loaded by mkdocs.yml ``hooks``).

tests/test_docs.py runs every ```python block of the pages and skips those
fenced as ```python no-run. Markdown's fences take no bare words after the
language, so such a fence would not render as code: the hook drops the marker
before rendering.
"""

from __future__ import annotations

import re
from typing import Any

_NO_RUN = re.compile(r"^(?P<fence>[ \t]*(?:`{3,}|~{3,})[ \t]*python)[ \t]+no-run[ \t]*$", re.MULTILINE)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _NO_RUN.sub(r"\g<fence>", markdown)
