"""The dream: M used as a gymnax environment (PAPER.md §2.5). No file I/O: the run folder's
artifacts are loaded by `dreamjax.pipeline.artifacts.load_dream_params`.

`DreamEnv` is a `gymnax.environments.environment.Environment` whose dynamics are the MDN-RNN:

- reset: z_0 = mu + exp(logvar / 2)·eps from a uniformly chosen entry of a bank of real
  first-frame latents, zero LSTM state (and restart = 1 for an M with a restart input); or, with
  a bank of real states (`init_c`, `init_h`; `dreamjax.dream.starts`), that entry's M state
  along a real episode (restart = 0: the episode is under way).
- step(a): feed (z_t, a_t) to M's transition (`dreamjax.agent.m_step`, the same function the
  real-env agent steps M with); z_{t+1} ~ M's mixture at temperature τ
  (`sample_next_z`); reward from M's reward head (or +1 per step, Doom's rule, `reward_mode=
  "survival"`); terminated = done_logit > 0, a deterministic threshold with no τ (PAPER.md §2.5
  step 4), or with `done_mode="sample"` a Bernoulli draw with M's calibrated probability
  sigmoid(done_logit - log w), w the positive weight of the done loss (`done_loss`: its minimiser
  is logit = log(w·p / (1 - p))); truncated = time >= max_steps_in_episode.
- observation: what C sees, [z, h] by default (PAPER.md §1.5), [z, c, h] for Doom (§2.5) or z
  alone. Timing follows §1.5: reset returns [z_0, h_0 = 0], the action a_t is chosen from
  [z_t, h_t] where h_t has consumed (z_<t, a_<t), and the step returns [z_{t+1}, h_{t+1}].

With `dropout` p > 0 ("Dropout's Dream Land", Wellmer & Kwok 2021), each episode draws one
Bernoulli(1 - p) mask at reset over the world M's inputs z, a and its recurrent h (kept units scaled
by 1 / (1 - p)) and keeps it to the end: every episode dreams in a slightly different M, so an
exploit of one M's errors does not pay in all of them. p = 0 compiles the plain step.

With `agent_params` (an ensemble of Ms, `dreamjax.dream.ensemble`), the world and C's memory
are two Ms, as in the real env: z_{t+1}, reward and done come from the world M (`mdn_params`,
one member per episode), while the h that C sees is that of the agent's own M (`agent_params`,
member 0, the M the real-env agent runs), fed the same z and a. So C cannot read the world's
hidden state, and an exploit of one member's errors does not carry over to the others.

Everything that varies between runs (M's weights, the latent bank, τ, the step limit) lives in the
`DreamParams` pytree; M's architecture and the observation/reward modes are static fields. So one
compiled step serves every checkpoint, and a population of dreams is a `vmap` away.

Dreaming CarRacing with a reward head is a dreamjax addition: the paper trains the car
controller in the real env and its car dream (`carracing/dream_env.py`) has reward 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from dreamjax.agent import check_mdn_params, m_step
from dreamjax.models.controller import OBS_MODES, make_obs, obs_dim_for_mode
from dreamjax.models.mdnrnn import MDNRNN, LSTMState, init_mdnrnn, sample_next_z

REWARD_MODES: tuple[str, ...] = ("head", "survival")
DONE_MODES: tuple[str, ...] = ("threshold", "sample")


@struct.dataclass
class DreamState(environment.EnvState):
    """z (Z,) the current latent; lstm c, h (H,) the world M's state; restart () 1.0 until the
    first step; agent c, h (H,) the agent's M's state (None without `agent_params`); mask
    (Z + A + H,) the episode's dropout mask on the world M's z, a and h, already scaled by
    1 / (1 - p) (None without dropout)."""

    z: jax.Array
    lstm: LSTMState
    restart: jax.Array
    agent: LSTMState | None = None
    mask: jax.Array | None = None


@struct.dataclass
class DreamParams(environment.EnvParams):
    """Everything a dream needs. Arrays are pytree leaves; `model`, `obs_mode`, `reward_mode` are
    static (part of the compiled program).

    mdn_params: M's variables ({"params": ...}); init_mu, init_logvar: (N, Z) bank of first-frame
    latents; init_c, init_h: (N, H) M's state at those latents (None: first frames, zero state);
    temperature: τ; max_steps_in_episode: truncation limit; agent_params: the variables
    of the M whose h C sees, when it is not the world's (None: the world's own h); dropout
    (static): the per-episode dropout probability on the world M's z, a and h; done_shift:
    log w, w the done loss's positive weight (`done_mode="sample"` draws done with probability
    sigmoid(logit - done_shift)); done_mode (static): `threshold` or `sample` (module docstring).
    """

    mdn_params: Any = None
    init_mu: Any = None
    init_logvar: Any = None
    init_c: Any = None
    init_h: Any = None
    temperature: Any = 1.0
    max_steps_in_episode: Any = 1000
    agent_params: Any = None
    done_shift: Any = 0.0
    model: MDNRNN = struct.field(pytree_node=False, default=MDNRNN())
    obs_mode: str = struct.field(pytree_node=False, default="zh")
    reward_mode: str = struct.field(pytree_node=False, default="head")
    dropout: float = struct.field(pytree_node=False, default=0.0)
    done_mode: str = struct.field(pytree_node=False, default="threshold")


def check_dream_config(model: MDNRNN, obs_mode: str, reward_mode: str,
                       dropout: float = 0.0, done_mode: str = "threshold") -> None:
    """One-line ValueError for a dream that cannot train a controller."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dream: dropout must be in [0, 1), got {dropout}")
    if done_mode not in DONE_MODES:
        raise ValueError(f"dream: unknown done_mode {done_mode!r}; choose one of {DONE_MODES}")
    if obs_mode not in OBS_MODES:
        raise ValueError(f"dream: unknown obs_mode {obs_mode!r}; choose one of {OBS_MODES}")
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"dream: unknown reward_mode {reward_mode!r}; choose one of "
                         f"{REWARD_MODES}")
    if reward_mode == "head" and not model.reward_head:
        raise ValueError(
            "dream: M has no reward head, so the dream's return would be noise; train M with "
            "--mdnrnn.reward-head (or use reward_mode='survival' with a done head, Doom's rule)"
        )
    if reward_mode == "survival" and not model.done_head:
        raise ValueError(
            "dream: reward_mode='survival' (+1 per step) needs M's done head "
            "(--mdnrnn.done-head), else every episode lasts until the step limit"
        )


def make_dream_params(
    model: MDNRNN,
    mdn_params: Any,
    init_mu: Any,
    init_logvar: Any,
    *,
    temperature: float = 1.0,
    max_steps: int = 1000,
    obs_mode: str = "zh",
    reward_mode: str = "head",
    members: Any = None,
    dropout: float = 0.0,
    done_mode: str = "threshold",
    done_weight: float = 1.0,
    init_state: tuple[Any, Any] | None = None,
) -> DreamParams:
    """Validated `DreamParams`; init_mu, init_logvar (N, Z) with N >= 1.

    members: an ensemble's variables stacked on a leading axis (K, ...): the dream's worlds
    are the members (one per episode, through `dreamjax.dream.ensemble.dream_rollouts`) and
    `mdn_params` becomes the agent's M (`agent_params`). None: one M is world and memory.
    dropout: the per-episode dropout probability (module docstring). done_mode, done_weight:
    how the done head ends a dream, and the positive weight M's done loss was trained with.
    init_state: (c, h), each (N, H): M's state at each bank latent (`dreamjax.dream.starts`;
    with an ensemble every member starts from it); None: first frames from the zero state.
    """
    check_dream_config(model, obs_mode, reward_mode, dropout, done_mode)
    if not float(done_weight) > 0:
        raise ValueError(f"dream: done_weight must be > 0, got {done_weight}")
    init_mu = jnp.asarray(init_mu, jnp.float32)
    init_logvar = jnp.asarray(init_logvar, jnp.float32)
    if init_mu.ndim != 2 or init_mu.shape != init_logvar.shape or init_mu.shape[0] < 1:
        raise ValueError(f"dream: initial latents mu, logvar must both be (N, Z) with N >= 1, got "
                         f"{init_mu.shape} and {init_logvar.shape}")
    if init_mu.shape[1] != model.z_dim:
        raise ValueError(f"dream: initial latents have Z={init_mu.shape[1]} but M has "
                         f"z_dim={model.z_dim}")
    if not float(temperature) > 0:
        raise ValueError(f"dream: temperature must be > 0, got {temperature}")
    if int(max_steps) < 1:
        raise ValueError(f"dream: max_steps must be >= 1, got {max_steps}")
    check_mdn_params(model, mdn_params, "dream")
    init_c = init_h = None
    if init_state is not None:
        init_c, init_h = (jnp.asarray(x, jnp.float32) for x in init_state)
        want = (init_mu.shape[0], model.hidden)
        if init_c.shape != want or init_h.shape != want:
            raise ValueError(f"dream: initial states c, h must both be (N, H) = {want}, got "
                             f"{init_c.shape} and {init_h.shape}")
    agent_params = None
    if members is not None:
        k = {int(np.shape(x)[0]) for x in jax.tree.leaves(members)}
        if len(k) != 1:
            raise ValueError("dream: ensemble members must share one leading axis (K, ...)")
        check_mdn_params(model, jax.tree.map(lambda x: x[0], members), "dream ensemble")
        agent_params, mdn_params = mdn_params, members
    return DreamParams(
        mdn_params=mdn_params,
        agent_params=agent_params,
        init_mu=init_mu,
        init_logvar=init_logvar,
        init_c=init_c,
        init_h=init_h,
        temperature=jnp.float32(temperature),
        max_steps_in_episode=jnp.int32(max_steps),
        model=model,
        obs_mode=obs_mode,
        reward_mode=reward_mode,
        dropout=float(dropout),
        done_shift=jnp.float32(np.log(float(done_weight))),
        done_mode=done_mode,
    )


def _dropout_mask(key: jax.Array, params: DreamParams) -> jax.Array | None:
    """The episode's mask (Z + A + H,): Bernoulli(1 - p) / (1 - p); None for p = 0."""
    p = params.dropout
    if p == 0.0:
        return None
    m = params.model
    keep = jax.random.bernoulli(key, 1.0 - p, (m.z_dim + m.action_dim + m.hidden,))
    return keep.astype(jnp.float32) / (1.0 - p)


class DreamEnv(environment.Environment[DreamState, DreamParams]):
    """M as an environment (see the module docstring). Takes no arguments: all configuration is in
    `DreamParams`; `default_params` is a random world model of the paper's CarRacing shape
    (Z 32, A 3, H 256, K 5) with reward and done heads and a random latent bank."""

    def __hash__(self) -> int:
        return hash(type(self))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    @property
    def default_params(self) -> DreamParams:
        cached = getattr(self, "_default_params", None)
        if cached is None:
            with jax.ensure_compile_time_eval():
                cached = random_dream_params(jax.random.key(0))
            self._default_params = cached
        return cached

    def reset_env(self, key: jax.Array, params: DreamParams) -> tuple[jax.Array, DreamState]:
        """z_0 from a uniformly chosen bank entry; that entry's M state (zero for first
        frames); the episode's dropout mask (from `fold_in(key, 1)`, so the other draws do not
        depend on p)."""
        k_idx, k_eps = jax.random.split(key)
        n, z_dim = params.init_mu.shape
        i = jax.random.randint(k_idx, (), 0, n)
        eps = jax.random.normal(k_eps, (z_dim,), jnp.float32)
        z = params.init_mu[i] + jnp.exp(params.init_logvar[i] / 2.0) * eps
        lstm, restart = params.model.initial_state(()), jnp.float32(1.0)
        if params.init_h is not None:
            lstm, restart = LSTMState(c=params.init_c[i], h=params.init_h[i]), jnp.float32(0.0)
        state = DreamState(
            time=jnp.int32(0),
            z=z,
            lstm=lstm,
            restart=restart,
            agent=None if params.agent_params is None else lstm,
            mask=_dropout_mask(jax.random.fold_in(key, 1), params),
        )
        return self.get_obs(state, params), state

    def step_env(
        self, key: jax.Array, state: DreamState, action: jax.Array, params: DreamParams
    ) -> tuple[jax.Array, DreamState, jax.Array, jax.Array, dict]:
        """One dream step (PAPER.md §2.5): a (A,) -> (obs, state, reward, terminated, info)."""
        model = params.model
        check_dream_config(model, params.obs_mode, params.reward_mode, params.dropout,
                           params.done_mode)
        action = jnp.asarray(action, jnp.float32)
        if action.shape != (model.action_dim,):
            raise ValueError(f"dream: action must be ({model.action_dim},), got {action.shape}")
        z_in, a_in, world = state.z, action, state.lstm
        if state.mask is not None:
            Z, A = model.z_dim, model.action_dim
            z_in = z_in * state.mask[:Z]
            a_in = a_in * state.mask[Z:Z + A]
            world = world.replace(h=world.h * state.mask[Z + A:])
        lstm, out = m_step(model, params.mdn_params, world, z_in, a_in, state.restart)
        agent = None
        if params.agent_params is not None:
            agent, _ = m_step(model, params.agent_params, state.agent, state.z, action,
                              state.restart)
        z = sample_next_z(key, out, params.temperature)
        reward = out.reward if params.reward_mode == "head" else jnp.float32(1.0)
        if not model.done_head:
            terminated = jnp.bool_(False)
        elif params.done_mode == "sample":
            p_done = jax.nn.sigmoid(out.done_logit - params.done_shift)
            terminated = jax.random.uniform(jax.random.fold_in(key, 2)) < p_done
        else:
            terminated = out.done_logit > 0.0
        state = DreamState(time=state.time + 1, z=z, lstm=lstm, restart=jnp.float32(0.0),
                           agent=agent, mask=state.mask)
        info = {"done_logit": out.done_logit if model.done_head else jnp.float32(-jnp.inf)}
        return self.get_obs(state, params), state, reward.astype(jnp.float32), terminated, info

    def get_obs(self, state: DreamState, params=None, key=None) -> jax.Array:
        """What C sees: [z, h], [z, c, h] or z, per `params.obs_mode`; c, h are the agent's M's
        (the world's without `agent_params`)."""
        mode = (params or self.default_params).obs_mode
        mem = state.lstm if state.agent is None else state.agent
        return make_obs(mode, state.z, mem.c, mem.h)

    def is_terminated(self, state: DreamState, params: DreamParams) -> jax.Array:
        """Termination is decided by M's done head inside `step_env`."""
        return jnp.bool_(False)

    @property
    def name(self) -> str:
        return "Dream"

    @property
    def num_actions(self) -> int:
        return self.default_params.model.action_dim

    def action_space(self, params: DreamParams | None = None) -> spaces.Box:
        """C's raw output, [-1, 1]^A."""
        params = params or self.default_params
        return spaces.Box(-1.0, 1.0, (params.model.action_dim,), jnp.float32)

    def observation_space(self, params: DreamParams | None = None) -> spaces.Box:
        """(O,) float32: O = Z, Z + H or Z + 2H by obs_mode."""
        params = params or self.default_params
        dim = obs_dim_for_mode(params.obs_mode, params.model.z_dim, params.model.hidden)
        return spaces.Box(-jnp.inf, jnp.inf, (dim,), jnp.float32)



def random_dream_params(
    key: jax.Array,
    model: MDNRNN | None = None,
    *,
    bank_size: int = 16,
    temperature: float = 1.0,
    max_steps: int = 1000,
    obs_mode: str = "zh",
    reward_mode: str = "head",
    done_bias: float | None = -3.0,
) -> DreamParams:
    """A randomly initialised world model (default: the paper's CarRacing shape with reward and
    done heads) and a random latent bank, mu ~ N(0, 1), logvar = log(0.1²).

    `done_bias` replaces the done logit's (glorot-random) bias so that random dreams do not end
    at once (None keeps it).
    """
    model = model or MDNRNN(z_dim=32, action_dim=3, hidden=256, n_mix=5, reward_head=True,
                            done_head=True)
    k_m, k_b = jax.random.split(key)
    mdn_params = jax.jit(init_mdnrnn, static_argnums=1)(k_m, model)
    if model.done_head and done_bias is not None:
        p = mdn_params["params"]
        p = {**p, "output_b": p["output_b"].at[0].set(done_bias)}
        mdn_params = {**mdn_params, "params": p}
    mu = jax.random.normal(k_b, (bank_size, model.z_dim), jnp.float32)
    logvar = jnp.full((bank_size, model.z_dim), 2.0 * np.log(0.1), jnp.float32)
    return make_dream_params(
        model, mdn_params, mu, logvar, temperature=temperature, max_steps=max_steps,
        obs_mode=obs_mode, reward_mode=reward_mode,
    )
