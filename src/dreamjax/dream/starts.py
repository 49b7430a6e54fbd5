"""Real-state starts for the dream: M's state along recorded real episodes.

A dream that starts from the first frame with a zero state must carry M through a whole
episode, and C finds the states where M's errors have compounded (the dream-vs-real gap of
issue 12). `real_start_bank` instead runs M teacher-forced over encoded real episodes, as the
real-env agent does (it reads z_t = mu_t + sigma_t·eps and the real a_t), and keeps every
`stride`-th step's (mu_t, logvar_t, c_t, h_t): the state M is in when the agent sees z_t, before
it acts (PAPER.md §1.5 timing). A dream started there (`DreamParams.init_c`, `init_h`) begins in
a state C really meets, and a short one (the `--es.max-steps` horizon) stays near the data M was
trained on: the short model rollouts branched from real states of MBPO (Janner et al. 2019),
"dream starts after a burn-in on real history".

Pure functions of M's params and arrays; the pipeline reads the series
(`dreamjax.pipeline.artifacts.config_dream_params`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import m_step
from dreamjax.models.mdnrnn import MDNRNN

STRIDE = 10
"""Keep every STRIDE-th step of each episode (neighbouring states are nearly the same)."""
MAX_STARTS = 16_384
"""At most this many starts (an even subsample beyond), so the bank stays small on any data."""


@partial(jax.jit, static_argnums=(0, 4))
def _teacher_forced_states(model: MDNRNN, params: Any, z: jax.Array, actions: jax.Array,
                           stride: int) -> tuple[jax.Array, jax.Array]:
    """M fed z (B, T, Z) and actions (B, T, A) from the zero state, T a multiple of `stride` ->
    (c, h) (B, T / stride, H): entry k is the state before reading step k·stride (restart = 1
    at t = 0 for an M with a restart input). Only those states are kept, so memory is B·T/stride."""
    B, T, _ = z.shape
    restart = jnp.zeros((T, B), jnp.float32).at[0].set(1.0)

    def blocks(x):  # (B, T, ...) -> (T / stride, stride, B, ...)
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape(T // stride, stride, *x.shape[1:])

    def step(lstm, xs):
        z_t, a_t, r_t = xs
        return m_step(model, params, lstm, z_t, a_t, r_t)[0], None

    def block(lstm, xs):
        return jax.lax.scan(step, lstm, xs)[0], (lstm.c, lstm.h)

    xs = (blocks(z), blocks(actions), restart.reshape(T // stride, stride, B))
    _, (c, h) = jax.lax.scan(block, model.initial_state((B,)), xs)
    return jnp.swapaxes(c, 0, 1), jnp.swapaxes(h, 0, 1)


def real_start_bank(
    key: jax.Array, model: MDNRNN, params: Any, series: Sequence[dict], stride: int = STRIDE,
    max_starts: int = MAX_STARTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Starts from encoded real episodes: each `series` item has `mu`, `logvar` (T, Z) and
    `actions` (T, A) (T may differ). Returns mu, logvar (N, Z) and c, h (N, H) float32, N <=
    max_starts: steps 0, stride, 2·stride, ... of every episode, in episode order."""
    if not series:
        raise ValueError("real_start_bank: no episodes")
    if stride < 1 or max_starts < 1:
        raise ValueError(f"real_start_bank: stride and max_starts must be >= 1, got {stride}, "
                         f"{max_starts}")
    T = -(-max(len(s["mu"]) for s in series) // stride) * stride
    B, Z, A = len(series), model.z_dim, model.action_dim
    mu, logvar = np.zeros((B, T, Z), np.float32), np.zeros((B, T, Z), np.float32)
    actions = np.zeros((B, T, A), np.float32)
    for b, s in enumerate(series):
        n = len(s["mu"])
        if s["mu"].shape != (n, Z) or s["logvar"].shape != (n, Z) or s["actions"].shape != (n, A):
            raise ValueError(f"real_start_bank: episode {b} needs mu, logvar (T, {Z}) and actions "
                             f"(T, {A}), got {s['mu'].shape}, {s['logvar'].shape}, "
                             f"{s['actions'].shape}")
        mu[b, :n], logvar[b, :n], actions[b, :n] = s["mu"], s["logvar"], s["actions"]
    z = mu + np.exp(logvar / 2.0) * np.asarray(jax.random.normal(key, mu.shape, jnp.float32))
    c, h = jax.device_get(_teacher_forced_states(model, params, z, actions, stride))
    keep = [(b, t) for b, s in enumerate(series) for t in range(0, len(s["mu"]), stride)]
    if len(keep) > max_starts:
        keep = [keep[i] for i in np.linspace(0, len(keep) - 1, max_starts).astype(int)]
    bi, ti = np.array(keep).T
    return (mu[bi, ti], logvar[bi, ti], np.asarray(c[bi, ti // stride]),
            np.asarray(h[bi, ti // stride]))
