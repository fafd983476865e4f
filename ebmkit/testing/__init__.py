"""Tools for testing ebmkit components, built-in or third-party.

:mod:`ebmkit.testing.conformance` holds the conformance suite every registered
component must pass; a plugin's own test module needs one line::

    from ebmkit.testing import conformance_test

    test_conformance = conformance_test(dist="my-plugin-dist")
"""

from ebmkit.testing.conformance import (
    DEFAULT_EVENT_SHAPES,
    REQUIRED_LOSS_METRICS,
    REQUIRED_SAMPLER_INFO,
    ConformanceError,
    ConformanceReport,
    RegisteredComponent,
    check_component,
    check_spec,
    conformance_test,
    iter_registered,
)

__all__ = [
    "DEFAULT_EVENT_SHAPES",
    "REQUIRED_LOSS_METRICS",
    "REQUIRED_SAMPLER_INFO",
    "ConformanceError",
    "ConformanceReport",
    "RegisteredComponent",
    "check_component",
    "check_spec",
    "conformance_test",
    "iter_registered",
]
