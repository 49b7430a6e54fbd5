"""Does the dream end episodes as often as the real game? The data policy's survival in it.

A dream that is easier than the game (M rarely predicts a death) pays C for behaviour that
dies in the real game; PAPER.md §2.7 shows τ deciding that (its τ = 0.1 dream never kills).
The data policy is the one policy whose real survival is known for free: its collected
episodes (for a mixed collection, each part's own). `held_action_lengths` rolls Doom's data
policy (PAPER.md §2.2: a ~ U(-1, 1) redrawn at step t when t % repeat == 0, repeat ~ U{1..10}
redrawn with it) through the dream, so its dream lengths can be set beside the lengths of the
real episodes (`dreamjax.pipeline.doom`'s `survival_calibration`, in the report). With
`low == high` and repeats as long as the episode it holds one fixed action throughout: the
held-button probes, whose real lives the calibration measures on a few training-seed episodes.
`schedule_lengths` plays one fixed action sequence instead (the patrol probes).

Pure and unjitted; jit the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamjax.dream.env import DreamEnv, DreamParams


def held_action_lengths(key: jax.Array, dream_params: DreamParams, num_episodes: int,
                        num_steps: int, max_repeat: int = 10, min_repeat: int = 1,
                        low: float = -1.0, high: float = 1.0) -> jax.Array:
    """Lengths (num_episodes,) int32 of dream episodes (at most `num_steps` steps) under the
    held-uniform data policy, a ~ U(low, high) with repeats U{min_repeat..max_repeat} (§2.2:
    U(-1, 1), 1..10; `DoomConstantPolicy`: one draw for the whole episode; low = high: that
    action throughout): the step on which the dream ends counts, as a real death does."""
    env = DreamEnv()
    A = dream_params.model.action_dim

    def one(k: jax.Array) -> jax.Array:
        k_reset, k_steps = jax.random.split(k)
        _, state = env.reset_env(k_reset, dream_params)

        def body(carry, k_t):
            state, a, repeat, t, alive, length = carry
            k_a, k_r, k_s = jax.random.split(k_t, 3)
            new = t % repeat == 0
            a = jnp.where(new, jax.random.uniform(k_a, (A,), minval=low, maxval=high), a)
            repeat = jnp.where(new, jax.random.randint(k_r, (), min_repeat, max_repeat + 1),
                               repeat)
            _, state, _, terminated, _ = env.step_env(k_s, state, a, dream_params)
            length = length + alive.astype(jnp.int32)
            return (state, a, repeat, t + 1, alive & ~terminated, length), None

        init = (state, jnp.zeros((A,), jnp.float32), jnp.int32(1), jnp.int32(0),
                jnp.bool_(True), jnp.int32(0))
        (*_, length), _ = jax.lax.scan(body, init, jax.random.split(k_steps, num_steps))
        return length

    return jax.vmap(one)(jax.random.split(key, num_episodes))


def schedule_lengths(key: jax.Array, dream_params: DreamParams, num_episodes: int,
                     actions: jax.Array) -> jax.Array:
    """Lengths (num_episodes,) int32 of dream episodes under one open-loop action schedule,
    actions (T, A): step t plays actions[t], whatever the dream shows (at most T steps; the
    step on which the dream ends counts). The patrol probes (`dreamjax.pipeline.doom`)."""
    env = DreamEnv()
    T, A = actions.shape
    assert dream_params.model.action_dim == A, (actions.shape, dream_params.model.action_dim)

    def one(k: jax.Array) -> jax.Array:
        k_reset, k_steps = jax.random.split(k)
        _, state = env.reset_env(k_reset, dream_params)

        def body(carry, xs):
            state, alive, length = carry
            k_t, a = xs
            _, state, _, terminated, _ = env.step_env(k_t, state, a, dream_params)
            length = length + alive.astype(jnp.int32)
            return (state, alive & ~terminated, length), None

        init = (state, jnp.bool_(True), jnp.int32(0))
        (*_, length), _ = jax.lax.scan(body, init, (jax.random.split(k_steps, T), actions))
        return length

    return jax.vmap(one)(jax.random.split(key, num_episodes))
