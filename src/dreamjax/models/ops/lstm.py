"""The LSTM recurrence of M (PAPER.md §1.4) and its time scan with a hand-written backward pass.

TensorFlow `LayerNormBasicLSTMCell(layer_norm=False)` semantics: gates = x·W_x + b + h·W_h,
columns i|j|f|o, c' = c·σ(f + 1) + σ(i)·tanh(j), h' = tanh(c')·σ(o). An optional per-step reset
mask zeroes the carried state before a step (an episode starts there). `recurrent_step` is the
one body: `MDNRNN.step` runs it once, `lstm_scan` scans it over time with a custom VJP that is
tested against autodiff of a loop over `MDNRNN.step`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

FORGET_BIAS = 1.0
"""Added to the forget gate pre-activation at run time (PAPER.md §1.4)."""


@struct.dataclass
class LSTMState:
    """LSTM carry; `c` and `h` each (..., H)."""

    c: Array
    h: Array


def _cell(state: LSTMState, gates_x: Array, w_h: Array) -> tuple[LSTMState, tuple]:
    """LSTM cell returning also its gate activations (σi, tanh j, σf, σo) for the backward pass."""
    gates = gates_x + state.h @ w_h
    i, j, f, o = jnp.split(gates, 4, axis=-1)
    si, tj, sf, so = (
        jax.nn.sigmoid(i),
        jnp.tanh(j),
        jax.nn.sigmoid(f + FORGET_BIAS),
        jax.nn.sigmoid(o),
    )
    c = state.c * sf + si * tj
    h = jnp.tanh(c) * so
    return LSTMState(c=c, h=h), (si, tj, sf, so)


def _keep(reset: Array | None, like: Array) -> Array | None:
    """(...,) reset -> (..., 1) multiplier, 0 where reset > 0.5; None without resets."""
    return None if reset is None else (reset <= 0.5)[..., None].astype(like.dtype)


def _reset_state(state: LSTMState, reset: Array | None) -> LSTMState:
    """Zero c and h wherever reset (...,) > 0.5 (an episode starts here, PAPER.md §2.4)."""
    keep = _keep(reset, state.c)
    return state if keep is None else LSTMState(c=state.c * keep, h=state.h * keep)


def _recurrent_step_parts(
    state: LSTMState, gates_x: Array, reset: Array | None, w_h: Array
) -> tuple[LSTMState, tuple]:
    """The recurrence shared by `step` and `__call__`: optional state reset, then the cell."""
    return _cell(_reset_state(state, reset), gates_x, w_h)


def recurrent_step(
    state: LSTMState, gates_x: Array, reset: Array | None, w_h: Array
) -> LSTMState:
    """One step: reset (...,) or None, then the cell; state c, h (..., H), gates_x (..., 4H),
    w_h (H, 4H). `_recurrent_step_parts` without the activations (what `MDNRNN.step` runs)."""
    return _recurrent_step_parts(state, gates_x, reset, w_h)[0]


def _lstm_scan_fwd(w_h, gates_x, reset, state, unroll):
    """Scan `_recurrent_step_parts` over time; residuals for `_lstm_scan_bwd`."""

    def body(carry: LSTMState, xs):
        g_t, r_t = xs
        carry, acts = _recurrent_step_parts(carry, g_t, r_t, w_h)
        return carry, (carry.c, carry.h, jnp.concatenate(acts, axis=-1))

    final, (cs, hs, acts) = jax.lax.scan(body, state, (gates_x, reset), unroll=unroll)
    return (final, hs), (w_h, reset, state, cs, hs, acts)


def _lstm_scan_bwd(unroll, res, cts):
    """Reverse scan of the LSTM's analytic derivative, dW_h as one matmul after it.

    Per step only dgates (B, 4H) and dh_prev = dgates @ W_hᵀ are computed; the weight gradient
    Σ_t h_prevᵀ·dgates_t is one (H, T·B) x (T·B, 4H) matmul instead of T small accumulations.
    A reset at step t zeroes the state before the cell, so it also zeroes the gradient that
    flows back through it (into step t-1, or into the initial state at t = 0).
    """
    w_h, reset, state, cs, hs, acts = res
    d_final, dhs = cts
    T, B, H = hs.shape
    keep = _keep(reset, cs)  # (T, B, 1) or None
    c_prev = jnp.concatenate([state.c[None], cs[:-1]], axis=0)
    h_prev = jnp.concatenate([state.h[None], hs[:-1]], axis=0)
    if keep is not None:
        c_prev, h_prev = c_prev * keep, h_prev * keep
    w_t = w_h.T

    def body(carry: LSTMState, xs):
        dh_t, c_t, c_p, a_t, k_t = xs
        si, tj, sf, so = jnp.split(a_t, 4, axis=-1)
        tc = jnp.tanh(c_t)
        dh = carry.h + dh_t
        dc = carry.c + dh * so * (1.0 - tc * tc)
        dg = jnp.concatenate(
            [
                dc * tj * si * (1.0 - si),
                dc * si * (1.0 - tj * tj),
                dc * c_p * sf * (1.0 - sf),
                dh * tc * so * (1.0 - so),
            ],
            axis=-1,
        )
        dc_p, dh_p = dc * sf, dg @ w_t
        if k_t is not None:
            dc_p, dh_p = dc_p * k_t, dh_p * k_t
        return LSTMState(c=dc_p, h=dh_p), dg

    d_state, dgs = jax.lax.scan(
        body, d_final, (dhs, cs, c_prev, acts, keep), reverse=True, unroll=unroll
    )
    d_w = h_prev.reshape(T * B, H).T @ dgs.reshape(T * B, 4 * H)
    d_reset = None if reset is None else jnp.zeros_like(reset)
    return d_w, dgs, d_reset, d_state


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_scan(
    w_h: Array, gates_x: Array, reset: Array | None, state: LSTMState, unroll: int = 1
) -> tuple[LSTMState, Array]:
    """Run the recurrence over time-major inputs: gates_x (T, B, 4H); reset (T, B) float or
    None zeroes the state before step t where reset[t] > 0.5.

    Returns (final state, hs (T, B, H)). Forward = scan of the same `_recurrent_step_parts` as
    `MDNRNN.step`; the gradient is hand-written (`_lstm_scan_bwd`) for speed and tested against
    autodiff of a loop over `MDNRNN.step`.
    """
    return _lstm_scan_fwd(w_h, gates_x, reset, state, unroll)[0]


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)
