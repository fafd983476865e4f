"""Shared fixtures (keep minimal; several people add tests here)."""

from __future__ import annotations

import os

import pytest

import ebmkit.registry

# contrib/ebmkit-mlflow, once installed, would log every training run of the
# core suite to an MLflow store in the run's parent folder (about a second of
# CPU each, and folders the sweep tests do not expect). Its own tests, under
# contrib/, enable it. Set before any test loads the hook plugins.
_disabled = {d.strip() for d in os.environ.get("EBMKIT_DISABLE_PLUGINS", "").split(",") if d.strip()}
os.environ["EBMKIT_DISABLE_PLUGINS"] = ",".join(sorted(_disabled | {"ebmkit-mlflow"}))


@pytest.fixture
def fresh_registry():
    """Forget discovered entry points and loaded specs before and after the test."""
    ebmkit.registry.invalidate_caches()
    yield
    ebmkit.registry.invalidate_caches()
