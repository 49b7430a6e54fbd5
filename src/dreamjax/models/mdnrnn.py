"""M: the MDN-RNN world model (PAPER.md §1.4, §2.4, §2.5).

An LSTM with TensorFlow's `LayerNormBasicLSTMCell(layer_norm=False)` semantics reads
[z_t, a_t (, restart_t)] and predicts, for every latent dimension independently, a K-component
Gaussian mixture over z_{t+1}; optional heads predict the step's reward and whether the episode
ends after this step.

One transition body serves both uses: `MDNRNN.step` (the dream, one step) is
`_input_proj` -> `_recurrent_step` -> `_head`, and `MDNRNN.__call__` (training, a sequence) is the
same three functions with the input projection and the head batched over all T steps outside a
`lax.scan` of `_recurrent_step`. Hoisting them is exact (they do not depend on the recurrence)
and makes the sequence form much faster.

Parameter layout follows the reference TF code (PAPER.md §3): `lstm_kernel` (D + H, 4H), rows
[input D, then h H], columns i|j|f|o; `lstm_bias` (4H,); `output_w` (H, O), `output_b` (O,) with
O = [1 done logit if done_head] + Z·K·3 + [3 reward outputs if reward_head]. All four are
glorot-uniform initialised, biases included (TF `get_variable` default).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

FORGET_BIAS = 1.0
"""Added to the forget gate pre-activation at run time (PAPER.md §1.4)."""
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
REWARD_OUTPUTS = 3
"""Reward head columns: [p(positive) logit, E[r | positive], E[r | not positive]]."""


@struct.dataclass
class LSTMState:
    """LSTM carry; `c` and `h` each (..., H)."""

    c: Array
    h: Array


@struct.dataclass
class MDNOutput:
    """M's prediction for the next step.

    logpi, mu, logsigma: (..., Z, K); logpi is log-softmaxed over K.
    reward: (...,) expected reward of this step, or None without a reward head.
    done_logit: (...,) logit of "the episode ends after this step", or None without a done head.
    reward_parts: (..., 3) raw reward-head outputs [logit, value_pos, value_neg] (for the loss),
        or None.
    """

    logpi: Array
    mu: Array
    logsigma: Array
    reward: Array | None = None
    done_logit: Array | None = None
    reward_parts: Array | None = None


def _glorot_uniform_tf(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """TF's glorot_uniform, which also covers 1-D (bias) shapes: fan_in = fan_out = shape[0]."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    elif len(shape) == 2:
        fan_in, fan_out = shape
    else:
        raise ValueError(f"mdnrnn.py: glorot init supports 1-D/2-D shapes, got {shape}")
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


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


def lstm_cell(state: LSTMState, gates_x: Array, w_h: Array) -> LSTMState:
    """One LSTM step given the precomputed input part of the gates.

    state: c, h (..., H); gates_x = x @ W_x + b (..., 4H); w_h (H, 4H). Columns i|j|f|o.
    c' = c·σ(f + 1) + σ(i)·tanh(j); h' = tanh(c')·σ(o) (PAPER.md §1.4).
    """
    return _cell(state, gates_x, w_h)[0]


def _keep(restart: Array | None, like: Array) -> Array | None:
    """(...,) restart -> (..., 1) multiplier, 0 where restart > 0.5; None without restarts."""
    return None if restart is None else (restart <= 0.5)[..., None].astype(like.dtype)


def _restart_state(state: LSTMState, restart: Array | None) -> LSTMState:
    """Zero c and h wherever restart (...,) > 0.5 (PAPER.md §2.4)."""
    keep = _keep(restart, state.c)
    return state if keep is None else LSTMState(c=state.c * keep, h=state.h * keep)


def _recurrent_step_parts(
    state: LSTMState, gates_x: Array, restart: Array | None, w_h: Array
) -> tuple[LSTMState, tuple]:
    """The recurrence shared by `step` and `__call__`: optional restart, then the LSTM cell."""
    return _cell(_restart_state(state, restart), gates_x, w_h)


def _recurrent_step(
    state: LSTMState, gates_x: Array, restart: Array | None, w_h: Array
) -> LSTMState:
    """`_recurrent_step_parts` without the activations (what `MDNRNN.step` runs)."""
    return _recurrent_step_parts(state, gates_x, restart, w_h)[0]


def _lstm_scan_fwd(w_h, gates_x, restart, state, unroll):
    """Scan `_recurrent_step_parts` over time; residuals for `_lstm_scan_bwd`."""

    def body(carry: LSTMState, xs):
        g_t, r_t = xs
        carry, acts = _recurrent_step_parts(carry, g_t, r_t, w_h)
        return carry, (carry.c, carry.h, jnp.concatenate(acts, axis=-1))

    final, (cs, hs, acts) = jax.lax.scan(body, state, (gates_x, restart), unroll=unroll)
    return (final, hs), (w_h, restart, state, cs, hs, acts)


def _lstm_scan_bwd(unroll, res, cts):
    """Reverse scan of the LSTM's analytic derivative, dW_h as one matmul after it.

    Per step only dgates (B, 4H) and dh_prev = dgates @ W_hᵀ are computed; the weight gradient
    Σ_t h_prevᵀ·dgates_t is one (H, T·B) x (T·B, 4H) matmul instead of T small accumulations.
    """
    w_h, restart, state, cs, hs, acts = res
    d_final, dhs = cts
    T, B, H = hs.shape
    keep = _keep(restart, cs)  # (T, B, 1) or None
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
    d_restart = None if restart is None else jnp.zeros_like(restart)
    return d_w, dgs, d_restart, d_state


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_scan(
    w_h: Array, gates_x: Array, restart: Array | None, state: LSTMState, unroll: int = 1
) -> tuple[LSTMState, Array]:
    """Run the recurrence over time-major inputs: gates_x (T, B, 4H), restart (T, B) or None.

    Returns (final state, hs (T, B, H)). Forward = scan of the same `_recurrent_step_parts` as
    `MDNRNN.step`; the gradient is hand-written (`_lstm_scan_bwd`) for speed and tested against
    autodiff of a loop over `MDNRNN.step`.
    """
    return _lstm_scan_fwd(w_h, gates_x, restart, state, unroll)[0]


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


class MDNRNN(nn.Module):
    """MDN-RNN M (PAPER.md §1.4; Doom variant with restart input and done head §2.4).

    Reward head (for dreaming CarRacing, a dreamjax addition: the paper's car dream has none).
    CarRacing's per-step reward is essentially two-valued: -0.1 per frame, or 1000/N - 0.1 when
    a new track tile is visited (N tiles, N differs per track), plus a rare -100 when the car
    leaves the playfield. A Gaussian regression would smear that into a useless mean with
    heavy-tailed errors, so the head factorises the expectation exactly:
    E[r] = p·v_pos + (1 - p)·v_neg with p = P(r > 0) (a Bernoulli "new tile" head trained with
    BCE) and v_pos, v_neg the conditional means E[r | r > 0], E[r | r <= 0] (each trained with
    squared error on its own class only, which is the loss whose minimiser is the conditional
    mean). The class values are learned, not hard-coded, so the head stays correct for any track
    length and for the -100 crash penalty. `MDNOutput.reward` is E[r], a real-valued reward.
    """

    z_dim: int = 32
    action_dim: int = 3
    hidden: int = 256
    n_mix: int = 5
    restart_input: bool = False
    reward_head: bool = False
    done_head: bool = False

    @property
    def input_dim(self) -> int:
        """D = Z + A (+ 1 restart)."""
        return self.z_dim + self.action_dim + int(self.restart_input)

    @property
    def output_dim(self) -> int:
        """O = [1 done] + Z·K·3 + [3 reward]."""
        return (
            int(self.done_head)
            + self.z_dim * self.n_mix * 3
            + REWARD_OUTPUTS * int(self.reward_head)
        )

    def setup(self) -> None:
        D, H, n_out = self.input_dim, self.hidden, self.output_dim
        self.lstm_kernel = self.param("lstm_kernel", _glorot_uniform_tf, (D + H, 4 * H))
        self.lstm_bias = self.param("lstm_bias", _glorot_uniform_tf, (4 * H,))
        self.output_w = self.param("output_w", _glorot_uniform_tf, (H, n_out))
        self.output_b = self.param("output_b", _glorot_uniform_tf, (n_out,))

    @nn.nowrap
    def initial_state(self, batch_shape: tuple[int, ...]) -> LSTMState:
        """Zero state with c, h (*batch_shape, H); needs no params."""
        zeros = jnp.zeros((*tuple(batch_shape), self.hidden), jnp.float32)
        return LSTMState(c=zeros, h=zeros)

    def _inputs(self, z: Array, a: Array, restart: Array | None) -> Array:
        """x = [z, a (, restart)] (..., D), with shape checks."""
        if z.shape[-1] != self.z_dim or a.shape[-1] != self.action_dim:
            raise ValueError(
                f"mdnrnn.py: expected z (..., {self.z_dim}) and a (..., {self.action_dim}), "
                f"got {z.shape} and {a.shape}"
            )
        if z.shape[:-1] != a.shape[:-1]:
            raise ValueError(f"mdnrnn.py: z {z.shape} and a {a.shape} leading dims differ")
        if self.restart_input != (restart is not None):
            raise ValueError(
                f"mdnrnn.py: restart is {'required' if self.restart_input else 'not accepted'} "
                f"(restart_input={self.restart_input})"
            )
        parts = [z.astype(jnp.float32), a.astype(jnp.float32)]
        if restart is not None:
            if restart.shape != z.shape[:-1]:
                raise ValueError(f"mdnrnn.py: restart {restart.shape} must be {z.shape[:-1]}")
            parts.append(restart.astype(jnp.float32)[..., None])
        return jnp.concatenate(parts, axis=-1)

    def _input_proj(self, x: Array) -> Array:
        """x (..., D) -> x @ W_x + b (..., 4H)."""
        return x @ self.lstm_kernel[: self.input_dim] + self.lstm_bias

    def _head(self, h: Array) -> MDNOutput:
        """h (..., H) -> MDNOutput with fields (..., Z, K) and heads (...,)."""
        y = h @ self.output_w + self.output_b
        done_logit = None
        if self.done_head:
            done_logit, y = y[..., 0], y[..., 1:]
        n_mdn = self.z_dim * self.n_mix * 3
        reward = reward_parts = None
        if self.reward_head:
            reward_parts = y[..., n_mdn:]
            p = jax.nn.sigmoid(reward_parts[..., 0])
            reward = p * reward_parts[..., 1] + (1.0 - p) * reward_parts[..., 2]
        mdn = y[..., :n_mdn].reshape(*y.shape[:-1], self.z_dim, 3 * self.n_mix)
        logpi, mu, logsigma = jnp.split(mdn, 3, axis=-1)
        return MDNOutput(
            logpi=jax.nn.log_softmax(logpi, axis=-1),
            mu=mu,
            logsigma=logsigma,
            reward=reward,
            done_logit=done_logit,
            reward_parts=reward_parts,
        )

    def step(
        self, state: LSTMState, z: Array, a: Array, restart: Array | None = None
    ) -> tuple[LSTMState, MDNOutput]:
        """One transition: z (..., Z), a (..., A), restart (...,) -> (state', out (...))."""
        gates_x = self._input_proj(self._inputs(z, a, restart))
        state = _recurrent_step(state, gates_x, restart, self.lstm_kernel[self.input_dim :])
        return state, self._head(state.h)

    def __call__(
        self,
        state: LSTMState,
        z_seq: Array,
        a_seq: Array,
        restart_seq: Array | None = None,
        unroll: int = 1,
    ) -> tuple[LSTMState, MDNOutput]:
        """Scan `step`'s body over time: z_seq (B, T, Z), a_seq (B, T, A), restart_seq (B, T).

        Returns the final state and out with fields (B, T, ...).
        """
        if z_seq.ndim != 3:
            raise ValueError(f"mdnrnn.py: z_seq must be (B, T, Z), got {z_seq.shape}")
        x = jnp.swapaxes(self._inputs(z_seq, a_seq, restart_seq), 0, 1)  # (T, B, D)
        restart = None if restart_seq is None else jnp.swapaxes(restart_seq, 0, 1)  # (T, B)
        w_h = self.lstm_kernel[self.input_dim :]
        state, hs = lstm_scan(w_h, self._input_proj(x), restart, state, unroll)  # hs (T, B, H)
        return state, self._head(jnp.swapaxes(hs, 0, 1))


def init_mdnrnn(key: Array, model: MDNRNN) -> dict:
    """Initialise M's variables ({"params": ...}) for `model.apply`."""
    state = model.initial_state((1,))
    z = jnp.zeros((1, 1, model.z_dim), jnp.float32)
    a = jnp.zeros((1, 1, model.action_dim), jnp.float32)
    restart = jnp.zeros((1, 1), jnp.float32) if model.restart_input else None
    return jax.jit(model.init)(key, state, z, a, restart)


def mdn_log_prob(out: MDNOutput, z: Array) -> Array:
    """Per-dimension mixture log density log Σ_k π_k N(z | μ_k, σ_k²): z (..., Z) -> (..., Z)."""
    if out.mu.shape[:-1] != z.shape:
        raise ValueError(f"mdnrnn.py: z {z.shape} does not match mixture {out.mu.shape[:-1]}")
    zk = z[..., None]
    log_n = -0.5 * jnp.square((zk - out.mu) * jnp.exp(-out.logsigma)) - out.logsigma - LOG_SQRT_2PI
    return jax.nn.logsumexp(out.logpi + log_n, axis=-1)


def mdn_nll(out: MDNOutput, z_next: Array) -> Array:
    """Mean negative log-likelihood over all leading dims and Z (PAPER.md §1.4)."""
    return -jnp.mean(mdn_log_prob(out, z_next))


def sample_next_z(key: Array, out: MDNOutput, temperature: float | Array) -> Array:
    """Sample z (..., Z) from the mixture at temperature τ (PAPER.md §2.5).

    Per dimension: k ~ softmax(logpi / τ), z = mu_k + exp(logsigma_k)·ε·sqrt(τ). τ -> 0 picks the
    most likely component's mean. Drawn the reference way (`doomrnn.py:633-640`): one uniform per
    dimension picks k by inverse CDF, then a one-hot select over K (no gather), which is K times
    fewer random numbers than Gumbel-max and matters in the dream's inner loop.
    """
    tau = jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
    k_u, k_e = jax.random.split(key)
    logits = out.logpi / tau  # (..., Z, K)
    cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), axis=-1)
    u = jax.random.uniform(k_u, cdf.shape[:-1], jnp.float32) * cdf[..., -1]
    k = jnp.sum(u[..., None] >= cdf[..., :-1], axis=-1)  # (..., Z) in [0, K)
    onehot = k[..., None] == jnp.arange(cdf.shape[-1])
    mu = jnp.sum(jnp.where(onehot, out.mu, 0.0), axis=-1)
    logsigma = jnp.sum(jnp.where(onehot, out.logsigma, 0.0), axis=-1)
    eps = jax.random.normal(k_e, mu.shape, mu.dtype)
    return mu + jnp.exp(logsigma) * eps * jnp.sqrt(tau)


def _masked_mean(x: Array, mask: Array) -> Array:
    """Mean of x (B, T) over entries where mask (B, T) is 1."""
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reward_loss(parts: Array, rewards: Array, mask: Array) -> Array:
    """Reward-head loss: BCE of p(r > 0) + squared error of the matching conditional mean.

    parts (B, T, 3) [logit, v_pos, v_neg]; rewards, mask (B, T). See `MDNRNN`'s docstring.
    """
    logit, v_pos, v_neg = parts[..., 0], parts[..., 1], parts[..., 2]
    pos = (rewards > 0.0).astype(jnp.float32)
    bce = sigmoid_bce(logit, pos)
    sq = pos * jnp.square(v_pos - rewards) + (1.0 - pos) * jnp.square(v_neg - rewards)
    return _masked_mean(bce + sq, mask)


def sigmoid_bce(logit: Array, label: Array) -> Array:
    """Numerically stable binary cross-entropy with logits, elementwise."""
    return jnp.maximum(logit, 0.0) - logit * label + jnp.log1p(jnp.exp(-jnp.abs(logit)))


def done_loss(logit: Array, dones: Array, mask: Array, done_weight: float) -> Array:
    """Mean of w·BCE(done, logit), w = done_weight on positives, 1 otherwise (PAPER.md §2.4)."""
    label = dones.astype(jnp.float32)
    w = 1.0 + label * (done_weight - 1.0)
    return _masked_mean(w * sigmoid_bce(logit, label), mask)


def mdnrnn_loss_fn(
    params: dict,
    batch: dict,
    key: Array,
    *,
    model: MDNRNN,
    done_weight: float = 10.0,
    reward_weight: float = 1.0,
    unroll: int = 1,
) -> tuple[Array, dict]:
    """M's training loss for `dreamjax.train.fit` (PAPER.md §1.4, §2.4).

    batch: `mu`, `logvar` (B, T+1, Z); `actions` (B, T+1, A); `rewards` (B, T+1); `dones`
    (B, T+1) bool; `restarts` (B, T+1) when `model.restart_input`; optional `mask` (B, T) of valid
    target steps. z = mu + exp(logvar/2)·ε is resampled per call; inputs are steps 0..T-1, the
    z targets steps 1..T, the reward/done targets rewards[t]/dones[t] for input step t.
    Starts from the zero state. Returns (loss, {"z_nll", ["reward_loss"], ["done_loss"]}).
    """
    for name in ("mu", "logvar", "actions"):
        if name not in batch:
            raise ValueError(f"mdnrnn.py: batch is missing '{name}'")
    mu = jnp.asarray(batch["mu"], jnp.float32)
    logvar = jnp.asarray(batch["logvar"], jnp.float32)
    actions = jnp.asarray(batch["actions"], jnp.float32)
    if mu.ndim != 3 or mu.shape != logvar.shape or actions.shape[:2] != mu.shape[:2]:
        raise ValueError(
            f"mdnrnn.py: need mu, logvar (B, T+1, Z) and actions (B, T+1, A), got "
            f"{mu.shape}, {logvar.shape}, {actions.shape}"
        )
    B, T1, _ = mu.shape
    T = T1 - 1
    z = mu + jnp.exp(logvar / 2.0) * jax.random.normal(key, mu.shape, mu.dtype)
    mask = batch.get("mask")
    mask = jnp.ones((B, T), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if mask.shape != (B, T):
        raise ValueError(f"mdnrnn.py: mask must be (B, T) = {(B, T)}, got {mask.shape}")
    restart = None
    if model.restart_input:
        if "restarts" not in batch:
            raise ValueError("mdnrnn.py: batch is missing 'restarts' (model.restart_input=True)")
        restart = jnp.asarray(batch["restarts"], jnp.float32)[:, :T]

    _, out = model.apply(
        params, model.initial_state((B,)), z[:, :T], actions[:, :T], restart, unroll
    )
    z_nll = -jnp.sum(mdn_log_prob(out, z[:, 1:]) * mask[..., None]) / (
        jnp.maximum(jnp.sum(mask), 1.0) * model.z_dim
    )
    loss = z_nll
    metrics = {"z_nll": z_nll}
    if model.reward_head:
        if "rewards" not in batch:
            raise ValueError("mdnrnn.py: batch is missing 'rewards' (model.reward_head=True)")
        rewards = jnp.asarray(batch["rewards"], jnp.float32)[:, :T]
        r_loss = reward_loss(out.reward_parts, rewards, mask)
        loss = loss + reward_weight * r_loss
        metrics["reward_loss"] = r_loss
    if model.done_head:
        if "dones" not in batch:
            raise ValueError("mdnrnn.py: batch is missing 'dones' (model.done_head=True)")
        d_loss = done_loss(out.done_logit, jnp.asarray(batch["dones"])[:, :T], mask, done_weight)
        loss = loss + d_loss
        metrics["done_loss"] = d_loss
    return loss, metrics
