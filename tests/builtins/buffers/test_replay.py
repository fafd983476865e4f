"""The built-in ``replay`` buffer."""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ebmkit.config as C
from ebmkit.errors import ConfigError
from ebmkit.registry import get_spec
from ebmkit.types import Buffer, BufferState, BuildContext

EVENT = (2,)
STORED = 100.0  # far outside every init distribution used here


def build(event_shape=EVENT, bounds=None, **fields):
    config = C.structure({"name": "replay", **fields}, C.BufferConfig)
    return get_spec("buffer", "replay").create(config, BuildContext(event_shape=event_shape, bounds=bounds))


def filled_state(buffer, key=0):
    state = buffer.init(jax.random.key(key), jnp.zeros(buffer.event_shape))
    slots = jnp.arange(buffer.capacity, dtype=jnp.int32)
    x = jnp.full((buffer.capacity, *buffer.event_shape), STORED)
    return buffer.update(state, x, slots)


def test_spec_and_protocol():
    from ebmkit_builtins.buffers.replay import ReplayBufferConfig

    spec = get_spec("buffer", "replay")
    assert spec.config is ReplayBufferConfig
    buffer = build(capacity=8)
    assert isinstance(buffer, Buffer)
    assert buffer.capacity == 8


def test_defaults():
    config = C.structure("replay", C.BufferConfig)
    assert (config.capacity, config.reinit_prob, config.init, config.init_std) == (10000, 0.05, "uniform", 1.0)
    assert config.init_low is None and config.init_high is None


def test_init_keeps_capacity_and_marks_nothing_filled():
    buffer = build(event_shape=(3, 3, 1), capacity=16)
    state = buffer.init(jax.random.key(0), jnp.zeros((3, 3, 1)))
    assert isinstance(state, BufferState)
    assert state.data.shape == (16, 3, 3, 1)
    assert state.data.dtype == jnp.float32
    assert state.filled.shape == (16,) and state.filled.dtype == jnp.bool_
    assert not bool(state.filled.any())


def test_init_takes_a_batch_example_and_keeps_float_dtype():
    buffer = build(capacity=4)
    state = buffer.init(jax.random.key(0), jnp.zeros((7, 2), jnp.bfloat16))
    assert state.data.shape == (4, 2) and state.data.dtype == jnp.bfloat16
    assert buffer.init(jax.random.key(0), jnp.zeros(2, jnp.int32)).data.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"\(3,\)"):
        buffer.init(jax.random.key(0), jnp.zeros(3))


def test_after_init_every_draw_is_fresh():
    # reinit_prob 0: only the never-written rule can restart a chain.
    buffer = build(capacity=64, reinit_prob=0.0, init="uniform", init_low=10.0, init_high=11.0)
    state = buffer.init(jax.random.key(0), jnp.zeros(EVENT))
    state = state._replace(data=jnp.full_like(state.data, STORED))  # what a stale read would return
    x0, slots = buffer.sample(jax.random.key(1), state, 32)
    assert x0.shape == (32, *EVENT)
    assert bool(jnp.all((x0 >= 10.0) & (x0 < 11.0)))
    assert slots.dtype == jnp.int32


def test_update_writes_and_marks_slots():
    buffer = build(capacity=8)
    state = buffer.init(jax.random.key(0), jnp.zeros(EVENT))
    slots = jnp.array([1, 5], dtype=jnp.int32)
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    state = buffer.update(state, x, slots)
    np.testing.assert_array_equal(state.data[slots], x)
    np.testing.assert_array_equal(state.filled, np.isin(np.arange(8), [1, 5]))


def test_filled_buffer_returns_stored_values_except_reinit_fraction():
    reinit_prob = 0.2
    buffer = build(capacity=500, reinit_prob=reinit_prob)
    state = filled_state(buffer)
    sample = jax.jit(buffer.sample, static_argnums=2)
    draws = [sample(key, state, 500)[0] for key in jax.random.split(jax.random.key(3), 20)]
    x0 = jnp.concatenate(draws)  # 10,000 draws
    stored = jnp.all(x0 == STORED, axis=-1)
    fresh = jnp.all((x0 >= -1.0) & (x0 <= 1.0), axis=-1)
    assert bool(jnp.all(stored | fresh)), "a draw is either the stored chain or a fresh init draw"
    # Binomial(10000, 0.2): sd 0.004; 0.015 is ~4 sd.
    assert abs(float(fresh.mean()) - reinit_prob) < 0.015


def test_reinit_prob_zero_and_one():
    never = build(capacity=50, reinit_prob=0.0)
    x0, _ = never.sample(jax.random.key(0), filled_state(never), 50)
    assert bool(jnp.all(x0 == STORED))
    always = build(capacity=50, reinit_prob=1.0)
    x0, _ = always.sample(jax.random.key(0), filled_state(always), 50)
    assert not bool(jnp.any(x0 == STORED))


def test_partly_filled_buffer_restarts_exactly_the_unwritten_slots():
    buffer = build(capacity=20, reinit_prob=0.0)
    state = buffer.init(jax.random.key(0), jnp.zeros(EVENT))
    written = jnp.arange(0, 20, 2, dtype=jnp.int32)
    state = buffer.update(state, jnp.full((10, 2), STORED), written)
    x0, slots = buffer.sample(jax.random.key(1), state, 20)
    from_store = np.asarray(jnp.all(x0 == STORED, axis=-1))
    np.testing.assert_array_equal(from_store, np.asarray(slots) % 2 == 0)


def test_slots_are_in_range_and_distinct():
    buffer = build(capacity=30)
    state = filled_state(buffer)
    for key in jax.random.split(jax.random.key(0), 5):
        _, slots = buffer.sample(key, state, 30)
        s = np.asarray(slots)
        assert s.min() >= 0 and s.max() < 30
        assert len(set(s.tolist())) == 30


def test_slots_cover_the_buffer_uniformly():
    buffer = build(capacity=10)
    state = filled_state(buffer)
    sample = jax.jit(buffer.sample, static_argnums=2)
    slots = np.concatenate([np.asarray(sample(k, state, 3)[1]) for k in jax.random.split(jax.random.key(0), 400)])
    counts = np.bincount(slots, minlength=10) / len(slots)
    # 1,200 draws, expected 0.1 each, sd ~0.009.
    np.testing.assert_allclose(counts, 0.1, atol=0.035)


def test_distinct_slots_draws_each_slot_and_each_pair_as_often_as_it_should():
    from ebmkit_builtins.buffers.replay import distinct_slots

    draw = jax.jit(jax.vmap(lambda k: distinct_slots(k, 10, 3)))
    slots = np.asarray(draw(jax.random.split(jax.random.key(0), 20_000)))
    assert slots.dtype == np.int32 and slots.min() >= 0 and slots.max() < 10
    assert all(len(set(row)) == 3 for row in slots.tolist())
    # Each slot with probability n / capacity = 0.3 per draw (sd 0.0032 here).
    np.testing.assert_allclose(np.bincount(slots.ravel(), minlength=10) / len(slots), 0.3, atol=0.015)
    # Strata of one slot each (n = capacity): every slot, in a rotated order.
    full = np.asarray(distinct_slots(jax.random.key(1), 7, 7))
    assert sorted(full.tolist()) == list(range(7))
    # Strata are static numpy constants: no int32 overflow of i * capacity.
    big = np.asarray(jax.jit(lambda k: distinct_slots(k, 3_000_000, 4096))(jax.random.key(2)))
    assert len(set(big.tolist())) == 4096 and big.min() >= 0 and big.max() < 3_000_000
    with pytest.raises(ValueError, match="n <= capacity"):
        distinct_slots(jax.random.key(0), 5, 6)


def test_everything_jits_and_the_state_holds_only_concrete_arrays():
    buffer = build(capacity=16, reinit_prob=0.5)
    init = jax.jit(buffer.init)
    sample = jax.jit(buffer.sample, static_argnames="n")
    update = jax.jit(buffer.update)
    fresh = jax.jit(buffer.fresh, static_argnums=1)

    state = init(jax.random.key(0), jnp.zeros(EVENT))
    x0, slots = sample(jax.random.key(1), state, n=8)
    state = update(state, x0 + 1.0, slots)
    assert fresh(jax.random.key(2), 5).shape == (5, *EVENT)

    @jax.jit
    def round_trip(key, state):  # the whole PCD buffer cycle in one program
        x0, slots = buffer.sample(key, state, 8)
        return buffer.update(state, x0 * 0.5, slots)

    state = round_trip(jax.random.key(3), state)
    assert isinstance(state, BufferState)
    for leaf in state:
        assert isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
    # Nothing from those traces stayed on the buffer object either.
    for field in attrs.fields(type(buffer)):
        assert not isinstance(getattr(buffer, field.name), (jax.Array, jax.core.Tracer))
    assert int(state.filled.sum()) >= 8


def test_init_uniform_respects_data_bounds():
    buffer = build(capacity=2000, bounds=(0.0, 4.0))
    data = buffer.init(jax.random.key(0), jnp.zeros(EVENT)).data
    assert float(data.min()) >= 0.0 and float(data.max()) < 4.0
    assert abs(float(data.mean()) - 2.0) < 0.1


def test_init_bounds_per_dimension_and_config_override():
    buffer = build(capacity=1000, bounds=(jnp.array([0.0, 10.0]), jnp.array([1.0, 20.0])))
    x = buffer.fresh(jax.random.key(0), 1000)
    assert bool(jnp.all((x[:, 0] >= 0) & (x[:, 0] < 1) & (x[:, 1] >= 10) & (x[:, 1] < 20)))
    # A config bound wins over the data's; the other side still comes from the data.
    buffer = build(capacity=1000, bounds=(0.0, 4.0), init_low=3.0)
    x = buffer.fresh(jax.random.key(0), 1000)
    assert float(x.min()) >= 3.0 and float(x.max()) < 4.0


def test_init_defaults_to_minus_one_one_without_bounds():
    x = build(capacity=10).fresh(jax.random.key(0), 2000)
    assert float(x.min()) >= -1.0 and float(x.max()) < 1.0
    assert float(x.min()) < -0.9 and float(x.max()) > 0.9


def test_normal_init_has_the_configured_std():
    x = build(capacity=10, init="normal", init_std=0.5).fresh(jax.random.key(0), 5000)
    # 10,000 values: sd of the sample std ~0.0035.
    assert abs(float(x.std()) - 0.5) < 0.02
    assert abs(float(x.mean())) < 0.02


def test_n_larger_than_capacity_is_a_clear_error():
    buffer = build(capacity=4)
    state = buffer.init(jax.random.key(0), jnp.zeros(EVENT))
    with pytest.raises(ValueError, match=r"n=5 .*capacity=4"):
        buffer.sample(jax.random.key(0), state, 5)
    with pytest.raises(ValueError, match="capacity"):
        jax.jit(buffer.sample, static_argnums=2)(jax.random.key(0), state, 5)


def test_update_shape_mismatch_is_an_error():
    buffer = build(capacity=4)
    state = buffer.init(jax.random.key(0), jnp.zeros(EVENT))
    with pytest.raises(ValueError, match="slots"):
        buffer.update(state, jnp.zeros((2, 3)), jnp.array([0, 1]))


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"reinit_prob": 1.5}, "reinit_prob"),
        ({"init_std": 0.0}, "init_std"),
        ({"init": "gaussian"}, "init"),
    ],
)
def test_invalid_fields(fields, path):
    with pytest.raises(ConfigError) as info:
        C.structure({"name": "replay", **fields}, C.BufferConfig)
    assert any(p.path == path for p in info.value.problems), info.value


def test_low_must_be_below_high():
    with pytest.raises(ConfigError, match="init_low .* must be below init_high"):
        C.structure({"name": "replay", "init_low": 1.0, "init_high": 1.0}, C.BufferConfig)
    with pytest.raises(ConfigError, match="low < high"):
        build(bounds=(2.0, 1.0))


def test_config_round_trips():
    config = C.structure({"name": "replay", "capacity": 64, "init": "normal", "init_low": -2.0}, C.BufferConfig)
    assert C.structure(C.unstructure(config), C.BufferConfig) == config
