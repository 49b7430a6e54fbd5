"""One ES generation (ask -> evaluate -> tell) as a pure function, and chunks of generations fused
under one jitted `lax.scan`, for any jittable fitness (the dream's, or a test's sphere), or run
in a host loop for a fitness that is not one program (`make_host_chunk_fn`).

Generation g of a run with key `key` uses `generation_keys(key, g)`: `fold_in(key, g)` split into
the ask, evaluate and tell keys, so chunking, interrupting and resuming do not change the result
(and the real-env loop, which asks and tells on the host, draws the same keys).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dreamjax.errors import ConfigError
from dreamjax.es.strategies import strategy_sigma

Evaluate = Callable[[jax.Array, Any, Any], tuple[jax.Array, dict]]
"""evaluate(key, population (P, ...) pytree, args) -> (fitness (P,), aux metrics dict of (P,))."""


def generation_keys(key: jax.Array, g: jax.Array | int) -> jax.Array:
    """(3,) keys of generation g: ask, evaluate, tell."""
    return jax.random.split(jax.random.fold_in(key, g), 3)


def es_generation(
    key: jax.Array, strategy: Any, es_state: Any, es_params: Any, evaluate: Evaluate, args: Any
) -> tuple[Any, dict]:
    """ask -> evaluate -> tell with the (3,) keys `key` split into. Returns the new state and
    per-generation metrics (scalars): best/mean/worst fitness, sigma, and the mean of each aux."""
    k_ask, k_eval, k_tell = jax.random.split(key, 3)
    population, es_state = strategy.ask(k_ask, es_state, es_params)
    fitness, aux = evaluate(k_eval, population, args)
    es_state, _ = strategy.tell(k_tell, population, fitness, es_state, es_params)
    metrics = {
        "best_fitness": jnp.min(fitness),
        "mean_fitness": jnp.mean(fitness),
        "worst_fitness": jnp.max(fitness),
        "sigma": strategy_sigma(es_state),
        **{k: jnp.mean(v) for k, v in aux.items()},
    }
    return es_state, metrics


def make_chunk_fn(strategy: Any, evaluate: Evaluate, chunk: int) -> Callable:
    """Jitted `chunk_fn(key, es_state, es_params, args, start, stop) -> (es_state, metrics)`.

    Runs generations start .. start + chunk - 1 under one `lax.scan`; generation g uses key
    `fold_in(key, g)` and is skipped (state unchanged) when g >= stop. metrics: dict of (chunk,)
    arrays; rows with g >= stop are not meaningful.
    """
    if chunk < 1:
        raise ConfigError(f"--es.chunk must be >= 1, got {chunk}")

    def chunk_fn(key, es_state, es_params, args, start, stop):
        shapes = jax.eval_shape(
            lambda: es_generation(key, strategy, es_state, es_params, evaluate, args)[1]
        )

        def run(es_state, g):
            return es_generation(jax.random.fold_in(key, g), strategy, es_state, es_params,
                                 evaluate, args)

        def skip(es_state, g):
            return es_state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(es_state, g):
            return jax.lax.cond(g < stop, run, skip, es_state, g)

        return jax.lax.scan(body, es_state, start + jnp.arange(chunk))

    return jax.jit(chunk_fn)


def make_host_chunk_fn(strategy: Any, evaluate: Evaluate, chunk: int) -> Callable:
    """`make_chunk_fn`'s `chunk_fn` for a fitness that runs on the host (e.g. the dream's
    `compacted_rollouts`): `es_generation` in a Python loop with jitted ask and tell and the
    same keys, so it computes what `make_chunk_fn` computes, up to float rounding (XLA fuses
    the scan differently). metrics: dict of (n,) arrays, n = min(chunk, stop - start)."""
    if chunk < 1:
        raise ConfigError(f"--es.chunk must be >= 1, got {chunk}")
    jitted = types.SimpleNamespace(ask=jax.jit(strategy.ask), tell=jax.jit(strategy.tell))

    def chunk_fn(key, es_state, es_params, args, start, stop):
        rows = []
        for g in range(int(start), min(int(stop), int(start) + chunk)):
            es_state, metrics = es_generation(jax.random.fold_in(key, g), jitted, es_state,
                                              es_params, evaluate, args)
            rows.append(metrics)
        return es_state, jax.tree.map(lambda *xs: jnp.stack(xs), *rows)

    return chunk_fn
