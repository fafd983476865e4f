"""Conformance checks a plugin author runs against their own components.

One suite, run over every member of a family (as optax runs one suite over all
its optimisers): the same checks apply to ebmkit's built-ins and to any
third-party plugin, with no special casing. The checks use only the contracts
in :mod:`ebmkit.types`, :mod:`ebmkit.kinds` and :mod:`ebmkit.data`, and build
every component through :meth:`~ebmkit.registry.ComponentSpec.create` with a
:class:`~ebmkit.types.BuildContext`, as a run does.

Three layers:

* **spec checks** (every kind): the :class:`~ebmkit.registry.ComponentSpec` is
  valid (kind, name, API version, config base, keyword-only fields, reserved
  names, ``needs``); ``build`` has the signature of its API version; its config
  class builds with defaults, or documents the fields it requires; the default
  config survives ``structure(unstructure(cfg)) == cfg``, also through TOML and
  JSON text; no other component of the kind shares the config class (a
  resolved config remembers its component by its class).
* **behaviour checks** (per kind): the built component honours its contract on
  small inputs, eagerly and under ``jax.jit``.
* **known-answer checks**, where a kind has a problem whose answer is known:

  - a sampler leaves a Gaussian target's mean and variance invariant, and its
    chains are a function of the key (same key, same chains; another key,
    other chains);
  - a sampler of binary data (``supports`` holding ``binary``) keeps its
    chains in {0, 1} and leaves a 4-bit Ising target's law invariant, all 16
    states enumerated, within a total-variation bound with a 10⁻⁶ false-alarm
    probability;
  - a loss recovers the mean and scale of a Gaussian from its samples when it
    trains a quadratic energy (a sign error sends the parameters away);
  - a loss that runs chains lets no gradient flow through them, and runs them
    on ``ctx.sample_energy_fn``, not on the trainable energy;
  - a loss that draws chain starts from the replay buffer writes back, into the
    slots it drew, the chains it ran, and returns the updated buffer state.

Use from a plugin's own tests::

    from ebmkit.testing import conformance_test

    test_conformance = conformance_test(dist="my-plugin-dist")

or call :func:`check_component` / :func:`check_spec` directly; both raise
:class:`ConformanceError` (an ``AssertionError``) listing every failure.

The suite's modules, one concept each:

* :mod:`~ebmkit.testing.conformance.recorder`: :class:`ConformanceError`,
  :class:`ConformanceReport` and the recorder the checks report to;
* :mod:`~ebmkit.testing.conformance.common`: the build context, sizes and
  tolerances the behaviour checks share;
* :mod:`~ebmkit.testing.conformance.specs`: the spec checks and round trips;
* :mod:`~ebmkit.testing.conformance.energy`,
  :mod:`~ebmkit.testing.conformance.sampler`,
  :mod:`~ebmkit.testing.conformance.discrete_sampler` (samplers of binary data),
  :mod:`~ebmkit.testing.conformance.buffer`,
  :mod:`~ebmkit.testing.conformance.loss` and
  :mod:`~ebmkit.testing.conformance.dataset`: the checks of each kind; a loss's
  known-answer checks are in :mod:`~ebmkit.testing.conformance.loss_chains`,
  :mod:`~ebmkit.testing.conformance.loss_write_back` and
  :mod:`~ebmkit.testing.conformance.loss_known_answer`;
* :mod:`~ebmkit.testing.conformance.runner`: :func:`check_spec` and
  :func:`check_component`;
* :mod:`~ebmkit.testing.conformance.suite`: :func:`iter_registered` and
  :func:`conformance_test`.
"""

# ``X as X`` re-exports the names of the known-answer checks, as reports list
# them (tests match on them): public, though not in __all__.
from ebmkit.testing.conformance.discrete_sampler import BINARY_INVARIANT as BINARY_INVARIANT
from ebmkit.testing.conformance.energy import DEFAULT_EVENT_SHAPES
from ebmkit.testing.conformance.loss import REQUIRED_LOSS_METRICS
from ebmkit.testing.conformance.loss_chains import (
    CHAINS_ON_SAMPLE_ENERGY as CHAINS_ON_SAMPLE_ENERGY,
)
from ebmkit.testing.conformance.loss_chains import NO_CHAIN_GRADIENT as NO_CHAIN_GRADIENT
from ebmkit.testing.conformance.loss_known_answer import KNOWN_ANSWER as KNOWN_ANSWER
from ebmkit.testing.conformance.loss_write_back import WRITES_BACK as WRITES_BACK
from ebmkit.testing.conformance.recorder import ConformanceError, ConformanceReport
from ebmkit.testing.conformance.runner import check_component, check_spec
from ebmkit.testing.conformance.sampler import INVARIANT as INVARIANT
from ebmkit.testing.conformance.sampler import REQUIRED_SAMPLER_INFO
from ebmkit.testing.conformance.suite import RegisteredComponent, conformance_test, iter_registered

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "RegisteredComponent",
    "DEFAULT_EVENT_SHAPES",
    "REQUIRED_LOSS_METRICS",
    "REQUIRED_SAMPLER_INFO",
    "check_component",
    "check_spec",
    "conformance_test",
    "iter_registered",
]
