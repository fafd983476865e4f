"""``ebmkit plugins``: list, show and check installed components and hook plugins."""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from ebmkit import plugins as _plugins
from ebmkit.cli import (
    _attribute_docs,
    _default_text,
    _table,
    _type_name,
    _UsageFailure,
    _version_text,
    cli,
)
from ebmkit.errors import EbmkitError, UnknownComponentError
from ebmkit.registry import KIND_GROUPS, get_registry, listing, normalize_dist
from ebmkit.suggest import close_matches

_KIND_ORDER = {kind: i for i, kind in enumerate([*KIND_GROUPS, "hook"])}


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
