"""M: the MDN-RNN world model (PAPER.md §1.4, §2.4, §2.5).

An LSTM with TensorFlow's `LayerNormBasicLSTMCell(layer_norm=False)` semantics reads
[z_t, a_t (, restart_t)] and predicts, for every latent dimension independently, a K-component
Gaussian mixture over z_{t+1}; optional heads predict the step's reward and whether the episode
ends after this step.

One transition body serves both uses: `MDNRNN.step` (the dream, one step) is
`_input_proj` -> `ops.lstm.recurrent_step` -> `_head`, and `MDNRNN.__call__` (training, a
sequence) is the same three functions with the input projection and the head batched over all T
steps outside a scan of `recurrent_step` (`ops.lstm.lstm_scan`, with a hand-written backward
pass). Hoisting them is exact (they do not depend on the recurrence) and makes the sequence
form much faster. "Restart" (an input of Doom's M) and "reset" (zero the carried state where an
episode starts) are separate: the sequence form takes a reset mask of its own, so one loss,
`mdnrnn_carry_loss_fn`, serves random windows from the zero state and truncated-BPTT chunks
from a carried state.

Parameter layout follows the reference TF code (PAPER.md §3): `lstm_kernel` (D + H, 4H), rows
[input D, then h H], columns i|j|f|o; `lstm_bias` (4H,); `output_w` (H, O), `output_b` (O,) with
O = [1 done logit if done_head] + Z·K·3 + [3 reward outputs if reward_head]. All four are
glorot-uniform initialised, biases included (TF `get_variable` default).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from dreamjax.models.ops.lstm import LSTMState, lstm_scan, recurrent_step

Array = jax.Array

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
REWARD_OUTPUTS = 3
"""Reward head columns: [p(positive) logit, E[r | positive], E[r | not positive]]."""


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
        """One transition: z (..., Z), a (..., A), restart (...,) -> (state', out (...)).

        With `restart_input`, restart is an input and also zeroes the state where it is > 0.5.
        """
        gates_x = self._input_proj(self._inputs(z, a, restart))
        state = recurrent_step(state, gates_x, restart, self.lstm_kernel[self.input_dim :])
        return state, self._head(state.h)

    def __call__(
        self,
        state: LSTMState,
        z_seq: Array,
        a_seq: Array,
        restart_seq: Array | None = None,
        unroll: int = 1,
        reset_seq: Array | None = None,
    ) -> tuple[LSTMState, MDNOutput]:
        """Scan `step`'s body over time: z_seq (B, T, Z), a_seq (B, T, A), restart_seq (B, T).

        reset_seq (B, T): zero the carried state before step t where reset_seq[:, t] > 0.5 (an
        episode starts there), whether or not M has a restart input. A restart input also
        resets, as in `step`, so the scan is a loop of `step` with `reset_seq` applied before
        each step. Returns the final state and out with fields (B, T, ...).
        """
        if z_seq.ndim != 3:
            raise ValueError(f"mdnrnn.py: z_seq must be (B, T, Z), got {z_seq.shape}")
        x = jnp.swapaxes(self._inputs(z_seq, a_seq, restart_seq), 0, 1)  # (T, B, D)
        if reset_seq is not None:
            if reset_seq.shape != z_seq.shape[:2]:
                raise ValueError(
                    f"mdnrnn.py: reset_seq {reset_seq.shape} must be {z_seq.shape[:2]}"
                )
            reset_seq = jnp.asarray(reset_seq, jnp.float32)  # the VJP's cotangent is float
            if restart_seq is not None:
                reset_seq = jnp.maximum(reset_seq, jnp.asarray(restart_seq, jnp.float32))
        else:
            reset_seq = restart_seq
        reset = None if reset_seq is None else jnp.swapaxes(reset_seq, 0, 1)  # (T, B)
        w_h = self.lstm_kernel[self.input_dim :]
        state, hs = lstm_scan(w_h, self._input_proj(x), reset, state, unroll)  # hs (T, B, H)
        return state, self._head(jnp.swapaxes(hs, 0, 1))


MDNRNN_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(MDNRNN) if f.name not in ("parent", "name")
)
"""The fields that define an `MDNRNN`: a run folder records them, `MDNRNN(**d)` rebuilds it."""


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


def mixture_mean(out: MDNOutput) -> Array:
    """E[z_{t+1}] (..., Z) of M's per-dimension mixture."""
    return jnp.sum(jnp.exp(out.logpi) * out.mu, axis=-1)


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


def reward_loss(parts: Array, rewards: Array, mask: Array, pessimism: float = 1.0) -> Array:
    """Reward-head loss: BCE of p(r > 0) + squared error of the matching conditional mean.

    parts (B, T, 3) [logit, v_pos, v_neg]; rewards, mask (B, T). See `MDNRNN`'s docstring.
    pessimism w >= 1 weights over-prediction w times: the BCE of steps with r <= 0 and the
    squared error where the value exceeds the true reward (1: the symmetric loss).
    """
    logit, v_pos, v_neg = parts[..., 0], parts[..., 1], parts[..., 2]
    pos = (rewards > 0.0).astype(jnp.float32)
    bce = sigmoid_bce(logit, pos) * (pos + (1.0 - pos) * pessimism)
    v = pos * v_pos + (1.0 - pos) * v_neg
    sq = jnp.square(v - rewards) * jnp.where(v > rewards, pessimism, 1.0)
    return _masked_mean(bce + sq, mask)


def sigmoid_bce(logit: Array, label: Array) -> Array:
    """Numerically stable binary cross-entropy with logits, elementwise."""
    return jnp.maximum(logit, 0.0) - logit * label + jnp.log1p(jnp.exp(-jnp.abs(logit)))


def done_loss(logit: Array, dones: Array, mask: Array, done_weight: float) -> Array:
    """Mean of w·BCE(done, logit), w = done_weight on positives, 1 otherwise (PAPER.md §2.4)."""
    label = dones.astype(jnp.float32)
    w = 1.0 + label * (done_weight - 1.0)
    return _masked_mean(w * sigmoid_bce(logit, label), mask)


def mdnrnn_carry_loss_fn(
    params: dict,
    carry: LSTMState | None,
    batch: dict,
    key: Array,
    *,
    model: MDNRNN,
    done_weight: float = 10.0,
    reward_weight: float = 1.0,
    reward_pessimism: float = 1.0,
    overshoot: int = 0,
    overshoot_held: bool = False,
    unroll: int = 1,
) -> tuple[Array, tuple[dict, LSTMState]]:
    """M's training loss (PAPER.md §1.4, §2.4) from the LSTM state `carry` (None: zeros).

    batch: `mu`, `logvar` (B, T+1, Z); `actions` (B, T+1, A); `rewards` (B, T+1); `dones` (B, T+1)
    bool; optional `mask` (B, T) of valid z target steps; optional `step_mask` (B, T) of valid input
    steps, where the reward and done labels count (default: `mask`; it differs at an episode's last
    step, whose done is a label but whose z target is not); optional `restarts` (B, T+1), 1 on an
    episode's first step: the state is zeroed there (whatever `model.restart_input`, which also
    feeds it as an input and then requires it); optional `reset` (B,) bool: zero `carry` before the
    chunk (a truncated-BPTT epoch start). z = mu + exp(logvar/2)·ε is resampled per call; inputs are
    steps 0..T-1, the z targets steps 1..T, the reward/done targets rewards[t]/dones[t] for input
    step t (`reward_pessimism`: `reward_loss`'s weight on over-prediction). The recurrence is
    `MDNRNN.__call__`'s fast scan with its hand-written gradient. `overshoot` k > 0 adds the
    open-loop loss `overshoot_loss` on branches every k steps (`metrics["open_loop_nll"]`;
    `overshoot_held`: only branches whose action is held). Returns (loss, ({"z_nll",
    ["reward_loss"], ["done_loss"], ["open_loop_nll"]}, final state)): the form
    `dreamjax.train.fit` takes with a carry.
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
    if model.restart_input and "restarts" not in batch:
        raise ValueError("mdnrnn.py: batch is missing 'restarts' (model.restart_input=True)")
    restarts = batch.get("restarts")
    restarts = None if restarts is None else jnp.asarray(restarts, jnp.float32)[:, :T]
    reset = restarts
    if "reset" in batch:
        first = jnp.asarray(batch["reset"], bool)
        if first.shape != (B,):
            raise ValueError(f"mdnrnn.py: reset must be (B,) = {(B,)}, got {first.shape}")
        reset = jnp.zeros((B, T), jnp.float32) if reset is None else reset
        reset = reset.at[:, 0].max(first.astype(jnp.float32))
    state = model.initial_state((B,)) if carry is None else carry
    restart_input = restarts if model.restart_input else None
    # the heads' labels follow input step t, so they count wherever step t is real, an
    # episode's last step included (where done is 1 and the z target, `mask`, is not)
    step_mask = batch.get("step_mask")
    head_mask = mask if step_mask is None else jnp.asarray(step_mask, jnp.float32)
    if head_mask.shape != (B, T):
        raise ValueError(f"mdnrnn.py: step_mask must be (B, T) = {(B, T)}, got "
                         f"{head_mask.shape}")

    starts = tuple(range(0, T, overshoot)) if overshoot > 0 else (0,)
    outs, branch_states = [], []
    for a, b in zip(starts, (*starts[1:], T), strict=True):  # one scan per branch interval
        branch_states.append(state)
        state, o = model.apply(
            params, state, z[:, a:b], actions[:, a:b],
            None if restart_input is None else restart_input[:, a:b], unroll,
            None if reset is None else reset[:, a:b],
        )
        outs.append(o)
    out = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *outs)
    z_nll = -jnp.sum(mdn_log_prob(out, z[:, 1:]) * mask[..., None]) / (
        jnp.maximum(jnp.sum(mask), 1.0) * model.z_dim
    )
    loss = z_nll
    metrics = {"z_nll": z_nll}
    if model.reward_head:
        if "rewards" not in batch:
            raise ValueError("mdnrnn.py: batch is missing 'rewards' (model.reward_head=True)")
        rewards = jnp.asarray(batch["rewards"], jnp.float32)[:, :T]
        r_loss = reward_loss(out.reward_parts, rewards, head_mask, reward_pessimism)
        loss = loss + reward_weight * r_loss
        metrics["reward_loss"] = r_loss
    if model.done_head:
        if "dones" not in batch:
            raise ValueError("mdnrnn.py: batch is missing 'dones' (model.done_head=True)")
        d_loss = done_loss(out.done_logit, jnp.asarray(batch["dones"])[:, :T], head_mask,
                           done_weight)
        loss = loss + d_loss
        metrics["done_loss"] = d_loss
    if overshoot > 0:
        ol = overshoot_loss(params, model, branch_states, starts, overshoot, z, actions, mask,
                            reset, restart_input, held_only=overshoot_held)
        loss = loss + ol
        metrics["open_loop_nll"] = ol
    return loss, (metrics, state)


def overshoot_loss(params: dict, model: MDNRNN, branch_states: list[LSTMState],
                   starts: tuple[int, ...], k: int, z: Array, actions: Array, mask: Array,
                   reset: Array | None, restart_input: Array | None,
                   held_only: bool = False) -> Array:
    """Mean NLL of the real z_{s+j+1} under M run open loop for j < k steps from each branch
    point s in `starts`: M's teacher-forced state there (`branch_states`), the real z_s, then its
    own mixture means fed back with the real actions a_{s+j}; gradients flow through the fed-back
    means, so M must carry an action's effect over k steps (a one-step loss let it predict that
    the road re-centres whatever C steers). Unbiased only where the actions did not depend on
    frames M does not see in the branch: on a road follower's data it learns the follower's
    correlations (measured: `experiments/results/carracing-action-response/`); `held_only`
    counts only branches whose action is the same at every counted step, which no frame in the
    branch can have chosen. z, actions (B, T+1, ...); mask, reset (B, T); a branch step counts
    while its target is valid and no episode starts in it."""
    T = mask.shape[1]
    idx = jnp.asarray([[min(s + j, T - 1) for j in range(k)] for s in starts])  # (S, k)
    inside = jnp.asarray([[float(s + j < T) for j in range(k)] for s in starts])
    valid = mask[:, idx] * inside  # (B, S, k)
    first = (jnp.arange(k) == 0).astype(jnp.float32)
    if reset is not None:
        fresh = reset[:, idx] * (1.0 - first)  # an episode starting after the branch point
        valid = valid * (jnp.cumsum(fresh, axis=-1) == 0)
    if held_only:
        a0 = actions[:, jnp.asarray(starts)][:, :, None]  # (B, S, 1, A)
        same = jnp.all(actions[:, idx] == a0, axis=-1) | (valid == 0)  # (B, S, k)
        valid = valid * jnp.all(same, axis=-1, keepdims=True)
    a_seq = jnp.moveaxis(actions[:, idx], 2, 0)  # (k, B, S, A)
    targets = jnp.moveaxis(z[:, idx + 1], 2, 0)  # (k, B, S, Z)
    rs = None if restart_input is None else jnp.moveaxis(restart_input[:, idx] * first, 2, 0)
    state0 = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *branch_states)  # (B, S, H)
    if reset is not None:  # the teacher-forced scan zeroes the state before an episode's start
        keep = (reset[:, jnp.asarray(starts)] <= 0.5)[..., None].astype(jnp.float32)
        state0 = jax.tree.map(lambda x: x * keep, state0)

    def body(carry, xs):
        lstm, z_in = carry
        a, r = xs
        lstm, out = model.apply(params, lstm, z_in, a, r, method=MDNRNN.step)
        return (lstm, mixture_mean(out)), out  # E[z'] (B, S, Z) fed back

    _, outs = jax.lax.scan(body, (state0, z[:, jnp.asarray(starts)]), (a_seq, rs))
    logp = mdn_log_prob(outs, targets)  # (k, B, S, Z)
    w = jnp.moveaxis(valid, 2, 0)[..., None]
    return -jnp.sum(logp * w) / (jnp.maximum(jnp.sum(w), 1.0) * model.z_dim)


def mdnrnn_loss_fn(
    params: dict, batch: dict, key: Array, *, model: MDNRNN, **kwargs: Any
) -> tuple[Array, dict]:
    """`mdnrnn_carry_loss_fn` (same keyword arguments) from the zero state, without the final
    state: (loss, metrics), the form `dreamjax.train.fit` takes for independent windows
    (`data.SequenceBatches`)."""
    loss, (metrics, _) = mdnrnn_carry_loss_fn(params, None, batch, key, model=model, **kwargs)
    return loss, metrics
