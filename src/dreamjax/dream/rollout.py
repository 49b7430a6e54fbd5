"""Population rollouts in a gymnax environment: `lax.scan` over time, `vmap` over rollouts and
candidates (PAPER.md §1.6: fitness = mean return of 16 episodes per candidate).

A fitness rollout does not auto-reset: after the first termination or truncation the episode is
frozen by a validity mask, so its return accumulates only while it is alive. The functions here
are pure and unjitted; jit the outermost caller (e.g. a whole CMA-ES generation) once.

`trajectory` records one such episode step by step (the report's dream video).

Antithetic seeding (PAPER.md §1.6, `train.py:304-306`): with `antithetic=True`, candidates i and
i + P/2 roll out with the same keys, so each pair faces the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Policy = Callable[[Any, jax.Array], jax.Array]
"""policy(params, obs (O,)) -> action (A,); e.g. `Controller.apply`."""


@struct.dataclass
class RolloutResult:
    """returns (...,) float32 summed while alive; lengths (...,) int32 steps taken."""

    returns: jax.Array
    lengths: jax.Array


def _policy_step(env, env_params, policy, policy_params, obs, state, key):
    """a = policy(obs), then `env.step_env` -> (obs', state', reward, terminated, truncated)."""
    action = policy(policy_params, obs)
    obs, state, reward, terminated, _ = env.step_env(key, state, action, env_params)
    return obs, state, reward, terminated, env.is_truncated(state, env_params)


def rollout(
    key: jax.Array,
    env: Any,
    env_params: Any,
    policy: Policy,
    policy_params: Any,
    num_steps: int,
    unroll: int = 1,
) -> RolloutResult:
    """One episode of at most `num_steps` steps from `env.reset_env`, without auto-reset.

    Uses `env.step_env` and `env.is_truncated` (any gymnax environment). Returns scalars.
    """
    k_reset, k_steps = jax.random.split(key)
    obs, state = env.reset_env(k_reset, env_params)

    def body(carry, k):
        obs, state, alive, ret, length = carry
        obs, state, reward, terminated, truncated = _policy_step(
            env, env_params, policy, policy_params, obs, state, k)
        ret = ret + jnp.where(alive, reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & ~(terminated | truncated)
        return (obs, state, alive, ret, length), None

    init = (obs, state, jnp.bool_(True), jnp.float32(0.0), jnp.int32(0))
    keys = jax.random.split(k_steps, num_steps)
    (_, _, _, ret, length), _ = jax.lax.scan(body, init, keys, unroll=unroll)
    return RolloutResult(returns=ret, lengths=length)


def trajectory(
    key: jax.Array,
    env: Any,
    env_params: Any,
    policy: Policy,
    policy_params: Any,
    num_steps: int,
) -> tuple[Any, jax.Array, jax.Array]:
    """`rollout`'s episode (same keys), recorded for watching it (e.g. V decoding a dream).

    Returns (states, rewards (T,), terminated (T,)): states[t] is the env state action t was
    taken in (every leaf with a leading T). Nothing stops at termination: the steps after it are
    the env's (for the dream: M's) continued predictions.
    """
    k_reset, k_steps = jax.random.split(key)
    obs, state = env.reset_env(k_reset, env_params)

    def body(carry, k):
        obs, state = carry
        obs, new, reward, terminated, _ = _policy_step(
            env, env_params, policy, policy_params, obs, state, k)
        return (obs, new), (state, reward, terminated)

    _, (states, rewards, terminated) = jax.lax.scan(
        body, (obs, state), jax.random.split(k_steps, num_steps))
    return states, rewards, terminated


def rollout_keys(key: jax.Array, popsize: int, num_rollouts: int, antithetic: bool) -> jax.Array:
    """Keys (P, R); with `antithetic`, rows i and i + P/2 are equal (P must be even)."""
    if not antithetic:
        return jax.random.split(key, (popsize, num_rollouts))
    if popsize % 2:
        raise ValueError(f"antithetic seeding needs an even population size, got {popsize}")
    half = jax.random.split(key, (popsize // 2, num_rollouts))
    return jnp.concatenate([half, half], axis=0)


def population_rollouts(
    key: jax.Array,
    env: Any,
    env_params: Any,
    policy: Policy,
    pop_params: Any,
    num_rollouts: int,
    num_steps: int,
    *,
    antithetic: bool = True,
    unroll: int = 1,
) -> RolloutResult:
    """`num_rollouts` episodes for each of P candidates -> returns, lengths (P, R).

    pop_params: the policy's params with a leading population axis P on every leaf. The env's
    params are shared (not batched). Candidate p's rollout r uses `rollout_keys(...)[p, r]`.
    """
    popsize = jax.tree.leaves(pop_params)[0].shape[0]
    keys = rollout_keys(key, popsize, num_rollouts, antithetic)

    def one(k, p):
        return rollout(k, env, env_params, policy, p, num_steps, unroll)

    per_candidate = jax.vmap(one, in_axes=(0, None))  # over R rollouts
    return jax.vmap(per_candidate, in_axes=(0, 0))(keys, pop_params)  # over P candidates


def fitness_from_returns(result: RolloutResult) -> jax.Array:
    """evosax minimises: fitness (P,) = -mean return over the R rollouts."""
    return -jnp.mean(result.returns, axis=-1)
