"""The ``ebmkit`` command line.

Built-in commands inspect plugins and configs; hook plugins add more through
``ebmkit_cli_commands``. Every deliberate ebmkit error is shown as a message
(exit code 1; usage errors 2), never as a traceback.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import click

from ebmkit import plugins as _plugins
from ebmkit.errors import EbmkitError
from ebmkit.version import __version__

__all__ = ["cli", "main"]

class _UsageFailure(click.ClickException):
    """A one-line usage error (exit code 2) without click's usage banner."""

    exit_code = 2


class _Group(click.Group):
    """The top-level group: loads plugin commands and renders ebmkit errors."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._plugin_pm: object | None = None
        self._plugin_commands: set[str] = set()

    def load_plugin_commands(self) -> None:
        """Let hook plugins add commands (once per plugin manager)."""
        pm = _plugins.get_plugin_manager()
        if pm is self._plugin_pm:
            return
        for name in self._plugin_commands:  # added by a previous manager (tests)
            self.commands.pop(name, None)
        self._plugin_commands = set()
        self._plugin_pm = pm
        for impl in pm.hook.ebmkit_cli_commands.get_hookimpls():
            before = dict(self.commands)
            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            try:
                pm.subset_hook_caller("ebmkit_cli_commands", others)(cli=self)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the CLI
                self._restore(before)
                dist, version, target = _plugins.plugin_origin(impl.plugin)
                warnings.warn(
                    f"ebmkit plugin {dist} {version or ''} ({target}) failed to add commands: "
                    f"{type(exc).__name__}: {exc}",
                    _plugins.EbmkitPluginWarning,
                    stacklevel=2,
                )
                continue
            replaced = [n for n in before if self.commands.get(n) is not before[n]]
            if replaced:
                dist, version, target = _plugins.plugin_origin(impl.plugin)
                warnings.warn(
                    f"ebmkit plugin {dist} {version or ''} ({target}) tried to replace "
                    f"command(s) {', '.join(replaced)}; kept the originals",
                    _plugins.EbmkitPluginWarning,
                    stacklevel=2,
                )
                for n in replaced:
                    self.commands[n] = before[n]
            self._plugin_commands |= set(self.commands) - set(before)

    def _restore(self, before: dict[str, click.Command]) -> None:
        self.commands.clear()
        self.commands.update(before)

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        first = next((w for w in words if not w.startswith("-")), None)
        # --version, --help and `plugins` never import hook plugins: they must
        # work, and list what is installed, even when a plugin is broken.
        if first is None or first == "plugins":
            return super().main(args, *a, **kw)
        try:
            self.load_plugin_commands()
        except EbmkitError as exc:  # EBMKIT_STRICT_PLUGINS=1 and a broken plugin
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        return super().main(args, *a, **kw)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EbmkitError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(1) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit,
                KeyboardInterrupt):
            raise
        except MemoryError:
            click.echo("Error: out of memory; lower the batch size, the network or the buffer", err=True)
            raise click.exceptions.Exit(1) from None
        except OSError as exc:
            # A full disk, a read-only directory, a missing file: the system's words, one line.
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
            raise click.exceptions.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - a bug, said in one line; the traceback on request
            if os.environ.get("EBMKIT_TRACEBACK"):
                raise
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc}\n"
                "This is a bug in ebmkit or in a plugin; set EBMKIT_TRACEBACK=1 to see where.",
                err=True,
            )
            raise click.exceptions.Exit(1) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ebmkit",
                      message="%(prog)s (ebmkit-jax) %(version)s")
def cli() -> None:
    """ebmkit: energy-based models on JAX, assembled from plugins."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``ebmkit = "ebmkit.cli:main"``)."""
    _show_plugin_warnings_plainly()
    cli.main(args=argv, prog_name="ebmkit")


def _show_plugin_warnings_plainly() -> None:
    """Print ebmkit plugin warnings as one line, without file and source line."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, _plugins.EbmkitPluginWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# -- formatting helpers -------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], *, width: int | None = None) -> str:
    """A plain-text table. With ``width`` (default: the terminal's, when
    stdout is one), the last column's cells wrap onto continuation lines so
    that no row is wider than the terminal; rows themselves never wrap."""
    import shutil
    import textwrap

    if width is None and sys.stdout.isatty():
        width = shutil.get_terminal_size((100, 24)).columns
    cells = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lead = sum(widths[:-1]) + 2 * (len(widths) - 1)
    if width is not None and lead + widths[-1] > width and width - lead >= 20:
        widths[-1] = width - lead
    lines = []
    for i, r in enumerate(cells):
        last = textwrap.wrap(r[-1], widths[-1]) or [""] if i and len(r[-1]) > widths[-1] else [r[-1]]
        lines.append("  ".join(c.ljust(w) for c, w in zip([*r[:-1], last[0]], widths, strict=True)).rstrip())
        lines += [(" " * lead + more).rstrip() for more in last[1:]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _attribute_docs(cls: type) -> dict[str, str]:
    """Field docs from the Google-style ``Attributes:`` sections of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(parse_attributes_section(klass.__dict__.get("__doc__") or ""))
    return docs


_ENTRY_RE = re.compile(r"^(?P<name>\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(?P<text>.*)$")


def parse_attributes_section(doc: str) -> dict[str, str]:
    """Parse ``name (type): text`` entries of a Google-style ``Attributes:`` section.

    Continuation lines (indented deeper than the entry) are joined with spaces;
    the section ends at the first non-blank line indented no deeper than the
    ``Attributes:`` header.
    """
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    header_indent: int | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if header_indent is None:
            if line.strip() == "Attributes:":
                header_indent = indent
            continue
        if indent <= header_indent:
            header_indent, entry_indent, current = None, None, None
            if line.strip() == "Attributes:":
                header_indent = indent
            continue
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY_RE.match(line.strip())
        if indent == entry_indent and match:
            current = match["name"]
            out[current] = match["text"].strip()
        elif current is not None:
            out[current] = f"{out[current]} {line.strip()}".strip()
    return {k: v.replace("``", "`") for k, v in out.items()}


def _type_name(t: Any) -> str:
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "").replace("NoneType", "None")


def _toml_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _default_text(a: attrs.Attribute) -> str:
    default = a.default
    if default is attrs.NOTHING:
        return "(required)"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return "(computed)"
        try:
            return _toml_value(default.factory())
        except Exception:  # noqa: BLE001 - only for display
            return "(factory)"
    return _toml_value(default)


def _version_text(version: str | None) -> str:
    return version or ""


# -- the commands -----------------------------------------------------------------
# Each module adds its commands to ``cli`` when imported.

from ebmkit.cli import config as _config_commands  # noqa: E402,F401
from ebmkit.cli import plugins as _plugin_commands  # noqa: E402,F401
from ebmkit.cli import runs as _run_commands  # noqa: E402,F401
from ebmkit.cli.sweep import sweep_command  # noqa: E402
from ebmkit.cli.train import train_command  # noqa: E402

cli.add_command(train_command)
cli.add_command(sweep_command)


if __name__ == "__main__":  # pragma: no cover
    main()
