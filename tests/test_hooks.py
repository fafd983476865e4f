"""Hook plugins (``ebmkit.plugins`` entry points), loaded from fake installed distributions."""

from __future__ import annotations

import sys
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner
from fakedist import make_dist

import ebmkit.hookspecs as hookspecs
import ebmkit.registry
from ebmkit.cli import cli
from ebmkit.errors import PluginLoadError
from ebmkit.plugins import (
    EbmkitPluginWarning,
    call_hook,
    get_plugin_manager,
    hook_names,
    hook_plugins,
    plugin_failures,
    register_plugin,
    reset_plugin_manager,
)

GOOD = """
    '''Records every step it sees.'''
    from ebmkit.hookspecs import hookimpl

    CALLS = []

    @hookimpl
    def ebmkit_step_end(step, metrics):
        CALLS.append((step, dict(metrics)))

    @hookimpl
    def ebmkit_run_end(error):
        CALLS.append(("end", error))
"""

IMPORT_ERROR = """
    raise RuntimeError("boom at import")
"""

MISSPELLED = """
    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_step_ned(step, metrics):
        pass
"""

BAD_SIGNATURE = """
    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_step_end(step, metrics, learning_rate):
        pass
"""

CLI_COMMAND = """
    import click
    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_cli_commands(cli):
        @cli.command("hello")
        @click.argument("who", default="world")
        def hello(who):
            '''Say hello from a plugin.'''
            click.echo(f"hello {who}")
"""

CLI_BROKEN = """
    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_cli_commands(cli):
        raise RuntimeError("cannot add commands")
"""

CLI_HIJACK = """
    import click
    from ebmkit.hookspecs import hookimpl

    @hookimpl
    def ebmkit_cli_commands(cli):
        @cli.command("plugins")
        def plugins():
            click.echo("hijacked")
"""

BROKEN = {
    "import": (IMPORT_ERROR, RuntimeError, "boom at import"),
    "misspelled": (MISSPELLED, Exception, "ebmkit_step_ned"),
    "signature": (BAD_SIGNATURE, pluggy.PluginValidationError, "learning_rate"),
}


class Plugins:
    """Installs fake distributions with one ``ebmkit.plugins`` entry point each."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.monkeypatch = monkeypatch

    def add(self, dist: str, source: str, version: str = "1.0") -> str:
        module = dist.replace("-", "_") + "_plugin"
        make_dist(
            self.root / dist, dist, version,
            {hookspecs.ENTRY_POINT_GROUP: {dist.removeprefix("fake-"): module}},
            {module: source},
        )
        self.monkeypatch.syspath_prepend(str(self.root / dist))
        return module

    def reload(self) -> None:
        ebmkit.registry.invalidate_caches()
        reset_plugin_manager()


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    monkeypatch.delenv("EBMKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("EBMKIT_DISABLE_PLUGINS", raising=False)
    env = Plugins(tmp_path, monkeypatch)
    env.reload()
    yield env
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]
    monkeypatch.undo()
    env.reload()


def rows_of(dist: str):
    return [r for r in hook_plugins() if r.dist == dist]


def test_good_plugin_is_called(plugins):
    module = plugins.add("fake-good", GOOD)
    plugins.reload()
    call_hook("ebmkit_step_end", step=10, metrics={"loss": 0.5})
    call_hook("ebmkit_run_end", config=None, run_dir=None, summary={}, error=None)
    assert sys.modules[module].CALLS == [(10, {"loss": 0.5}), ("end", None)]
    (row,) = rows_of("fake-good")
    assert (row.name, row.version, row.status, row.error) == ("good", "1.0", "loaded", None)
    assert row.summary == "Records every step it sees."


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_plugin_warns_is_recorded_and_others_still_work(plugins, kind):
    source, error_type, text = BROKEN[kind]
    plugins.add("fake-broken", source, version="0.3")
    good = plugins.add("fake-good", GOOD)
    plugins.reload()
    with pytest.warns(EbmkitPluginWarning, match=r"fake-broken 0\.3") as record:
        pm = get_plugin_manager()
    assert text in str(record[0].message)
    (failure,) = [f for f in plugin_failures() if f.dist == "fake-broken"]
    assert (failure.version, failure.target) == ("0.3", "fake_broken_plugin")
    assert isinstance(failure.error, error_type)
    assert text in str(failure.error)
    (row,) = rows_of("fake-broken")
    assert row.status == "failed" and text in row.error
    # Rejected means gone: no implementation of it is left behind.
    assert pm.get_plugin("fake-broken:broken") is None
    assert all(
        impl.plugin_name != "fake-broken:broken"
        for caller in vars(pm.hook).values()
        for impl in caller.get_hookimpls()
    )
    pm.check_pending()
    call_hook("ebmkit_step_end", step=1, metrics={"loss": 1.0})
    assert sys.modules[good].CALLS == [(1, {"loss": 1.0})]


def test_misspelled_hook_suggests_the_real_one(plugins):
    plugins.add("fake-typo", MISSPELLED)
    plugins.reload()
    with pytest.warns(EbmkitPluginWarning, match="did you mean 'ebmkit_step_end'"):
        get_plugin_manager()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_strict_mode_makes_broken_plugins_fatal(plugins, monkeypatch, kind):
    source, error_type, text = BROKEN[kind]
    plugins.add("fake-broken", source, version="0.3")
    plugins.reload()
    monkeypatch.setenv("EBMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match=r"fake-broken 0\.3") as info:
        get_plugin_manager()
    assert isinstance(info.value.__cause__, error_type)
    assert (info.value.dist, info.value.version, info.value.target) == (
        "fake-broken", "0.3", "fake_broken_plugin",
    )
    assert text in str(info.value)


def test_strict_mode_fails_the_cli_cleanly(plugins, monkeypatch):
    plugins.add("fake-broken", IMPORT_ERROR)
    plugins.reload()
    monkeypatch.setenv("EBMKIT_STRICT_PLUGINS", "1")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 1
    assert "boom at import" in result.output
    assert "Traceback" not in result.output


def test_disabled_distribution_is_not_imported(plugins, monkeypatch):
    module = plugins.add("fake-good", GOOD)
    plugins.add("fake-broken", IMPORT_ERROR)
    plugins.reload()
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "Fake_Good, fake-broken")
    monkeypatch.setenv("EBMKIT_STRICT_PLUGINS", "1")  # the broken one is never touched
    get_plugin_manager()
    assert module not in sys.modules
    assert [r.status for r in rows_of("fake-good")] == ["disabled"]
    assert [r.status for r in rows_of("fake-broken")] == ["disabled"]
    assert call_hook("ebmkit_step_end", step=1, metrics={}) == []


def test_plugin_adds_cli_command(plugins):
    plugins.add("fake-cli", CLI_COMMAND)
    plugins.reload()
    runner = CliRunner()
    # --help and --version never import hook plugins (they must work when one is broken) ...
    help_text = runner.invoke(cli, ["--help"])
    assert help_text.exit_code == 0 and "hello" not in help_text.output
    # ... a plugin's command is there when it is called.
    assert "Say hello from a plugin." in runner.invoke(cli, ["hello", "--help"]).output
    result = runner.invoke(cli, ["hello", "ebm"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello ebm\n"
    # A new plugin manager without the plugin takes its command away again.
    sys.path.remove(str(plugins.root / "fake-cli"))
    plugins.reload()
    assert runner.invoke(cli, ["hello"]).exit_code == 2


def test_broken_cli_plugin_does_not_stop_the_cli(plugins):
    plugins.add("fake-clibroken", CLI_BROKEN)
    plugins.add("fake-cli", CLI_COMMAND)
    plugins.add("fake-hijack", CLI_HIJACK)
    plugins.reload()
    runner = CliRunner()
    with pytest.warns(EbmkitPluginWarning) as record:
        result = runner.invoke(cli, ["hello"])
    assert result.exit_code == 0, result.output
    messages = " | ".join(str(w.message) for w in record)
    assert "fake-clibroken 1.0" in messages and "cannot add commands" in messages
    assert "fake-hijack 1.0" in messages and "replace" in messages
    listing = runner.invoke(cli, ["plugins", "--kind", "hook"])
    assert "hijacked" not in listing.output
    assert "fake-clibroken" in listing.output


def test_register_plugin_in_process_is_validated(plugins):
    calls = []

    class Recorder:
        @hookspecs.hookimpl
        def ebmkit_checkpoint_saved(self, step, path):
            calls.append((step, path))

    class Typo:
        @hookspecs.hookimpl
        def ebmkit_checkpoint_save(self, step, path):
            pass

    recorder = register_plugin(Recorder())
    try:
        call_hook("ebmkit_checkpoint_saved", step=3, path="ckpt/3")
        assert calls == [(3, "ckpt/3")]
        with pytest.raises(PluginLoadError, match="did you mean 'ebmkit_checkpoint_saved'"):
            register_plugin(Typo())
        get_plugin_manager().check_pending()  # the rejected one left nothing behind
    finally:
        get_plugin_manager().unregister(recorder)


def test_call_hook_rejects_unknown_names():
    with pytest.raises(ValueError, match="did you mean 'ebmkit_run_start'"):
        call_hook("ebmkit_run_strat", config=None, run_dir=None)


def test_every_hook_is_documented():
    assert hook_names() == [
        "ebmkit_checkpoint_saved",
        "ebmkit_cli_commands",
        "ebmkit_plot_saved",
        "ebmkit_run_end",
        "ebmkit_run_start",
        "ebmkit_step_end",
    ]
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "ebmkit_cli_commands" in docs
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Called" in doc, name
        assert "Args:" in doc, name
        assert "return values are ignored" in doc.lower(), name


def test_a_plugin_raising_in_a_step_hook_is_disabled_and_the_run_goes_on(plugins, tmp_path, monkeypatch):
    import ebmkit
    from ebmkit.plugins import EbmkitPluginWarning

    seen = []

    class Flaky:
        @hookspecs.hookimpl
        def ebmkit_step_end(self, step, metrics):
            seen.append(step)
            raise RuntimeError("the tracking server is down")

    flaky = register_plugin(Flaky())
    sets = ["energy.hidden_dims=[8]", "sampler.num_steps=2", "train.batch_size=16", "buffer.capacity=64",
            "train.steps=20", "train.log_every=5", "train.checkpoint_every=10"]
    try:
        with pytest.warns(EbmkitPluginWarning, match="raised in ebmkit_step_end .* disabled for the rest"):
            summary = ebmkit.train_job(None, overrides=sets, out=tmp_path / "run", plots=False)
        assert summary["steps"] == 20 and seen == [5]  # called once, then left out
        assert (tmp_path / "run" / "checkpoints" / "20").is_dir()
        monkeypatch.setenv("EBMKIT_STRICT_PLUGINS", "1")
        with pytest.raises(RuntimeError, match="tracking server"):
            ebmkit.train_job(None, overrides=sets, out=tmp_path / "strict", plots=False)
    finally:
        get_plugin_manager().unregister(flaky)


def test_plot_saved_is_called_for_each_plot_after_the_run_ends(plugins, tmp_path):
    import ebmkit

    calls = []

    class Recorder:
        @hookspecs.hookimpl
        def ebmkit_run_end(self, run_dir, error):
            calls.append(("run_end", run_dir, error))

        @hookspecs.hookimpl
        def ebmkit_plot_saved(self, run_dir, step, path):
            assert path.is_file() and path.parent == run_dir  # written completely before the call
            calls.append(("plot_saved", step, path.name))

    recorder = register_plugin(Recorder())
    sets = ["energy.hidden_dims=[8]", "sampler.num_steps=2", "train.batch_size=16", "buffer.capacity=64",
            "train.steps=10", "train.log_every=5"]
    try:
        summary = ebmkit.train_job(None, overrides=sets, out=tmp_path / "run")
    finally:
        get_plugin_manager().unregister(recorder)
    assert calls[0] == ("run_end", tmp_path / "run", None)
    assert calls[1:] == [("plot_saved", 10, name) for name in summary["plots"]]
    assert sorted(summary["plots"]) == ["curves.png", "energy.png", "samples.png"]
