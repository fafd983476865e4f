"""Every ```python block in docs/**/*.md runs, in order, in one namespace per page.

Blocks fenced as ```python no-run are shown but not executed (say why in the
text around them). Other languages (toml, bash, text) are never executed.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from ebmkit import registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class Block(NamedTuple):
    line: int  # 1-based line of the first code line
    language: str
    options: tuple[str, ...]
    code: str


def code_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a markdown text, with the line each starts on."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        words = opening["info"].strip().split()
        start = i + 1
        j = start
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            j += 1
        body = textwrap.dedent("\n".join(lines[start:j]))
        blocks.append(Block(start + 1, words[0].lower() if words else "", tuple(words[1:]), body))
        i = j + 1
    return blocks


def runnable_python(text: str) -> list[Block]:
    return [b for b in code_blocks(text) if b.language == "python" and "no-run" not in b.options]


def run_markdown(path: Path) -> dict:
    """Exec the page's runnable python blocks in order; returns the namespace."""
    namespace: dict = {"__name__": "docs." + ".".join(path.relative_to(ROOT).with_suffix("").parts)}
    for block in runnable_python(path.read_text(encoding="utf-8")):
        # Pad so tracebacks point at the markdown file's own line numbers.
        code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
        exec(code, namespace)  # noqa: S102 - executing our own documentation
    return namespace


PAGES = sorted(
    p for p in [ROOT / "README.md", *DOCS.rglob("*.md")] if runnable_python(p.read_text(encoding="utf-8"))
)


def _local_names() -> dict[str, set[str]]:
    return {
        kind: {n for n, ps in registry.get_registry(kind).all_providers().items() if any(p.is_local for p in ps)}
        for kind in registry.KIND_GROUPS
    }


@pytest.fixture
def restore_registries():
    """Docs may ``ebmkit.register`` components; forget them afterwards."""
    before = _local_names()
    yield
    for kind, names in _local_names().items():
        for name in names - before[kind]:
            registry.get_registry(kind).unregister(name)
    registry.invalidate_caches()


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_doc_examples_run(page, restore_registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    run_markdown(page)


def test_plugin_and_config_pages_have_runnable_examples():
    names = {p.name for p in PAGES}
    assert {"plugins.md", "config.md"} <= names


def test_code_block_extraction():
    text = textwrap.dedent(
        """\
        Intro.

        ```python
        x = 1
        ```

        ```python no-run
        raise SystemExit
        ```

        ```toml
        a = 1
        ```

        - a list item:

          ```python
          y = x + 1
          ```

        ````python
        s = '''
        ```
        '''
        ````
        """
    )
    blocks = code_blocks(text)
    assert [(b.language, b.options) for b in blocks] == [
        ("python", ()), ("python", ("no-run",)), ("toml", ()), ("python", ()), ("python", ()),
    ]
    runnable = runnable_python(text)
    assert [b.code for b in runnable][:2] == ["x = 1", "y = x + 1"]
    assert [b.line for b in runnable][:2] == [4, 18]
    namespace: dict = {}
    for block in runnable:
        exec(block.code, namespace)  # noqa: S102
    assert namespace["y"] == 2 and namespace["s"] == "\n```\n"
