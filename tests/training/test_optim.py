"""Optimisers by name, and the learning rate kept in the optimiser state."""

from __future__ import annotations

import jax.numpy as jnp
import optax
import pytest

from ebmkit.config.schema import OPTIMIZER_NAMES
from ebmkit.training.optim import OPTIMIZERS, get_learning_rate, make_optimizer, set_learning_rate


def test_config_names_match_the_optimizer_table():
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_name_builds_and_steps(name):
    params = {"w": jnp.ones(3)}
    tx = make_optimizer(name, 1e-2, max_grad_norm=1.0, weight_decay=1e-4)
    state = tx.init(params)
    updates, _ = tx.update({"w": jnp.ones(3)}, state, params)
    assert updates["w"].shape == (3,)
    assert get_learning_rate(state) == pytest.approx(1e-2)


def test_learning_rate_can_be_lowered_without_rebuilding():
    params = {"w": jnp.ones(2)}
    tx = make_optimizer("sgd", 0.1)
    state = set_learning_rate(tx.init(params), 0.05)
    updates, _ = tx.update({"w": jnp.ones(2)}, state, params)
    assert float(updates["w"][0]) == pytest.approx(-0.05)


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="did you mean .*'adam'"):
        make_optimizer("adma")


def test_an_optax_object_passes_through_but_has_no_learning_rate_to_lower():
    tx = make_optimizer(optax.sgd(0.1))
    state = tx.init({"w": jnp.ones(2)})
    assert get_learning_rate(state) is None
    with pytest.raises(ValueError, match="no learning rate"):
        set_learning_rate(state, 0.01)
