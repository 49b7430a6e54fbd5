"""How well M predicts real episodes it has not seen: the dream-vs-real gap's model side.

Two measurements on an encoded real episode (V's mu (T, Z), the real actions (T, A) and
rewards (T,)):

- `teacher_forced`: M reads the real (mu_t, a_t) and predicts r_t (the reward that followed
  a_t) and z_{t+1}: predicted vs true return, the per-step reward error, whether its reward
  head's P(r > 0) > 1/2 calls the "new tile" steps right (recall, precision), and the
  one-step z error (relative, as below).
- `death_anticipation` (a done head's M, e.g. Doom's): M's done logit read teacher-forced over
  episodes that end in death, as a score for "the episode ends on this step" and "within k
  steps" (the AUC), beside the step index alone (a clock); an M that sees the killing hit but
  not its coming scores high on the first and near the clock on the second.
- `open_loop`: from the real mu_0, M is fed its own predictions (the mixture mean
  E[z_{t+1}] = Σ_k π_k μ_k) and the real actions, as a dream with τ -> 0 would be; the squared
  distance of its z from V's mu after k steps (relative to the per-dimension variance of the
  real mu, so 1.0 is "no better than the episode's mean frame") and its predicted return over
  the horizon against the real one.

Pure functions of M's params and arrays; `episode_fidelity` wraps both for one episode.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import m_step
from dreamjax.models.mdnrnn import MDNRNN, mixture_mean

HORIZONS: tuple[int, ...] = (1, 10, 30, 100)
"""Open-loop steps after which the drift of M's z from V's is reported."""


def _read(model: MDNRNN, params: Any, mu: jax.Array, actions: jax.Array) -> Any:
    """M read teacher-forced along mu (T, Z), actions (T, A) from the zero state (restart = 1
    at t = 0): its `MDNOutput`s stacked over T; entry t is its prediction after reading
    (mu_t, a_t). Traced inside the jitted readers below, which keep only what they return."""
    restart = jnp.zeros((mu.shape[0],), jnp.float32).at[0].set(1.0)

    def body(lstm, xs):
        return m_step(model, params, lstm, *xs)

    return jax.lax.scan(body, model.initial_state(()), (mu, actions, restart))[1]


@partial(jax.jit, static_argnums=0)
def teacher_forced(model: MDNRNN, params: Any, mu: jax.Array, actions: jax.Array
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """M on the real sequence: mu (T, Z), actions (T, A) -> (predicted reward (T,), logit of
    P(r > 0) (T,), predicted z mean (T, Z)); entry t is M's prediction after reading
    (mu_t, a_t). Needs M's reward head."""
    out = _read(model, params, mu, actions)
    return out.reward, out.reward_parts[..., 0], mixture_mean(out)


@partial(jax.jit, static_argnums=0)
def open_loop(model: MDNRNN, params: Any, z0: jax.Array, actions: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """M fed its own mean predictions from z0 (Z,) and the real actions (T, A) -> (z (T, Z),
    rewards (T,)); z[t] is its prediction of the latent after a_t."""
    restart = jnp.zeros((actions.shape[0],), jnp.float32).at[0].set(1.0)

    def body(carry, xs):
        lstm, z = carry
        a, rs = xs
        lstm, out = m_step(model, params, lstm, z, a, rs)
        z = mixture_mean(out)
        return (lstm, z), (z, out.reward)

    _, (zs, r) = jax.lax.scan(body, (model.initial_state(()), z0), (actions, restart))
    return zs, r


@partial(jax.jit, static_argnums=0)
def done_logits(model: MDNRNN, params: Any, mu: jax.Array, actions: jax.Array) -> jax.Array:
    """M's done logits (T,) teacher-forced on mu (T, Z), actions (T, A) (`_read`); entry t is
    "the episode ends after this step" (PAPER.md §2.4). Needs M's done head."""
    return _read(model, params, mu, actions).done_logit


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting 1/2: the
    Mann-Whitney U over n1 · n0, from average ranks."""
    score = np.asarray(score, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    n1 = int(positive.sum())
    n0 = positive.size - n1
    if score.shape != positive.shape or n1 == 0 or n0 == 0:
        raise ValueError(f"auc: needs one score per label and both classes; got {score.size} "
                         f"scores, {n1} positives, {n0} negatives")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def death_anticipation(model: MDNRNN, params: Any,
                       episodes: list[tuple[np.ndarray, np.ndarray]], within: int = 10) -> dict:
    """AUCs of M's teacher-forced done logit (`done_logits`) over `episodes`, each (mu (T, Z),
    actions (T, A)) ended by death on its last step: `last` for "the episode ends on this
    step", `within` for "it ends within `within` steps"; `*_clock`: the same for the step
    index alone, the score of an M that knows only how long episodes last."""
    if within < 1:
        raise ValueError(f"death_anticipation: within must be >= 1, got {within}")
    logit, clock, last, near = [], [], [], []
    for mu, actions in episodes:
        t = np.arange(len(mu))
        logit.append(np.asarray(done_logits(model, params, jnp.asarray(mu, jnp.float32),
                                            jnp.asarray(actions, jnp.float32))))
        clock.append(t)
        last.append(t == len(mu) - 1)
        near.append(t >= len(mu) - within)
    logit, clock, last, near = (np.concatenate(x) for x in (logit, clock, last, near))
    return {"episodes": len(episodes), "steps": int(logit.size), "within": within,
            "auc_last": auc(logit, last), "auc_last_clock": auc(clock, last),
            "auc_within": auc(logit, near), "auc_within_clock": auc(clock, near)}


def episode_fidelity(model: MDNRNN, params: Any, mu: np.ndarray, actions: np.ndarray,
                     rewards: np.ndarray, horizon: int = 300) -> dict:
    """Both measurements for one real episode (mu (T, Z), actions (T, A), rewards (T,))."""
    mu = np.asarray(mu, np.float32)
    actions = np.asarray(actions, np.float32)
    rewards = np.asarray(rewards, np.float32)
    T = len(rewards)
    if mu.shape[0] != T or actions.shape[0] != T:
        raise ValueError(f"fidelity: mu {mu.shape}, actions {actions.shape} and rewards "
                         f"{rewards.shape} must share T")
    r_pred, logit, z_pred = (np.asarray(x) for x in teacher_forced(model, params, mu, actions))
    pos, called = rewards > 0, logit > 0
    var = np.maximum(mu.var(axis=0), 1e-6)  # (Z,)
    out = {
        "steps": T,
        "real_return": float(rewards.sum()),
        "predicted_return": float(r_pred.sum()),
        "reward_mae": float(np.mean(np.abs(r_pred - rewards))),
        "new_tile_recall": float(np.mean(called[pos])) if pos.any() else None,
        "new_tile_precision": float(np.mean(pos[called])) if called.any() else None,
        "one_step_z_error": (float(np.mean((z_pred[:-1] - mu[1:]) ** 2 / var)) if T > 1
                             else None),
    }
    h = min(horizon, T - 1)
    if h >= 1:
        zs, r_open = (np.asarray(x) for x in open_loop(model, params, mu[0], actions[:h]))
        drift = np.mean((zs - mu[1:h + 1]) ** 2 / var, axis=-1)  # (h,)
        out["open_loop_drift"] = {str(k): float(drift[k - 1]) for k in HORIZONS if k <= h}
        out["open_loop_horizon"] = h
        out["open_loop_predicted_return"] = float(r_open.sum())
        out["open_loop_real_return"] = float(rewards[:h].sum())
    return out


def summarize(rows: list[dict]) -> dict:
    """Means over episodes of `episode_fidelity` rows (None entries skipped)."""
    if not rows:
        return {}

    def mean(key: str, sub: str | None = None) -> float | None:
        vals = [r[key] if sub is None else r.get(key, {}).get(sub) for r in rows]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    out = {k: mean(k) for k in ("real_return", "predicted_return", "reward_mae",
                                "new_tile_recall", "new_tile_precision", "one_step_z_error",
                                "open_loop_predicted_return", "open_loop_real_return")}
    out["open_loop_drift"] = {str(k): mean("open_loop_drift", str(k)) for k in HORIZONS}
    out["episodes"] = len(rows)
    return out
