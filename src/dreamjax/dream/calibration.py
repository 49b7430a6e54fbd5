"""Does the dream end episodes as often as the real game? Open-loop policies in the dream.

A dream that is easier than the game (M rarely predicts a death) pays C for behaviour that
dies in the real game; PAPER.md §2.7 shows τ deciding that (its τ = 0.1 dream never kills).
A policy that never reads the frames has the same actions in the dream as in the game, so its
life in both can be set side by side: Doom's data policies (`dreamjax.data.policies`, e.g.
§2.2's held-uniform draws, whose real lives are the collected episodes), a button held for a
whole episode and patrols (the probes of `dreamjax.pipeline.doom`, in every Doom report).
`schedule_lengths` plays one action schedule per dream episode (pure; `schedule_lengths_jit`
is its one jitted form, shared by every caller).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamjax.dream.env import DreamEnv, DreamParams


def schedule_lengths(key: jax.Array, dream_params: DreamParams, actions: jax.Array
                     ) -> jax.Array:
    """Lengths (N,) int32 of N dream episodes, actions (N, T, A): episode n plays actions[n, t]
    at step t whatever the dream shows (at most T steps; the step on which the dream ends
    counts, as a real death does)."""
    env = DreamEnv()
    N, T, A = actions.shape
    assert dream_params.model.action_dim == A, (actions.shape, dream_params.model.action_dim)

    def one(k: jax.Array, schedule: jax.Array) -> jax.Array:  # schedule (T, A)
        k_reset, k_steps = jax.random.split(k)
        _, state = env.reset_env(k_reset, dream_params)

        def body(carry, xs):
            state, alive, length = carry
            k_t, a = xs
            _, state, _, terminated, _ = env.step_env(k_t, state, a, dream_params)
            length = length + alive.astype(jnp.int32)
            return (state, alive & ~terminated, length), None

        init = (state, jnp.bool_(True), jnp.int32(0))
        (*_, length), _ = jax.lax.scan(body, init, (jax.random.split(k_steps, T), schedule))
        return length

    return jax.vmap(one)(jax.random.split(key, N), actions)


schedule_lengths_jit = jax.jit(schedule_lengths)
"""`schedule_lengths`, jitted."""
