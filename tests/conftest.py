"""Shared fixtures (keep minimal; several people add tests here)."""

from __future__ import annotations

import pytest

import ebmkit.registry


@pytest.fixture
def fresh_registry():
    """Forget discovered entry points and loaded specs before and after the test."""
    ebmkit.registry.invalidate_caches()
    yield
    ebmkit.registry.invalidate_caches()
