"""Dreams in an ensemble of Ms: each episode's world is one member, C's memory is member 0.

An ensemble's `DreamParams` (`make_dream_params(..., members=)`) holds the K members' variables
stacked on a leading axis in `mdn_params` and the agent's M (member 0) in `agent_params`.
`dream_rollouts` splits a candidate's R rollouts into K blocks of R / K, rollout r dreaming in
member r // (R / K), as one `vmap` over the members (a batched matmul with K weight sets, no
per-episode copies of M). A whole episode keeps its member. A single-M dream goes straight to
`population_rollouts`, unchanged.

`ensemble_fitness`: "mean" averages a candidate's returns over all its episodes; "min" takes the
worst member's mean return, a pessimistic objective that an exploit of one member's errors
cannot raise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dreamjax.dream.env import DreamParams
from dreamjax.dream.rollout import (
    Policy,
    RolloutResult,
    compacted_rollouts,
    population_rollouts,
)

FITNESS_MODES: tuple[str, ...] = ("mean", "min")


def ensemble_size(dream_params: DreamParams) -> int:
    """K for an ensemble's dream, 1 for a single M."""
    if dream_params.agent_params is None:
        return 1
    leaf = jax.tree.leaves(dream_params.mdn_params)[0]
    agent_leaf = jax.tree.leaves(dream_params.agent_params)[0]
    return int(leaf.shape[0]) if leaf.ndim == agent_leaf.ndim + 1 else 1


def member(dream_params: DreamParams, k: int) -> DreamParams:
    """The dream whose world is member k alone (C's memory still the agent's M)."""
    if ensemble_size(dream_params) == 1:
        return dream_params
    return dream_params.replace(mdn_params=jax.tree.map(lambda x: x[k], dream_params.mdn_params))


def dream_rollouts(
    key: jax.Array,
    env: Any,
    dream_params: DreamParams,
    policy: Policy,
    pop_params: Any,
    num_rollouts: int,
    num_steps: int,
    *,
    antithetic: bool = True,
    block: int = 0,
) -> RolloutResult:
    """`population_rollouts` in the dream -> returns, lengths (P, R).

    For an ensemble of K, R must be a multiple of K; columns [k R/K, (k+1) R/K) are member k's,
    with keys `population_rollouts(fold_in(key, k), ...)` of the member alone. `block` > 0 (one
    M only: an ensemble's members are one vmapped program): `compacted_rollouts` with that
    block (host-driven, not jittable).
    """
    K = ensemble_size(dream_params)
    if K == 1:
        if block:
            return compacted_rollouts(key, env, dream_params, policy, pop_params, num_rollouts,
                                      num_steps, antithetic=antithetic, block=block)
        return population_rollouts(key, env, dream_params, policy, pop_params, num_rollouts,
                                   num_steps, antithetic=antithetic)
    if block:
        raise ValueError("dream: compacted rollouts need one M; an ensemble's dreams run as "
                         "one vmapped program (block=0)")
    if num_rollouts % K:
        raise ValueError(f"dream: {num_rollouts} rollouts per candidate do not split evenly "
                         f"over {K} ensemble members")

    def one(k, world):
        return population_rollouts(jax.random.fold_in(key, k), env,
                                   dream_params.replace(mdn_params=world), policy, pop_params,
                                   num_rollouts // K, num_steps, antithetic=antithetic)

    res = jax.vmap(one)(jnp.arange(K), dream_params.mdn_params)  # (K, P, R/K)

    def merge(x):
        return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], num_rollouts)

    return RolloutResult(returns=merge(res.returns), lengths=merge(res.lengths))


def ensemble_fitness(returns: jax.Array, num_members: int, mode: str = "mean") -> jax.Array:
    """evosax's fitness (P,) (minimised) from returns (P, R) in member blocks of R / K."""
    if mode not in FITNESS_MODES:
        raise ValueError(f"dream: unknown ensemble fitness {mode!r}; choose one of "
                         f"{FITNESS_MODES}")
    if mode == "mean" or num_members == 1:
        return -jnp.mean(returns, axis=-1)
    per_member = returns.reshape(returns.shape[0], num_members, -1).mean(axis=-1)  # (P, K)
    return -jnp.min(per_member, axis=-1)
