"""Population rollouts in a gymnax environment: `lax.scan` over time, `vmap` over rollouts and
candidates (PAPER.md §1.6: fitness = mean return of 16 episodes per candidate).

A fitness rollout does not auto-reset: after the first termination or truncation the episode is
frozen by a validity mask, so its return accumulates only while it is alive. The functions here
are pure and unjitted; jit the outermost caller (e.g. a whole CMA-ES generation) once.

`trajectory` records one such episode step by step (the report's dream video).
`compacted_rollouts` dreams `population_rollouts`' episodes (the same in distribution, not bit for
bit) stepping only those still alive (host-driven; the dream CMA-ES's `--es.compact-every`).

Antithetic seeding (PAPER.md §1.6, `train.py:304-306`): with `antithetic=True`, candidates i and
i + P/2 roll out with the same keys, so each pair faces the same episodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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


def _count(alive, ret, length, reward, terminated, truncated):
    """An episode's return and length grow while it is `alive`; it ends on termination or
    truncation -> (alive', ret', length')."""
    ret = ret + jnp.where(alive, reward, 0.0)
    length = length + alive.astype(jnp.int32)
    return alive & ~(terminated | truncated), ret, length


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
        alive, ret, length = _count(alive, ret, length, reward, terminated, truncated)
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


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _compact_start(env: Any, env_params: Any, keys: jax.Array, num_steps: int, padded: int):
    """Every episode's reset and its `rollout` step keys, padded to `padded` steps."""

    def one(k):
        k_reset, k_steps = jax.random.split(k)
        obs, state = env.reset_env(k_reset, env_params)
        steps = jax.random.split(k_steps, num_steps)
        steps = jnp.concatenate([steps, steps[: padded - num_steps]], axis=0)
        return obs, state, steps

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _compact_advance(env: Any, policy: Policy, block: int, env_params: Any, pop_params: Any,
                     candidate: jax.Array, rows: jax.Array, t0: jax.Array, num_steps: jax.Array,
                     carry: tuple):
    """`block` steps of the episodes `rows` (padded with an out-of-range index, whose writes
    are dropped) of the full carry (obs, state, step keys, alive, ret, length), as in
    `rollout`'s body; steps at or past `num_steps` do not count."""
    obs, state, steps, alive, ret, length = carry
    take = functools.partial(jnp.take, indices=rows, axis=0, mode="clip")
    params = jax.tree.map(take, jax.tree.map(lambda x: x[candidate], pop_params))  # (rows, ...)
    sub = jax.tree.map(take, (obs, state, alive, ret, length))
    keys = jax.lax.dynamic_slice_in_dim(take(steps), t0, block, axis=1)

    def one(p, o, s, k):
        return _policy_step(env, env_params, policy, p, o, s, k)

    def body(c, xs):
        o, s, a, r, n = c
        k, t = xs
        o, s, reward, terminated, truncated = jax.vmap(one)(params, o, s, k)
        a, r, n = _count(a & (t < num_steps), r, n, reward, terminated, truncated)
        return (o, s, a, r, n), None

    sub, _ = jax.lax.scan(body, sub, (jnp.moveaxis(keys, 1, 0), t0 + jnp.arange(block)))

    def put(full, part):
        return full.at[rows].set(part, mode="drop")

    obs, state, alive, ret, length = jax.tree.map(put, (obs, state, alive, ret, length), sub)
    return obs, state, steps, alive, ret, length


def compacted_rollouts(
    key: jax.Array,
    env: Any,
    env_params: Any,
    policy: Policy,
    pop_params: Any,
    num_rollouts: int,
    num_steps: int,
    *,
    antithetic: bool = True,
    block: int = 64,
    min_rows: int = 128,
) -> RolloutResult:
    """`population_rollouts` stepping only the episodes still alive -> returns, lengths (P, R).

    Every `block` steps the live episodes are gathered into a batch of the next multiple of
    `min_rows` rows (at most P·R; the padding's results are dropped) and stepped `block` steps,
    so an episode that ended early stops costing compute: a population whose episodes end at a
    fifth of the step limit runs up to about five times faster (never below `min_rows` rows).
    Each episode uses `population_rollouts`' keys, so the dreams agree up to float rounding
    (here each episode applies its own copy of its candidate's params, there R episodes share
    one matrix product; XLA picks its matrix kernel by shape, and on this CPU a row comes out the
    same in every batch of a multiple of 128 rows, not of 64 or 96), which over thousands of
    steps can flip a sampled mixture component and send a dream elsewhere: the same dreams in
    distribution, not bit for bit.
    Host-driven: call it unjitted; its pieces are compiled once per batch size.
    """
    popsize = jax.tree.leaves(pop_params)[0].shape[0]
    n = popsize * num_rollouts
    block = min(block, num_steps)
    padded = -(-num_steps // block) * block
    keys = rollout_keys(key, popsize, num_rollouts, antithetic)  # episode p·R + r: (p, r)
    obs, state, steps = _compact_start(env, env_params, keys.reshape((n, *keys.shape[2:])),
                                       num_steps, padded)
    carry = (obs, state, steps, jnp.ones(n, bool), jnp.zeros(n, jnp.float32),
             jnp.zeros(n, jnp.int32))
    candidate = jnp.arange(n) // num_rollouts
    for t0 in range(0, padded, block):
        live = np.flatnonzero(np.asarray(carry[3]))
        if live.size == 0:
            break
        size = min(n, -(-live.size // min_rows) * min_rows)
        rows = np.full(size, n, np.int32)
        rows[: live.size] = live
        carry = _compact_advance(env, policy, block, env_params, pop_params, candidate,
                                 jnp.asarray(rows), jnp.int32(t0), jnp.int32(num_steps), carry)
    shape = (popsize, num_rollouts)
    return RolloutResult(returns=carry[4].reshape(shape), lengths=carry[5].reshape(shape))
