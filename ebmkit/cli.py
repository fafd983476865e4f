"""The ``ebmkit`` command line.

Built-in commands inspect plugins and configs; hook plugins add more through
``ebmkit_cli_commands``. Every deliberate ebmkit error is shown as a message
(exit code 1; usage errors 2), never as a traceback.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import click

import ebmkit
from ebmkit import plugins as _plugins
from ebmkit._suggest import close_matches
from ebmkit.errors import ConfigError, EbmkitError, UnknownComponentError
from ebmkit.registry import KIND_GROUPS, get_registry, listing, normalize_dist

__all__ = ["cli", "main"]

_KIND_ORDER = {kind: i for i, kind in enumerate([*KIND_GROUPS, "hook"])}


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ebmkit.__version__, "-V", "--version", prog_name="ebmkit",
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


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    cells = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
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


# -- ebmkit plugins -----------------------------------------------------------------


def _all_rows(kind: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if kind != "hook":
        kinds = {kind: KIND_GROUPS[kind]} if kind else None
        rows += [attrs.asdict(r) for r in listing(kinds)]
    if kind in (None, "hook"):
        for h in _plugins.hook_plugins():
            rows.append(
                {
                    "kind": "hook",
                    "name": h.name,
                    "dist": h.dist,
                    "version": h.version,
                    "target": h.target,
                    "status": h.status,
                    "summary": h.summary,
                    "error": h.error,
                }
            )
    rows.sort(key=lambda r: (_KIND_ORDER.get(r["kind"], 99), r["name"], normalize_dist(r["dist"])))
    return rows


def _print_listing(as_json: bool, kind: str | None) -> None:
    rows = _all_rows(kind)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no plugins installed")
        return
    click.echo(
        _table(
            [
                (r["kind"], r["name"], r["dist"], _version_text(r["version"]), r["status"], r["summary"])
                for r in rows
            ],
            ["kind", "name", "distribution", "version", "status", "summary"],
        )
    )
    problems = [
        f"  {r['kind']} {r['name']} ({r['dist']} {_version_text(r['version'])}): {r['error']}"
        for r in rows
        if r["error"]
    ]
    conflicts: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["status"] == "conflict":
            conflicts.setdefault((r["kind"], r["name"]), []).append(f"{r['dist']}:{r['name']}")
    for (kind, name), qualified in conflicts.items():
        problems.append(
            f"  {kind} {name}: provided by several distributions; select one with "
            f"{' or '.join(qualified)}, or set EBMKIT_DISABLE_PLUGINS=<dist>"
        )
    if problems:
        click.echo("\nproblems:")
        click.echo("\n".join(problems))


_KIND_CHOICE = click.Choice([*KIND_GROUPS, "hook"])


@cli.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--kind", type=_KIND_CHOICE, default=None, help="Only this kind.")
@click.pass_context
def plugins_group(ctx: click.Context, as_json: bool, kind: str | None) -> None:
    """List, inspect and check plugins; alone, the same as `plugins list`."""
    if ctx.invoked_subcommand is None:
        _print_listing(as_json, kind)


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--kind", type=_KIND_CHOICE, default=None, help="Only this kind.")
def plugins_list(as_json: bool, kind: str | None) -> None:
    """Every component and hook plugin with distribution, version and status.

    Reads entry-point metadata only: component modules are not imported.
    """
    _print_listing(as_json, kind)


def _find_kind(name: str, kind: str | None) -> str:
    bare = name.partition(":")[2] if ":" in name else name
    if kind is not None:
        return kind
    kinds = [k for k in KIND_GROUPS if bare in get_registry(k).all_providers()]
    if len(kinds) > 1:
        raise _UsageFailure(
            f"{name!r} is a component of several kinds ({', '.join(kinds)}); pass --kind"
        )
    if not kinds:
        every = {n for k in KIND_GROUPS for n in get_registry(k).names()}
        hits = close_matches(bare, every)
        hint = f"; did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
        raise _UsageFailure(f"no component named {name!r}{hint} (see `ebmkit plugins`)")
    return kinds[0]


@plugins_group.command("show")
@click.argument("name")
@click.option("--kind", type=click.Choice(list(KIND_GROUPS)), default=None,
              help="The component's kind, when NAME is used by several.")
def plugins_show(name: str, kind: str | None) -> None:
    """Import one component and print its config fields with defaults and docs."""
    kind = _find_kind(name, kind)
    reg = get_registry(kind)
    try:
        provider = reg.resolve(name)
    except UnknownComponentError as exc:
        hint = f"; did you mean {' or '.join(repr(s) for s in exc.suggestions)}?" if exc.suggestions else ""
        raise _UsageFailure(f"no {kind} named {name!r}{hint} (see `ebmkit plugins --kind {kind}`)") from None
    spec = reg.load(provider)
    cfg = spec.config
    click.echo(f"{spec.name} ({kind})" + (f": {spec.summary}" if spec.summary else ""))
    click.echo(f"  provider: {provider.dist} {_version_text(provider.version)}".rstrip())
    click.echo(f"  target:   {provider.target}")
    click.echo(f"  config:   {cfg.__module__}.{cfg.__qualname__}")
    try:
        attrs.resolve_types(cfg)
    except Exception:  # noqa: BLE001 - unresolved annotations are shown as written
        pass
    fields = [a for a in attrs.fields(cfg) if a.init]
    if not fields:
        click.echo("\n(no configurable fields)")
        return
    docs = _attribute_docs(cfg)
    click.echo()
    click.echo(
        _table(
            [(a.alias or a.name, _type_name(a.type), _default_text(a), docs.get(a.name, "")) for a in fields],
            ["field", "type", "default", "description"],
        )
    )


def _check_lines() -> tuple[list[str], bool]:
    lines: list[str] = []
    failed = False
    for kind in KIND_GROUPS:
        reg = get_registry(kind)
        for name, providers in reg.all_providers(include_disabled=True).items():
            conflict = len([p for p in providers if not p.disabled]) > 1
            for p in providers:
                where = f"{kind} {name} ({p.dist} {_version_text(p.version)}".rstrip() + ")"
                if p.disabled:
                    lines.append(f"disabled  {where}")
                    continue
                try:
                    reg.load(p)
                except EbmkitError as exc:
                    failed = True
                    lines.append(f"FAILED    {where}: {' '.join(str(exc).split())}")
                    continue
                if conflict:
                    failed = True
                    others = ", ".join(q.qualified_name for q in providers if q is not p and not q.disabled)
                    lines.append(f"CONFLICT  {where}: also provided by {others}; select one with dist:name")
                else:
                    lines.append(f"ok        {where}")
    for h in _plugins.hook_plugins():
        where = f"hook {h.name} ({h.dist} {_version_text(h.version)}".rstrip() + ")"
        if h.status == "failed":
            failed = True
            lines.append(f"FAILED    {where}: {h.error}")
        elif h.status == "disabled":
            lines.append(f"disabled  {where}")
        else:
            lines.append(f"ok        {where}")
    return lines, failed


@plugins_group.command("check")
def plugins_check() -> None:
    """Import and validate every component and hook plugin; exit 1 on any problem."""
    lines, failed = _check_lines()
    for line in lines:
        click.echo(line)
    if failed:
        raise click.exceptions.Exit(1)


# -- ebmkit config ------------------------------------------------------------------


_SET_HELP = "Override a value, e.g. --set sampler.step_size=0.05 (repeatable)."


@cli.group("config")
def config_group() -> None:
    """Validate and resolve configuration files."""


def _load(file: str | None, sets: Iterable[str]) -> ebmkit.Config:
    return ebmkit.load_config(file, overrides=tuple(sets))


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def config_validate(file: str, sets: tuple[str, ...]) -> None:
    """Check FILE (TOML or JSON); print "ok" or every problem (exit code 1)."""
    try:
        _load(file, sets)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from None
    click.echo("ok")


@config_group.command("dump")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (.toml or .json) instead of printing TOML.")
def config_dump(file: str | None, sets: tuple[str, ...], output: str | None) -> None:
    """Print the fully resolved config of FILE (defaults filled in, providers recorded).

    Without FILE, dumps the default configuration.
    """
    config = _load(file, sets)
    text = ebmkit.dump_config(config, output)
    if output is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output}", err=True)


# -- ebmkit sample / evaluate / diagnose (reopen a run directory) --------------------
# JAX loads inside the commands only, so `ebmkit --help` stays fast.

_RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))


def _open_run(run_dir: str):  # noqa: ANN202 - ebmkit.run.Run, imported lazily
    from ebmkit.run import open_run

    return open_run(run_dir)


@cli.command("sample")
@_RUN_DIR
@click.option("-n", "--num", "num", type=click.IntRange(min=1), required=True, help="Number of samples.")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="MCMC steps per chain (default: the sampler's num_steps).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the chains.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="The .npz file to write; a .png picture goes next to it.")
def sample_command(run_dir: str, num: int, steps: int | None, seed: int, out: str) -> None:
    """Draw N fresh-chain samples from the latest checkpoint of RUN_DIR.

    Writes OUT (.npz with a `samples` array) and OUT with .png: a scatter over
    held-out data for 2-D data sets, an image grid for images.
    """
    from pathlib import Path

    import numpy as np

    out_path = Path(out)
    if out_path.suffix.lower() != ".npz":
        raise click.BadParameter(f"{out!r} must end in .npz (the picture goes next to it as .png)",
                                 param_hint="--out")
    run = _open_run(run_dir)
    samples = run.generate(num, n_steps=steps, seed=seed)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as fh:  # a file object: numpy must not rename the file
        np.savez(fh, samples=samples, step=np.int64(run.step), seed=np.int64(seed))
    click.echo(f"wrote {out_path} ({len(samples)} samples of shape {list(samples.shape[1:])}, step {run.step})")
    picture = out_path.with_suffix(".png")
    if run.plot_samples(samples, picture):
        click.echo(f"wrote {picture}")
    else:
        click.echo(f"no picture for samples of shape {list(samples.shape[1:])}", err=True)


@cli.command("evaluate")
@_RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="MCMC steps of the diagnostic chains.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the diagnostic chains.")
def evaluate_command(run_dir: str, as_json: bool, steps: int, seed: int) -> None:
    """Evaluate the latest checkpoint of RUN_DIR; also writes RUN_DIR/evaluation.json.

    2-D data sets get the grid NLL (and the KL gap where the entropy is known);
    every model gets the diagnostics of `ebmkit diagnose`.
    """
    from pathlib import Path

    from ebmkit.run import jsonable

    run = _open_run(run_dir)
    result = jsonable(run.evaluate(n_steps=steps, seed=seed))
    text = json.dumps(result, indent=2)
    target = Path(run_dir) / "evaluation.json"
    target.write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
        return
    rows = [(k, _number(v), section)
            for section in ("evaluation", "diagnostics") for k, v in result[section].items()]
    click.echo(f"{run_dir} at step {result['step']}\n")
    click.echo(_table(rows, ["metric", "value", "group"]))
    click.echo(f"\nwrote {target}", err=True)


def _number(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@cli.command("diagnose")
@_RUN_DIR
@click.option("-n", "--num", "num", type=click.IntRange(min=1), default=64, show_default=True,
              help="Number of fresh chains.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="MCMC steps per chain.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the chains.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw report as JSON.")
def diagnose_command(run_dir: str, num: int, steps: int, seed: int, as_json: bool) -> None:
    """Health check of the latest checkpoint of RUN_DIR.

    Energy gap (fake - real; should be > 0), MCMC energy decrease (> 0),
    replay-buffer usage and the range of fresh samples against the data bounds.
    """
    from ebmkit.run import diagnosis_notes, jsonable

    run = _open_run(run_dir)
    report = run.diagnose(n_samples=num, n_steps=steps, seed=seed)
    if as_json:
        click.echo(json.dumps(jsonable({"step": run.step, **report}), indent=2))
        return
    click.echo(f"{run_dir} at step {run.step}: {num} chains of {steps} steps\n")
    click.echo(_table(diagnosis_notes(report, run.dataset.bounds), ["quantity", "value", "verdict"]))


# -- the main job ---------------------------------------------------------------

from ebmkit._train_command import train_command  # noqa: E402 - after the group exists

cli.add_command(train_command)


if __name__ == "__main__":  # pragma: no cover
    main()
