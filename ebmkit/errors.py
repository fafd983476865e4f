"""The ebmkit error hierarchy.

Every error ebmkit raises on purpose derives from :class:`EbmkitError`. None of
them subclasses ``KeyError``: cattrs (and Python's own ``str(KeyError)``) render
those as a quoted key, which hides the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "EbmkitError",
    "EbmkitPluginWarning",
    "ShardingError",
    "CheckpointError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "RunError",
    "RunDirectoryError",
    "ClassifierWeightsError",
    "MetricError",
    "ConfigError",
    "ConfigProblem",
    "UnknownComponentError",
    "ComponentConflictError",
    "PluginLoadError",
    "InvalidComponentError",
]


class EbmkitError(Exception):
    """Base class of every error ebmkit raises deliberately."""


@attrs.frozen
class ConfigProblem:
    """One thing wrong with a configuration.

    Attributes:
        path: dotted path of the offending value, e.g. ``"sampler.step_size"``;
            empty for the top level.
        message: what is wrong.
        suggestion: what to do about it, or ``None``.
        source: the file the value came from, or ``None`` for dicts and keywords.
    """

    path: str
    message: str
    suggestion: str | None = None
    source: str | None = None

    def render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.message}"
        if self.suggestion:
            text += f" ({self.suggestion})"
        if self.source:
            text = f"{self.source}: {text}"
        return text

    def under(self, prefix: str) -> ConfigProblem:
        """The same problem, one level deeper in the tree."""
        path = f"{prefix}.{self.path}" if prefix and self.path else (prefix or self.path)
        return attrs.evolve(self, path=path)


class ConfigError(EbmkitError, ValueError):
    """A configuration is invalid. Lists every problem found, not just the first."""

    def __init__(self, problems: Iterable[ConfigProblem] | str, *, source: str | None = None):
        if isinstance(problems, str):
            problems = [ConfigProblem(path="", message=problems)]
        probs = [p if p.source or source is None else attrs.evolve(p, source=source) for p in problems]
        if not probs:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[ConfigProblem, ...] = tuple(probs)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid configuration: {self.problems[0].render()}"
        lines = [f"invalid configuration: {len(self.problems)} problems"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(
            [p if p.source else attrs.evolve(p, source=source) for p in self.problems]
        )


class _RegistryConfigError(ConfigError):
    """A registry lookup failure; also a ConfigError with one problem at ``path``."""

    def _init(self, message: str, problem_message: str, suggestion: str | None, path: str) -> None:
        self.message = message
        self.path = path
        self.problems = (ConfigProblem(path=path, message=problem_message, suggestion=suggestion),)
        text = f"{path}: {message}" if path else message
        EbmkitError.__init__(self, text)


class UnknownComponentError(_RegistryConfigError, LookupError):
    """No installed or registered component has the requested name."""

    def __init__(self, kind: str, name: str, known: Sequence[str], suggestions: Sequence[str],
                 *, path: str = ""):
        self.kind, self.name = kind, name
        self.known, self.suggestions = tuple(known), tuple(suggestions)
        hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}? " if suggestions else ""
        listing = ", ".join(known) if known else "none installed"
        self._init(
            f"unknown {kind} {name!r}; {hint}known {kind} components: {listing}",
            f"unknown {kind} {name!r}",
            (hint + f"known: {listing}").strip(),
            path,
        )

    def at(self, path: str) -> UnknownComponentError:
        return UnknownComponentError(self.kind, self.name, self.known, self.suggestions, path=path)


class ComponentConflictError(_RegistryConfigError):
    """Two or more providers offer the same component name.

    ebmkit never picks a winner silently: the user must qualify the name with the
    distribution (``"dist:name"``) or disable one provider.
    """

    def __init__(self, kind: str, name: str, providers: Sequence[object], *, path: str = ""):
        self.kind, self.name, self.providers = kind, name, tuple(providers)
        dists = [getattr(p, "dist", "?") for p in self.providers]
        qualified = " or ".join(repr(f"{d}:{name}") for d in dists)
        way_out = (
            f"choose one with a provider-qualified name ({qualified}) "
            f"or disable a provider with EBMKIT_DISABLE_PLUGINS=<dist>"
        )
        lines = [f"{kind} {name!r} is provided by {len(self.providers)} distributions:"]
        lines += [f"  - {p}" for p in self.providers]
        lines.append(way_out)
        self._init(
            "\n".join(lines),
            f"{kind} {name!r} is provided by " + ", ".join(str(p) for p in self.providers),
            way_out,
            path,
        )

    def at(self, path: str) -> ComponentConflictError:
        return ComponentConflictError(self.kind, self.name, self.providers, path=path)


class PluginLoadError(EbmkitError):
    """A plugin could not be imported or does not satisfy the plugin contract.

    The original exception, if any, is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, dist: str | None = None, version: str | None = None,
                 target: str | None = None):
        self.dist, self.version, self.target = dist, version, target
        super().__init__(message)


class InvalidComponentError(PluginLoadError):
    """A plugin imported fine but what it exports is not a valid ComponentSpec."""


class ShardingError(EbmkitError):
    """The run cannot be split over the requested devices as configured."""


class CheckpointError(EbmkitError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class TrainingDiverged(EbmkitError):
    """Training kept diverging after every allowed rollback."""


class RunError(EbmkitError):
    """A run directory is missing or does not hold a run."""


class RunDirectoryError(EbmkitError):
    """The output directory cannot be used as asked."""


class ClassifierWeightsError(EbmkitError, ValueError):
    """A feature classifier's weights file is missing, corrupt or does not fit."""


class MetricError(EbmkitError, ValueError):
    """The metric a sweep sorts or optimises by is in no run's ``summary.json``."""


class TrainingInterrupted(EbmkitError):
    """A run stopped on SIGINT or SIGTERM after saving a checkpoint.

    Attributes:
        step: the step of the checkpoint it saved.
        signum: the signal's number.
        run_dir: the run directory, or ``None``.
        exit_code: the conventional exit status (128 + the signal's number).
    """

    def __init__(self, message: str, *, step: int, signum: int, run_dir: object = None):
        super().__init__(message)
        self.step = step
        self.signum = signum
        self.run_dir = run_dir
        self.exit_code = 128 + int(signum)


class EbmkitPluginWarning(UserWarning):
    """A hook plugin was skipped because it failed to load or is invalid."""
