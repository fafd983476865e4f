"""Likelihoods of energies over bits: exact sums, AIS, and Ising coupling errors.

``log Z = log Σ_x exp(−E(x))`` over ``x ∈ {0, 1}^d``:

* :func:`exact_log_z` sums all ``2^d`` states (``d <= 24``).
* :func:`block_gibbs_log_z` sums an RBM (:class:`~ebmkit.types.BlockGibbs`)
  over its smaller layer (at most 20 units) with the other summed out in
  closed form, so RBMs of any visible size with up to 20 hidden units (or up
  to 20 visible bits) are exact.
* :func:`rbm_ais_log_z` is annealed importance sampling for larger RBMs
  (Salakhutdinov & Murray 2008): from a product of Bernoullis ``p₀`` (the
  data's smoothed marginals) to the RBM, moving the chains by block Gibbs at
  each temperature, with the intermediate distributions

      f_β(x) = exp((1 − β) a·x + β b·x) Π_j (1 + exp(β (c + Wᵀx)_j)),

  where ``a`` are the base's logits (at ``β = 0`` the hidden units are free,
  so ``log Z₀ = Σ_i softplus(a_i) + H log 2``).

* :func:`binary_ais_log_z` is AIS for any energy on bits, along the
  geometric path ``f_β = p₀^{1−β} exp(−βE)`` with one single-site Gibbs sweep
  per temperature (``d`` energy evaluations per temperature: slower).

Forward AIS is a stochastic *lower* bound on ``log Z``; given exact samples of
the model, reverse AIS (``reverse_samples``) runs the same path backwards and
is a stochastic *upper* bound (Grosse et al. 2015), as in
:mod:`ebmkit.evaluate.ais`, whose :class:`~ebmkit.evaluate.AISResult` these
functions return (``step_sizes`` are zeros; ``acceptance_rate`` is the mean
fraction of bits that flipped per move).

:func:`coupling_rmse` compares an Ising model's couplings with the ``ising``
data set's ``true_couplings()``; :func:`evaluate_binary` is the standard
evaluation of a model of binary data (what ``ebmkit train`` reports).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.evaluate.ais import AISResult, _log_mean_exp_and_stderr, annealing_schedule
from ebmkit.sampling import noise_key
from ebmkit.types import Array, BlockGibbs, EnergyFn, PRNGKey

__all__ = [
    "MAX_EXACT_BITS",
    "MAX_EXACT_LAYER",
    "Couplings",
    "all_bit_strings",
    "exact_log_z",
    "block_gibbs_log_z",
    "bernoulli_base",
    "rbm_ais_log_z",
    "binary_ais_log_z",
    "coupling_rmse",
    "evaluate_binary",
]

#: Largest number of bits :func:`exact_log_z` enumerates.
MAX_EXACT_BITS = 24
#: Largest RBM layer :func:`block_gibbs_log_z` enumerates.
MAX_EXACT_LAYER = 20


@runtime_checkable
class Couplings(Protocol):
    """An energy with pairwise couplings ``J`` (symmetric ``[n, n]``, spin units)."""

    def couplings(self) -> Any: ...


def all_bit_strings(d: int) -> np.ndarray:
    """``float32[2^d, d]``: every bit string, in binary counting order (MSB first)."""
    if not 0 < d <= MAX_EXACT_BITS:
        raise ValueError(f"can enumerate 1 to {MAX_EXACT_BITS} bits, got {d}")
    codes = np.arange(2**d, dtype=np.int64)[:, None]
    return ((codes >> np.arange(d - 1, -1, -1)) & 1).astype(np.float32)


def _logsumexp_chunks(fn: Any, rows: np.ndarray, chunk: int) -> float:
    values = [np.asarray(fn(jnp.asarray(rows[i : i + chunk])), np.float64) for i in range(0, len(rows), chunk)]
    v = np.concatenate(values)
    m = np.max(v)
    return float(m + np.log(np.sum(np.exp(v - m))))


def exact_log_z(energy_fn: EnergyFn, event_shape: tuple[int, ...] | int, *, chunk: int = 1 << 14) -> float:
    """``log Σ_x exp(−E(x))`` over all ``2^d`` bit strings (``d <= 24``).

    Raises:
        ValueError: more than :data:`MAX_EXACT_BITS` bits.
    """
    shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(event_shape)
    d = math.prod(shape)
    if d > MAX_EXACT_BITS:
        raise ValueError(f"exact_log_z: {d} bits is too many to enumerate (at most {MAX_EXACT_BITS}); use AIS")
    rows = all_bit_strings(d)
    neg = jax.jit(lambda x: -energy_fn(x.reshape((x.shape[0], *shape))))
    return _logsumexp_chunks(neg, rows, chunk)


def _rbm_pieces(module: BlockGibbs, event_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """``(b[d], c[H])``: the visible and hidden biases (the logits at zero)."""
    b = module.visible_logits(jnp.zeros((1, module.num_hidden), jnp.float32)).reshape(-1)
    c = module.hidden_logits(jnp.zeros((1, *event_shape), jnp.float32))[0]
    return b, c


def block_gibbs_log_z(module: BlockGibbs, event_shape: tuple[int, ...], *, chunk: int = 1 << 12) -> float:
    """Exact ``log Z`` of an RBM-like energy by enumerating its smaller layer.

    Over hidden states (``H <= 20``)::

        log Z = log Σ_h exp(c·h + Σ_i softplus((b + W h)_i))

    or over visible states (``d <= 20``), ``log Σ_x exp(−E(x))``.

    Raises:
        ValueError: both layers have more than :data:`MAX_EXACT_LAYER` units.
    """
    if not isinstance(module, BlockGibbs):
        raise TypeError(f"block_gibbs_log_z needs a BlockGibbs energy, got {type(module).__name__}")
    event_shape = tuple(event_shape)
    d, h = math.prod(event_shape), int(module.num_hidden)
    if min(d, h) > MAX_EXACT_LAYER:
        raise ValueError(
            f"block_gibbs_log_z: both layers are larger than {MAX_EXACT_LAYER} units "
            f"({d} visible, {h} hidden); use rbm_ais_log_z"
        )
    if d <= h:
        return exact_log_z(module, event_shape, chunk=chunk)
    _, c = _rbm_pieces(module, event_shape)

    @jax.jit
    def neg_free(hidden):
        return hidden @ c + jnp.sum(jax.nn.softplus(module.visible_logits(hidden).reshape(hidden.shape[0], -1)), -1)

    return _logsumexp_chunks(neg_free, all_bit_strings(h), chunk)


def bernoulli_base(data: Any, *, smoothing: float = 1.0) -> np.ndarray:
    """Per-bit probabilities ``[*event]`` of a product of Bernoullis fitted to
    ``data[n, *event]``, with ``smoothing`` pseudo-counts of each value."""
    x = np.asarray(data, np.float64)
    return ((x.sum(axis=0) + smoothing) / (len(x) + 2.0 * smoothing)).astype(np.float32)


def _base_probs(base_probs: Any, event_shape: tuple[int, ...]) -> np.ndarray:
    if base_probs is None:
        return np.full(event_shape, 0.5, np.float32)
    p = np.broadcast_to(np.asarray(base_probs, np.float32), event_shape)
    if not np.all((p > 0) & (p < 1)):
        raise ValueError("base_probs must lie strictly between 0 and 1 (smooth them, see bernoulli_base)")
    return np.array(p)


def _finish(direction: str, log_w: Any, flips: Any, betas: np.ndarray, log_z_base: float) -> AISResult:
    log_w = np.asarray(log_w, np.float64)
    finite = np.isfinite(log_w)
    if not np.any(finite):
        raise FloatingPointError(f"AIS ({direction}): every chain's log-weight is non-finite")
    lme, stderr, ess = _log_mean_exp_and_stderr(log_w[finite])
    return AISResult(
        log_z=float(log_z_base + lme if direction == "forward" else log_z_base - lme),
        stderr=stderr,
        log_weights=log_w,
        log_z_base=log_z_base,
        effective_sample_size=ess,
        acceptance_rate=float(np.mean(np.asarray(flips))),
        betas=np.asarray(betas, np.float64),
        step_sizes=np.zeros_like(betas, dtype=np.float64),
        num_non_finite=int(np.sum(~finite)),
        direction=direction,
    )


def _betas(num_temperatures: int, schedule: Any) -> np.ndarray:
    if isinstance(schedule, str):
        return annealing_schedule(num_temperatures, schedule)
    betas = np.asarray(schedule, np.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("an explicit schedule must be increasing, start at 0.0 and end at 1.0")
    return betas


def _annealer(log_f: Any, move: Any) -> Any:
    """The compiled run ``(key, x0, path) -> (log_w, flips)`` along ``path``
    (betas in travel order): at each step the weight, then a move. One
    compilation serves the forward and the reverse run (the path is traced)."""

    @jax.jit
    def run(key, x, path):
        keys = jax.random.split(key, path.shape[0] - 2)

        def body(carry, inputs):
            x, log_w = carry
            k, beta_prev, beta = inputs
            log_w = log_w + log_f(x, beta) - log_f(x, beta_prev)
            new = move(k, x, beta)
            flips = jnp.mean(jnp.abs(new - x).reshape(x.shape[0], -1))
            return (new, log_w), flips

        init = (x, jnp.zeros(x.shape[:1], jnp.float32))
        (x, log_w), flips = jax.lax.scan(body, init, (keys, path[:-2], path[1:-1]))
        log_w = log_w + log_f(x, path[-1]) - log_f(x, path[-2])
        return log_w, flips

    return lambda key, x, path: run(key, x, jnp.asarray(path, jnp.float32))


def _forward_and_reverse(
    run: Any, rng_key: PRNGKey, x0: Array, reverse_samples: Any, shape: tuple[int, ...], betas: np.ndarray,
    log_z_base: float,
) -> AISResult:
    k1, k2 = jax.random.split(rng_key)
    log_w, flips = run(k1, x0.reshape((-1, *shape)), betas)
    result = _finish("forward", log_w, flips, betas, log_z_base)
    if reverse_samples is not None:
        xr = jnp.asarray(reverse_samples, jnp.float32).reshape((-1, *shape))
        log_w, flips = run(k2, xr, betas[::-1].copy())
        result = result._replace(reverse=_finish("reverse", log_w, flips, betas, log_z_base))
    return result


def rbm_ais_log_z(
    rng_key: PRNGKey,
    module: BlockGibbs,
    event_shape: tuple[int, ...],
    *,
    base_probs: Any = None,
    num_chains: int = 100,
    num_temperatures: int = 1000,
    schedule: str | Any = "linear",
    reverse_samples: Any = None,
) -> AISResult:
    """``log Z`` of an RBM-like energy by AIS with block-Gibbs moves.

    Args:
        rng_key: a ``jax.random.key``.
        module: a :class:`~ebmkit.types.BlockGibbs` energy (e.g. the ``rbm``).
        event_shape: the shape of one visible sample.
        base_probs: ``p₀``'s per-bit probabilities (e.g. :func:`bernoulli_base`
            of the training data; default 1/2).
        num_chains: annealing chains.
        num_temperatures: annealing steps ``T``.
        schedule: ``"linear"``, ``"sigmoid"`` or explicit betas from 0 to 1.
        reverse_samples: exact samples of the RBM ``[N, *event]``: also run
            reverse AIS (an upper bound), attached as ``result.reverse``.

    Returns:
        An :class:`~ebmkit.evaluate.AISResult` (forward: a stochastic lower bound).
    """
    event_shape = tuple(event_shape)
    probs = _base_probs(base_probs, event_shape).reshape(-1)
    a = jnp.asarray(np.log(probs) - np.log1p(-probs))
    # At β = 0 the hidden units are free: Z₀ = Π_i (1 + e^{a_i}) · 2^H.
    log_z_base = float(np.sum(np.logaddexp(0.0, np.asarray(a, np.float64))) + module.num_hidden * math.log(2.0))
    b, c = _rbm_pieces(module, event_shape)

    def log_f(x, beta):
        flat = x.reshape(x.shape[0], -1)
        pre = module.hidden_logits(x)
        return flat @ ((1.0 - beta) * a + beta * b) + jnp.sum(jax.nn.softplus(beta * pre), axis=-1)

    def move(key, x, beta):
        # Philox bits: Threefry inside a scan costs seconds of XLA compilation on CPU.
        kh, kv = jax.random.split(noise_key(key, "philox4x32"))
        h = jax.random.bernoulli(kh, jax.nn.sigmoid(beta * module.hidden_logits(x))).astype(jnp.float32)
        wh = module.visible_logits(h).reshape(x.shape[0], -1) - b
        logits = (1.0 - beta) * a + beta * (b + wh)
        return jax.random.bernoulli(kv, jax.nn.sigmoid(logits)).astype(jnp.float32).reshape(x.shape)

    betas = _betas(num_temperatures, schedule)
    k0, k1 = jax.random.split(rng_key)
    x0 = jax.random.bernoulli(k0, jnp.asarray(probs), (int(num_chains), probs.size)).astype(jnp.float32)
    return _forward_and_reverse(_annealer(log_f, move), k1, x0, reverse_samples, event_shape, betas, log_z_base)


def binary_ais_log_z(
    rng_key: PRNGKey,
    energy_fn: EnergyFn,
    event_shape: tuple[int, ...] | int,
    *,
    base_probs: Any = None,
    num_chains: int = 64,
    num_temperatures: int = 200,
    schedule: str | Any = "sigmoid",
    reverse_samples: Any = None,
) -> AISResult:
    """``log Z`` of any energy on bits by AIS with single-site Gibbs sweeps.

    The path is geometric, ``f_β(x) = p₀(x)^{1−β} exp(−β E(x))``, from the
    product of Bernoullis ``p₀`` (``base_probs``, default 1/2 per bit;
    ``log Z₀ = 0``); each temperature moves every chain by one systematic
    sweep of heat-bath updates of ``f_β``, which costs ``d`` batched energy
    evaluations. Arguments as in :func:`rbm_ais_log_z`.
    """
    shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(event_shape)
    d = math.prod(shape)
    probs = _base_probs(base_probs, shape).reshape(-1)
    log_p, log_q = jnp.asarray(np.log(probs)), jnp.asarray(np.log1p(-probs))

    def log_f(x, beta, energy=None):
        flat = x.reshape(x.shape[0], -1)
        e = energy_fn(x) if energy is None else energy
        return (1.0 - beta) * (flat @ log_p + (1.0 - flat) @ log_q) - beta * e

    def move(key, x, beta):
        coins = jax.random.uniform(noise_key(key, "philox4x32"), (d, x.shape[0]))

        def update(i, carry):
            flat, cur = carry
            proposal = flat.at[:, i].set(1.0 - flat[:, i])
            new = log_f(proposal, beta, energy_fn(proposal.reshape(x.shape)))
            take = (coins[i] < jax.nn.sigmoid(new - cur)) & jnp.isfinite(new)
            return jnp.where(take[:, None], proposal, flat), jnp.where(take, new, cur)

        flat, _ = jax.lax.fori_loop(0, d, update, (x.reshape(x.shape[0], d), log_f(x, beta)))
        return flat.reshape(x.shape)

    betas = _betas(num_temperatures, schedule)
    k0, k1 = jax.random.split(rng_key)
    x0 = jax.random.bernoulli(k0, jnp.asarray(probs), (int(num_chains), d)).astype(jnp.float32)
    return _forward_and_reverse(_annealer(log_f, move), k1, x0, reverse_samples, shape, betas, 0.0)


def coupling_rmse(learned: Any, true: Any) -> dict[str, float]:
    """Root-mean-square error of couplings over the pairs ``i < j``.

    Args:
        learned: the model's symmetric ``[n, n]`` couplings (spin units).
        true: the true ones, same shape and units.

    Returns:
        ``{"coupling_rmse", "coupling_log_rmse"}`` (the natural log of the first).
    """
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    if learned.shape != true.shape or learned.ndim != 2 or learned.shape[0] != learned.shape[1]:
        raise ValueError(f"coupling_rmse: need two [n, n] matrices of one shape, got {learned.shape} and {true.shape}")
    upper = np.triu_indices(learned.shape[0], k=1)
    rmse = float(np.sqrt(np.mean((learned[upper] - true[upper]) ** 2)))
    return {"coupling_rmse": rmse, "coupling_log_rmse": math.log(rmse) if rmse > 0 else -math.inf}


def evaluate_binary(
    energy_fn: EnergyFn,
    dataset: Any,
    *,
    energy_module: Any = None,
    n_test: int | None = None,
    seed: int = 0,
    ais_temperatures: int | None = None,
) -> dict[str, float]:
    """The standard evaluation of a model of binary data.

    The mean negative log-likelihood of the held-out split, in nats per
    example: ``nll = mean E(x) + log Z`` (and ``log_likelihood = −nll``).
    ``log Z`` is exact (``nll_exact = 1``) for an RBM with a layer of at most
    20 units and for any energy on at most 20 bits; otherwise it is forward
    AIS from the training data's marginals (``nll_exact = 0``, with
    ``log_z_stderr``): block-Gibbs AIS with 1,000 temperatures for an RBM,
    single-site AIS with ``ais_temperatures`` (default: 20,000 site updates in
    all, between 20 and 500 temperatures) for other energies. Forward AIS
    underestimates ``log Z`` in expectation, so an AIS ``nll`` is optimistic.

    With an energy that has :class:`Couplings` and a data set with
    ``true_couplings()``, also :func:`coupling_rmse`.
    """
    shape = tuple(dataset.event_shape)
    d = math.prod(shape)
    test = np.asarray(dataset.held_out(n_test), np.float32)
    key = jax.random.key(seed)
    base = bernoulli_base(dataset.sample(np.random.default_rng(seed), 5000))
    out: dict[str, float] = {}
    if isinstance(energy_module, BlockGibbs) and min(d, int(energy_module.num_hidden)) <= MAX_EXACT_LAYER:
        log_z, stderr, exact = block_gibbs_log_z(energy_module, shape), 0.0, True
    elif d <= MAX_EXACT_LAYER:
        log_z, stderr, exact = exact_log_z(energy_fn, shape), 0.0, True
    elif isinstance(energy_module, BlockGibbs):
        result = rbm_ais_log_z(key, energy_module, shape, base_probs=base)
        log_z, stderr, exact = result.log_z, result.stderr, False
    else:
        temps = ais_temperatures or int(min(500, max(20, 20000 // d)))
        result = binary_ais_log_z(key, energy_fn, shape, base_probs=base, num_temperatures=temps)
        log_z, stderr, exact = result.log_z, result.stderr, False
        out["ais_temperatures"] = float(temps)
    energies = np.concatenate(
        [np.asarray(energy_fn(jnp.asarray(test[i : i + 1024])), np.float64) for i in range(0, len(test), 1024)]
    )
    nll = float(np.mean(energies) + log_z)
    out.update({"nll": nll, "log_likelihood": -nll, "log_z": float(log_z), "log_z_stderr": float(stderr),
                "nll_exact": float(exact)})
    true = getattr(dataset, "true_couplings", None)
    if callable(true) and isinstance(energy_module, Couplings):
        out.update(coupling_rmse(energy_module.couplings(), true()))
    return out
