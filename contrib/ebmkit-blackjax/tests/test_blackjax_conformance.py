"""ebmkit's conformance suite over this distribution's four samplers."""

from ebmkit.testing import conformance_test

# The same suite ebmkit runs over its built-ins, restricted to this distribution.
test_conformance = conformance_test(dist="ebmkit-blackjax")
