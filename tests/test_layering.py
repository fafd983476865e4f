"""The package's layers, checked on the source (docs/architecture.md draws them).

* ``ebmkit`` is layered: a module may import modules of its own layer or of
  layers below it, never above (imports under ``if TYPE_CHECKING:`` are for
  readers and do not count). The façade ``ebmkit/__init__.py`` sits on top.
* ``ebmkit`` never imports ``ebmkit_builtins``: built-ins are reached only
  through entry points, like any third party's components.
* A built-in imports only public ``ebmkit`` modules and names, never another
  built-in module.
* No private module or name (``_x``) is imported from outside its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ebmkit.registry import parse_source

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "ebmkit"
BUILTINS = ROOT / "plugins" / "ebmkit_builtins"
CONTRIB = ROOT / "contrib"

#: The layers of ebmkit, bottom first; a module's layer is its top-level
#: part under ``ebmkit`` (``ebmkit.training.step`` is in ``training``).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "types", "suggest", "version"),
    ("config", "kinds", "registry", "hookspecs", "plugins"),
    ("data", "components", "sampling", "nn"),
    ("distributed", "evaluate"),
    ("training",),
    ("model", "viz"),
    ("assemble", "job", "run", "sweep", "search"),
    ("compat", "testing"),
    ("cli",),
)
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
FACADE = len(LAYERS)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, package: str) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import at run time (names for ``from``)."""
    tree = parse_source(path.read_text(encoding="utf-8"), str(path))
    out: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((child.lineno, alias.name, None) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                out.extend((child.lineno, base, alias.name) for alias in child.names)
            visit(child)

    visit(tree)
    return out


def _resolve(module: str, name: str | None) -> str:
    """``from ebmkit import kinds`` names the module ``ebmkit.kinds``."""
    if name is not None and module == "ebmkit" and (CORE / f"{name}.py").exists() | (CORE / name).is_dir():
        return f"ebmkit.{name}"
    return module


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts == ["ebmkit"]:
        return FACADE
    return RANK.get(parts[1], -1)


def _core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_never_climb_a_layer(path: Path):
    name = module_name(path, ROOT)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own = _layer(name)
    assert own >= 0, f"{name} is in no layer of LAYERS; add it there and to docs/architecture.md"
    problems = []
    for line, module, imported in imports(path, package):
        target = _resolve(module, imported)
        if target.split(".")[0] == "ebmkit_builtins":
            problems.append(f"line {line}: imports {target} (ebmkit never imports its built-ins)")
        if target.split(".")[0] != "ebmkit":
            continue
        layer = _layer(target)
        if layer > own and name != "ebmkit":
            problems.append(f"line {line}: {name} (layer {own}) imports {target} (layer {layer})")
    assert not problems, "\n".join(problems)


def _private(module: str, name: str | None) -> bool:
    parts = module.split(".")
    if any(p.startswith("_") and not p.startswith("__") for p in parts):
        return True
    return name is not None and name.startswith("_") and not name.startswith("__")


def _owner(module: str) -> str:
    """The package a private module or name belongs to (its first two parts)."""
    return ".".join(module.split(".")[:2])


def _all_source() -> list[tuple[Path, Path]]:
    files = [(p, ROOT) for p in _core_files()]
    files += [(p, ROOT / "plugins") for p in sorted(BUILTINS.rglob("*.py"))]
    for dist in sorted(CONTRIB.iterdir()) if CONTRIB.is_dir() else []:
        files += [(p, dist) for p in sorted(dist.rglob("*.py")) if "tests" not in p.parts]
    return files


@pytest.mark.parametrize("path,root", _all_source(), ids=lambda p: str(p.relative_to(ROOT)) if isinstance(p, Path) and p.suffix else "")
def test_no_private_module_or_name_crosses_a_package(path: Path, root: Path):
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    problems = []
    for line, module, imported in imports(path, package):
        target = _resolve(module, imported)
        if target.split(".")[0] != "ebmkit":
            continue
        if _private(target, imported if target == module else None) and _owner(target) != _owner(name):
            what = f"{target}.{imported}" if imported and target == module else target
            problems.append(f"line {line}: {name} uses the private {what}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", sorted(BUILTINS.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_builtins_import_no_other_builtin(path: Path):
    name = module_name(path, ROOT / "plugins")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    problems = [
        f"line {line}: {name} imports {module}"
        for line, module, _ in imports(path, package)
        if module.split(".")[0] == "ebmkit_builtins"
    ]
    assert not problems, "\n".join(problems)


def test_the_checks_see_violations(tmp_path: Path):
    """The checker is not vacuous: it finds a climbing, a private and a builtin import."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from ebmkit.model import EBM\nfrom ebmkit.model import _check\nimport ebmkit_builtins.samplers.hmc\n"
        "if TYPE_CHECKING:\n    from ebmkit.cli import cli\n",
        encoding="utf-8",
    )
    found = imports(bad, "ebmkit")
    assert [(m, n) for _, m, n in found] == [
        ("ebmkit.model", "EBM"), ("ebmkit.model", "_check"), ("ebmkit_builtins.samplers.hmc", None),
    ]
    assert _layer("ebmkit.model") > _layer("ebmkit.sampling.chain")
    assert _private("ebmkit.model", "_check") and not _private("ebmkit.model", "EBM")
