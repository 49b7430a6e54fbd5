"""The world-model agent (PAPER.md §1.5): V, M and C as one pytree, and the one step they take.

`WorldModel` holds V and M (Linen modules, static) with their params (pytree leaves) and C's
`ControllerSpec` (kind, obs mode, sizes, flat-vector unravel). `agent_step` is the agent's step,
written once:

    frame (uint8) -> V.encode -> z = mu + exp(logvar / 2)·ε, ε from `key`   (or z given)
    obs = [z_t, h_t] (or z_t, or [z_t, c_t, h_t]), h_t having consumed (z_<t, a_<t)
    a_t = C(obs) (+ optional Gaussian exploration noise, clipped to [-1, 1])
    (c, h)_{t+1} = M.step((c, h)_t, z_t, a_t [, restart_t])          (`m_step`)

`m_step` is M's transition and the dream's env step (`dreamjax.dream.env.DreamEnv.step_env`)
calls it too, so the dream and the real-env agent cannot drift apart. `WorldModelPolicy` is the
`BatchPolicy` (dreamjax.envs.pool) that runs `agent_step` for every slot of the real-env pool at
once: for CMA-ES in the real env, for evaluation, and, with one controller and optional action
noise, for controller-driven collection. `encode_frames` and `render` are V's encoder and
decoder on uint8 frames.

V is any Linen module with `encode(x) -> (mu, logvar)` for x (B, 64, 64, 3) in [0, 1] and
`decode(z) -> x` (e.g. `dreamjax.models.vae.ConvVAE`); this module does not import it.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dreamjax.models.controller import ControllerSpec, controller_spec, make_obs
from dreamjax.models.mdnrnn import MDNRNN, LSTMState, MDNOutput, init_mdnrnn

FRAME_SHAPE = (64, 64, 3)
SLOT_BLOCK = 8
"""The batched real-env policy computes slots in fixed blocks of this many: XLA's result for a row
depends on how many rows a matmul holds (measured: 1, 2-48 and 64+ rows differ), so fixed blocks
make a slot's actions independent of the pool's size (`--workers`, `--envs-per-worker`)."""
ACTION_NOISE_TAG = 0xAC7
"""fold_in tag deriving the action-noise key from a step's key (the key itself draws V's z)."""
ACTION_OFFSET_TAG = 0x0FF
"""fold_in tag deriving an episode's action-offset key from its step-0 key."""


@struct.dataclass
class WorldModel:
    """V, M and C's spec. vae_params, mdn_params: leaves; vae, mdn, spec: static.

    `vae` may be None for an agent that is only ever fed z (the dream). `mdn_members`: for an
    ensemble of Ms, all K members' params stacked (K, ...), member 0 being `mdn_params` (the M
    the agent runs); the dream's worlds (`dreamjax.dream.ensemble`). None for one M."""

    vae_params: Any
    mdn_params: Any
    mdn_members: Any = None
    vae: Any = struct.field(pytree_node=False, default=None)
    mdn: MDNRNN = struct.field(pytree_node=False, default=MDNRNN())
    spec: ControllerSpec = struct.field(pytree_node=False, default=None)

    @property
    def z_dim(self) -> int:
        return self.mdn.z_dim

    @property
    def hidden(self) -> int:
        return self.mdn.hidden

    @property
    def action_dim(self) -> int:
        return self.mdn.action_dim


@struct.dataclass
class AgentCarry:
    """What the agent carries between steps: M's LSTM state c, h (..., H) and restart (...,),
    1.0 at an episode's first step (the state is zeroed and, for an M with a restart input,
    restart is fed to M)."""

    lstm: LSTMState
    restart: jax.Array


def one_line(module: Any) -> str:
    """A Linen module's config on one line, e.g. `MDNRNN(z_dim=32, ..., done_head=True)` (for
    one-line error messages; Flax's own repr spans many lines)."""
    fields = [f.name for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    return f"{type(module).__name__}({', '.join(f'{n}={getattr(module, n)!r}' for n in fields)})"


def check_shapes(params: Any, expected: Any, where: str, what: str) -> None:
    """ValueError naming `where` unless the params' tree and leaf shapes equal `expected`'s
    (e.g. `jax.eval_shape` of the model's init); `what` names the model in the message."""
    got = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    want = jax.tree.map(lambda s: tuple(s.shape), expected)
    if got != want:
        raise ValueError(f"{where}: {what}'s parameters do not match its config: got shapes "
                         f"{got}, expected {want}")


def check_mdn_params(model: MDNRNN, mdn_params: Any, where: str) -> None:
    """ValueError naming `where` unless M's parameter shapes match its config."""
    expect = jax.eval_shape(lambda: init_mdnrnn(jax.random.key(0), model))
    check_shapes(mdn_params, expect, where, f"M {one_line(model)}")


def make_world_model(
    vae: Any, vae_params: Any, mdn: MDNRNN, mdn_params: Any, kind: str = "zh", *,
    hidden_units: int = 40, ensemble: int = 1,
) -> WorldModel:
    """A validated `WorldModel` whose controller of `kind` acts on M's features with M's
    action size (`hidden_units`: width of the `z-hidden` layer). With `ensemble` = K > 1,
    `mdn_params` are K members stacked (K, ...) and the agent runs member 0."""
    members = None
    if ensemble > 1:
        members = mdn_params
        if {int(np.shape(x)[0]) for x in jax.tree.leaves(members)} != {ensemble}:
            raise ValueError(f"make_world_model: an ensemble of {ensemble} Ms needs params "
                             f"stacked ({ensemble}, ...)")
        mdn_params = jax.tree.map(lambda x: x[0], members)
    check_mdn_params(mdn, mdn_params, "make_world_model")
    if vae is not None and getattr(vae, "z_dim", mdn.z_dim) != mdn.z_dim:
        raise ValueError(f"make_world_model: V has z_dim={vae.z_dim} but M has "
                         f"z_dim={mdn.z_dim}")
    spec = controller_spec(kind, mdn.z_dim, mdn.hidden, action_dim=mdn.action_dim,
                           hidden_units=hidden_units)
    return WorldModel(vae_params=vae_params, mdn_params=mdn_params, mdn_members=members, vae=vae,
                      mdn=mdn, spec=spec)


def initial_carry(world_model: WorldModel, batch_shape: tuple[int, ...] = ()) -> AgentCarry:
    """The carry at an episode's start: zero LSTM state (*batch_shape, H), restart = 1."""
    return AgentCarry(lstm=world_model.mdn.initial_state(batch_shape),
                      restart=jnp.ones(batch_shape, jnp.float32))


def m_step(
    mdn: MDNRNN, mdn_params: Any, lstm: LSTMState, z: jax.Array, a: jax.Array,
    restart: jax.Array,
) -> tuple[LSTMState, MDNOutput]:
    """M's transition: (c, h) (..., H), z (..., Z), a (..., A) -> ((c, h)', M's prediction of
    z_{t+1}, reward, done). restart (...,) is an input only for an M with a restart input."""
    extra = (restart,) if mdn.restart_input else ()
    return mdn.apply(mdn_params, lstm, z, a, *extra, method=MDNRNN.step)


def _normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """One N(0, 1) draw of `shape` per key: keys (...,) -> (..., *shape)."""
    flat = keys.reshape(-1)
    out = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(flat)
    return out.reshape(*keys.shape, *shape)


def encode(vae: Any, vae_params: Any, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    """V's posterior of uint8 frames (..., 64, 64, 3) -> mu, logvar (..., Z)."""
    if vae is None:
        raise ValueError("agent: this WorldModel has no V; feed it z instead of frames")
    if frames.dtype != jnp.uint8 or frames.shape[-3:] != FRAME_SHAPE:
        raise ValueError(f"agent: frames must be uint8 (..., 64, 64, 3), got {frames.dtype} "
                         f"{frames.shape}")
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *FRAME_SHAPE).astype(jnp.float32) / 255.0
    mu, logvar = vae.apply(vae_params, x, method="encode")
    return mu.reshape(*lead, -1), logvar.reshape(*lead, -1)


encode_frames = jax.jit(encode, static_argnums=0)
"""`encode`, jitted (V static): for encoding recorded episodes in batches."""


def act(spec: ControllerSpec, ctrl_params: Any, obs: jax.Array) -> jax.Array:
    """a = C(obs) for obs (..., O) -> (..., A). `ctrl_params` is one controller shared by all
    agents, or carries the agents' leading dims on every leaf (one controller per agent)."""
    if obs.shape[-1] != spec.obs_dim:
        raise ValueError(f"agent: C ({spec.kind}) reads ({spec.obs_dim},) features, got "
                         f"{obs.shape}")
    extra = jax.tree.leaves(ctrl_params)[0].ndim - jax.tree.leaves(
        jax.eval_shape(spec.zeros))[0].ndim
    if extra == 0:
        return spec.controller.apply(ctrl_params, obs)
    if extra != obs.ndim - 1:
        raise ValueError(f"agent: ctrl_params have {extra} leading dims but the agents' batch "
                         f"is {obs.shape[:-1]}")
    apply = spec.controller.apply
    for _ in range(extra):
        apply = jax.vmap(apply)
    return apply(ctrl_params, obs)


def agent_step(
    key: jax.Array | None,
    world_model: WorldModel,
    ctrl_params: Any,
    carry: AgentCarry,
    z_or_frame: jax.Array,
    *,
    action_noise: float = 0.0,
    action_offset: jax.Array | None = None,
) -> tuple[jax.Array, AgentCarry, MDNOutput]:
    """One step of the agent (module docstring), for one agent or a batch with leading dims (...).

    key: typed key array (...,) (one per agent); it draws V's z sample, and
        fold_in(key, ACTION_NOISE_TAG) the action noise. Unused (may be None) when z is given
        and action_noise is 0.
    ctrl_params: C's params, shared or per agent (see `act`).
    carry: `AgentCarry` with c, h (..., H), restart (...,).
    z_or_frame: z (..., Z) float, or a frame (..., 64, 64, 3) uint8 that V encodes.
    action_noise: std of Gaussian noise added to C's output before clipping to [-1, 1] (static;
        0 adds nothing). M consumes the action that is returned, noise included.
    action_offset: (..., A) added to C's output with the noise, before the clip (None: nothing).

    Returns (action (..., A), carry', out): out is M's `MDNOutput` for (z_t, a_t), from which
    the dream samples z_{t+1}.
    """
    keep = (carry.restart <= 0.5)[..., None].astype(jnp.float32)
    lstm = LSTMState(c=carry.lstm.c * keep, h=carry.lstm.h * keep)
    if z_or_frame.dtype == jnp.uint8:
        mu, logvar = encode(world_model.vae, world_model.vae_params, z_or_frame)
        z = mu + jnp.exp(logvar / 2.0) * _normal(key, (mu.shape[-1],))
    else:
        z = z_or_frame
    if z.shape[-1] != world_model.z_dim or z.shape[:-1] != carry.restart.shape:
        raise ValueError(f"agent: z must be (..., {world_model.z_dim}) matching the carry's "
                         f"batch {carry.restart.shape}, got {z.shape}")
    spec = world_model.spec
    a = act(spec, ctrl_params, make_obs(spec.obs_mode, z, lstm.c, lstm.h))
    if action_offset is not None:
        a = a + action_offset
    if action_noise > 0:
        noise_keys = jax.vmap(lambda k: jax.random.fold_in(k, ACTION_NOISE_TAG))(key.reshape(-1))
        eps = _normal(noise_keys.reshape(key.shape), (a.shape[-1],))
        a = a + action_noise * eps
    if action_offset is not None or action_noise > 0:
        a = jnp.clip(a, -1.0, 1.0)
    new, out = m_step(world_model.mdn, world_model.mdn_params, lstm, z, a, carry.restart)
    return a, AgentCarry(lstm=new, restart=jnp.zeros_like(carry.restart)), out


@partial(jax.jit, static_argnames=("action_noise", "action_offset"))
def _policy_tick(
    base_key, world_model, ctrl_params_batch, c, h, fresh, cand, seeds, tags, steps, frames,
    active, *, action_noise, action_offset,
):
    """`agent_step` for all S slots, in blocks of SLOT_BLOCK (padded); inactive slots keep
    their state.

    c, h (S, H); fresh, active (S,) bool; cand, seeds, tags, steps (S,); frames (S, 64, 64, 3)
    uint8. Slot s's key is fold_in(base_key, seed, tag, step): an episode replays exactly.
    action_offset: half-widths (A,) of the episode's constant offset U(-x, x) on C's actions,
    drawn from fold_in(its step-0 key, ACTION_OFFSET_TAG); () for none.
    """

    S = frames.shape[0]
    pad = -S % SLOT_BLOCK

    def blocks(x, fill):  # (S, ...) -> (S_pad / SLOT_BLOCK, SLOT_BLOCK, ...)
        x = jnp.concatenate([x, jnp.full((pad, *x.shape[1:]), fill, x.dtype)])
        return x.reshape(-1, SLOT_BLOCK, *x.shape[1:])

    def slot_key(s, t, n):
        return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base_key, s), t), n)

    def block_tick(xs):
        c, h, fresh, cand, seeds, tags, steps, frames, on = xs
        keys = jax.vmap(slot_key)(seeds, tags, steps)
        offset = None
        if action_offset:
            width = jnp.asarray(action_offset, jnp.float32)
            okeys = jax.vmap(lambda s, t: jax.random.fold_in(slot_key(s, t, 0),
                                                             ACTION_OFFSET_TAG))(seeds, tags)
            offset = width * jax.vmap(lambda k: jax.random.uniform(
                k, width.shape, minval=-1.0, maxval=1.0))(okeys)
        slot_params = jax.tree.map(lambda p: p[cand], ctrl_params_batch)
        # a fresh slot starts from the zero state; as a multiply, not a select, which is also
        # what keeps the rounding of every run before this module's (the pipeline's numbers)
        keep = (~fresh)[:, None].astype(jnp.float32)
        lstm = LSTMState(c=c * keep, h=h * keep)
        restart = (fresh.astype(jnp.float32) if world_model.mdn.restart_input
                   else jnp.zeros(fresh.shape, jnp.float32))
        carry = AgentCarry(lstm=lstm, restart=restart)
        a, new, _ = agent_step(keys, world_model, slot_params, carry, frames,
                               action_noise=action_noise, action_offset=offset)
        on = on[:, None]
        return a, jnp.where(on, new.lstm.c, lstm.c), jnp.where(on, new.lstm.h, lstm.h)

    xs = [blocks(x, f) for x, f in ((c, 0), (h, 0), (fresh, True), (cand, 0), (seeds, 0),
                                    (tags, 0), (steps, 0), (frames, 0), (active, False))]
    return tuple(y.reshape(-1, *y.shape[2:])[:S] for y in jax.lax.map(block_tick, xs))


class WorldModelPolicy:
    """`BatchPolicy` (dreamjax.envs.pool) running `agent_step` for every pool slot at once.

    ctrl_params_batch: C's params with a leading candidate axis (P, ...). With P > 1, slot s
    plays candidate `spec.tag` of the episode it was reset to (real-env CMA-ES); with P = 1 every
    episode plays the one controller whatever its tag (evaluation, collection). V's noise (and
    the action noise, std `action_noise`) is keyed by (seed, tag, step) of the episode, so a
    re-run episode is identical in any slot. With `action_offset` (half-widths (A,)) every
    episode also adds a constant offset U(-x, x), drawn from the same key, to C's actions.
    """

    def __init__(
        self, world_model: WorldModel, ctrl_params_batch: Any, *, seed: int = 0,
        action_noise: float = 0.0, action_offset: tuple[float, ...] = (),
    ):
        leaves = jax.tree.leaves(ctrl_params_batch)
        if not leaves or any(x.ndim < 1 for x in leaves):
            raise ValueError("WorldModelPolicy: ctrl_params_batch needs a leading candidate axis")
        if world_model.vae is None:
            raise ValueError("WorldModelPolicy: the WorldModel needs V to encode frames")
        if not action_noise >= 0:
            raise ValueError(f"WorldModelPolicy: action_noise must be >= 0, got {action_noise}")
        if action_offset and (len(action_offset) != world_model.action_dim
                              or not all(x >= 0 for x in action_offset)):
            raise ValueError(f"WorldModelPolicy: action_offset needs {world_model.action_dim}"
                             f" half-widths >= 0, got {action_offset}")
        self.num_candidates = int(leaves[0].shape[0])
        self.world_model = world_model
        self.ctrl_params_batch = ctrl_params_batch
        self.action_noise = float(action_noise)
        self.action_offset = tuple(float(x) for x in action_offset)
        self.base_key = jax.random.key(seed)
        H = world_model.hidden
        self.cand = np.zeros(0, np.int32)
        self.seeds = np.zeros(0, np.uint32)
        self.tags = np.zeros(0, np.uint32)
        self.steps = np.zeros(0, np.uint32)
        self.fresh = np.zeros(0, bool)
        self.c = jnp.zeros((0, H), jnp.float32)
        self.h = jnp.zeros((0, H), jnp.float32)
        self._resize(1)

    def _resize(self, n: int) -> None:
        """Grow the per-slot arrays to at least n slots (new slots are fresh)."""
        old = self.cand.shape[0]
        if old >= n:
            return

        def grow(a, fill, dtype):
            out = np.full((n, *np.shape(a)[1:]), fill, dtype)
            out[:old] = np.asarray(a)
            return out

        self.cand = grow(self.cand, 0, np.int32)
        self.seeds = grow(self.seeds, 0, np.uint32)
        self.tags = grow(self.tags, 0, np.uint32)
        self.steps = grow(self.steps, 0, np.uint32)
        self.fresh = grow(self.fresh, True, bool)
        self.c = jnp.asarray(grow(self.c, 0.0, np.float32))
        self.h = jnp.asarray(grow(self.h, 0.0, np.float32))

    def reset(self, slot: int, spec: Any) -> None:
        """Slot `slot` starts episode `spec`: a fresh LSTM state, its candidate, step 0."""
        if self.num_candidates > 1 and not 0 <= spec.tag < self.num_candidates:
            raise ValueError(f"WorldModelPolicy: spec.tag {spec.tag} is not a candidate index "
                             f"(have {self.num_candidates})")
        self._resize(slot + 1)
        self.cand[slot] = spec.tag if self.num_candidates > 1 else 0
        self.seeds[slot] = np.uint32(spec.seed % 2**32)
        self.tags[slot] = np.uint32(spec.tag % 2**32)
        self.steps[slot] = 0
        self.fresh[slot] = True

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3) uint8, active (S,) bool -> (S, A) raw actions in [-1, 1]."""
        frames = np.asarray(frames)
        S = frames.shape[0]
        if frames.shape[1:] != FRAME_SHAPE or np.shape(active) != (S,):
            raise ValueError(f"WorldModelPolicy.act: need frames (S, 64, 64, 3) and active (S,), "
                             f"got {frames.shape} and {np.shape(active)}")
        self._resize(S)
        active = np.asarray(active, bool)
        # copies: JAX may alias host buffers, and these are mutated after the call
        host = [x[:S].copy() for x in (self.fresh, self.cand, self.seeds, self.tags, self.steps)]
        a, c, h = _policy_tick(
            self.base_key, self.world_model, self.ctrl_params_batch, self.c[:S], self.h[:S],
            *host, frames.copy(), active.copy(), action_noise=self.action_noise,
            action_offset=self.action_offset,
        )
        n = self.c.shape[0]
        self.c = c if n == S else self.c.at[:S].set(c)
        self.h = h if n == S else self.h.at[:S].set(h)
        self.steps[:S] += active.astype(np.uint32)
        self.fresh[:S] &= ~active
        return np.asarray(a)


@partial(jax.jit, static_argnums=0)
def _decode(vae: Any, vae_params: Any, z: jax.Array) -> jax.Array:
    return vae.apply(vae_params, z, method="decode")


def render(vae: Any, vae_params: Any, z_seq: jax.Array, batch: int = 256) -> np.ndarray:
    """Decode latents z_seq (T, Z) (e.g. a dream's) with V -> (T, 64, 64, 3) uint8 frames."""
    z_seq = jnp.asarray(z_seq, jnp.float32)
    if z_seq.ndim != 2:
        raise ValueError(f"render: z_seq must be (T, Z), got {z_seq.shape}")
    frames = [np.asarray(_decode(vae, vae_params, z_seq[i : i + batch]))
              for i in range(0, z_seq.shape[0], batch)]
    x = np.concatenate(frames) if frames else np.zeros((0, *FRAME_SHAPE), np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
