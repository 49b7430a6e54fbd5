"""The agent layer: the real-env policy acts exactly as the dream does on the same z sequence
(PAPER.md §1.5 timing), `agent_step` by hand, jit == eager, vmap == loop, the real-env policy's
noise keys, collection with action noise, and V's decoder for dream videos."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax.agent import (
    ACTION_NOISE_TAG,
    ACTION_OFFSET_TAG,
    AgentCarry,
    WorldModelPolicy,
    agent_step,
    initial_carry,
    make_world_model,
    render,
)
from dreamjax.dream.env import DreamEnv, random_dream_params
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.models.controller import init_controller, make_obs
from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn
from dreamjax.models.vae import ConvVAE

T = 6
Z = 4
ENV = DreamEnv()
reset_env = jax.jit(ENV.reset_env)
step_env = jax.jit(ENV.step_env)


class TableV(nn.Module):
    """TEST FAKE V (not a model): a frame whose pixels all equal t encodes to mu = table[t] with
    logvar = -1000, so the agent's sampled z = mu + exp(-500)·ε is exactly table[t] (exp(-500)
    underflows to 0 in float32). It lets the real-env policy be fed a given z sequence."""

    rows: int
    z_dim: int

    def setup(self):
        self.table = self.param("table", nn.initializers.zeros, (self.rows, self.z_dim))

    def encode(self, x):
        idx = jnp.round(x[:, 0, 0, 0] * 255.0).astype(jnp.int32)
        mu = self.table[idx]
        return mu, jnp.full_like(mu, -1000.0)


def _frame(t):
    return np.full((64, 64, 3), t, np.uint8)


def _dream_episode(kind, mdn, reward_mode, ctrl_key):
    """T steps of the dream under a random C: z_t, a_t and the LSTM state after each step."""
    p = random_dream_params(jax.random.key(3), mdn, done_bias=-50.0, obs_mode=kind,
                            reward_mode=reward_mode)
    wm0 = make_world_model(None, None, mdn, p.mdn_params, kind)
    params = init_controller(ctrl_key, wm0.spec.controller, wm0.spec.obs_dim)
    act = jax.jit(wm0.spec.controller.apply)
    obs, s = reset_env(jax.random.key(1), p)
    zs, acts, cs, hs = [], [], [], []
    for k in jax.random.split(jax.random.key(2), T):
        zs.append(s.z)
        a = act(params, obs)
        acts.append(a)
        obs, s, _, _, _ = step_env(k, s, a, p)
        cs.append(s.lstm.c)
        hs.append(s.lstm.h)
    return p.mdn_params, params, *map(np.stack, (zs, acts, cs, hs))


@pytest.mark.parametrize(
    ("kind", "mdn", "reward_mode"),
    [
        ("zh", MDNRNN(z_dim=Z, action_dim=3, hidden=8, n_mix=3, reward_head=True,
                      done_head=True), "head"),
        ("zch", MDNRNN(z_dim=Z, action_dim=3, hidden=8, n_mix=3, restart_input=True,
                       done_head=True), "survival"),
    ],
)
def test_real_env_policy_and_dream_act_alike_on_the_same_z(kind, mdn, reward_mode):
    """The dream (DreamEnv.step_env with C on its observation) and the real-env policy
    (WorldModelPolicy, frames -> V -> z) fed the dream's z_0..z_5 take the same actions and reach
    the same LSTM state (c, h) at every step: a_t from [z_t, h_t], then M consumes (z_t, a_t);
    with Doom's restart input, restart = 1 on the first step in both. The policy runs a second,
    active slot with other frames beside it. Compared to float rounding (rtol 1e-6): the dream
    applies C and M to one agent, the policy to a batch of slots (on this CPU they were
    bit-identical)."""
    mdn_params, params, zs, acts, cs, hs = _dream_episode(kind, mdn, reward_mode,
                                                          jax.random.key(7))
    vae = TableV(rows=T, z_dim=Z)
    wm = make_world_model(vae, {"params": {"table": jnp.asarray(zs)}}, mdn, mdn_params, kind)
    pol = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=3)
    pol.reset(0, EpisodeSpec(seed=10, tag=0))
    pol.reset(1, EpisodeSpec(seed=11, tag=0))
    for t in range(T):
        a = pol.act(np.stack([_frame(t), _frame(T - 1 - t)]), np.array([True, True]))
        np.testing.assert_allclose(a[0], acts[t], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pol.c[0], cs[t], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pol.h[0], hs[t], rtol=1e-6, atol=1e-7)
    assert not np.allclose(pol.h[1], hs[-1])


def _tiny_world(kind="zh"):
    vae = ConvVAE(z_dim=2)
    vp = jax.jit(lambda k: vae.init(k, jnp.zeros((1, 64, 64, 3)), method=ConvVAE.encode))(
        jax.random.key(0))
    mdn = MDNRNN(z_dim=2, action_dim=3, hidden=4, n_mix=2)
    wm = make_world_model(vae, vp, mdn, init_mdnrnn(jax.random.key(1), mdn), kind)
    return wm


def _slot_key(seed, tag, step, base=5):
    k = jax.random.key(base)
    for x in (seed, tag, step):
        k = jax.random.fold_in(k, np.uint32(x))
    return k


def test_world_model_policy_is_agent_step_with_episode_keys_and_replays():
    """Slot s at step t is `agent_step` with key fold_in(key(seed), spec.seed, spec.tag, t) and
    candidate spec.tag's params (the keys evaluation and real-env training have always used);
    an inactive slot does not advance; the same episode in another slot replays exactly."""
    wm = _tiny_world()
    c = wm.spec.controller
    batch = jax.vmap(lambda k: init_controller(k, c, wm.spec.obs_dim))(
        jax.random.split(jax.random.key(2), 2))
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 3, 64, 64, 3), dtype=np.uint8)
    specs = [EpisodeSpec(seed=11, tag=1), EpisodeSpec(seed=12, tag=0), EpisodeSpec(seed=13, tag=1)]

    def play(slot_specs, frames):
        pol = WorldModelPolicy(wm, batch, seed=5)
        for slot, spec in enumerate(slot_specs):
            pol.reset(slot, spec)
        return np.stack([pol.act(f, np.array([True, True, False])) for f in frames]), pol

    acts, pol = play(specs, frames)
    assert acts.shape == (4, 3, 3) and np.all(np.abs(acts) <= 1)
    np.testing.assert_array_equal(np.asarray(pol.h[2]), 0.0)
    carry = initial_carry(wm)
    p0 = jax.tree.map(lambda x: x[0], batch)
    for t in range(4):
        a, carry, _ = agent_step(_slot_key(12, 0, t), wm, p0, carry, jnp.asarray(frames[t, 1]))
        np.testing.assert_allclose(acts[t, 1], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pol.h[1], carry.lstm.h, rtol=1e-5, atol=1e-6)
    # by hand, from the pieces: V encode -> sampled z -> C on [z, h] -> M step
    state = wm.mdn.initial_state(())
    p1 = jax.tree.map(lambda x: x[1], batch)
    for t in range(4):
        mu, logvar = wm.vae.apply(wm.vae_params, frames[t, 0:1] / 255.0, method=ConvVAE.encode)
        z = mu[0] + jnp.exp(logvar[0] / 2) * jax.random.normal(_slot_key(11, 1, t), (2,))
        a = c.apply(p1, make_obs("zh", z, state.c, state.h))
        np.testing.assert_allclose(acts[t, 0], a, rtol=1e-4, atol=1e-5)
        state, _ = wm.mdn.apply(wm.mdn_params, state, z, a, method=MDNRNN.step)
    acts2, _ = play([specs[1], specs[0], specs[2]], frames[:, [1, 0, 2]])
    np.testing.assert_array_equal(acts2[:, 0], acts[:, 1])
    with pytest.raises(ValueError, match="not a candidate"):
        pol.reset(0, EpisodeSpec(seed=1, tag=2))


def test_collection_policy_one_controller_any_tag_with_action_noise():
    """As a collection policy: one controller plays episodes of any tag (the episode index);
    action noise N(0, std²) keyed by fold_in(episode key, ACTION_NOISE_TAG) is added before
    clipping to [-1, 1], M consumes the noisy action, and std 0 is the noiseless policy."""
    wm = _tiny_world()
    params = init_controller(jax.random.key(4), wm.spec.controller, wm.spec.obs_dim)
    params = jax.tree.map(lambda x: 3.0 * x, params)  # saturate some outputs to test clipping
    one = jax.tree.map(lambda x: x[None], params)
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 2, 64, 64, 3), dtype=np.uint8)

    def play(std):
        pol = WorldModelPolicy(wm, one, seed=5, action_noise=std)
        pol.reset(0, EpisodeSpec(seed=21, tag=7))
        pol.reset(1, EpisodeSpec(seed=22, tag=9))
        return np.stack([pol.act(f, np.array([True, True])) for f in frames]), pol

    noisy, pol = play(0.5)
    clean, _ = play(0.0)
    assert np.all(np.abs(noisy) <= 1) and not np.allclose(noisy, clean)
    carry = initial_carry(wm)
    for t in range(3):
        k = _slot_key(22, 9, t)
        a, carry, _ = agent_step(k, wm, params, carry, jnp.asarray(frames[t, 1]),
                                 action_noise=0.5)
        np.testing.assert_allclose(noisy[t, 1], a, rtol=1e-5, atol=1e-6)
        a0, _, _ = agent_step(k, wm, params, initial_carry(wm), jnp.asarray(frames[t, 1]))
        if t == 0:
            eps = jax.random.normal(jax.random.fold_in(k, ACTION_NOISE_TAG), (3,))
            np.testing.assert_allclose(a, np.clip(a0 + 0.5 * eps, -1, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pol.h[1], carry.lstm.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(play(0.5)[0], noisy)


def test_action_offset_is_one_draw_per_episode_added_before_the_clip():
    """`action_offset` (half-widths x): each episode adds one constant offset U(-x, x), drawn
    from fold_in(its step-0 key, ACTION_OFFSET_TAG), to C's actions with the noise and before
    the clip; a zero half-width leaves that dimension alone; M consumes the offset action."""
    wm = _tiny_world()
    params = init_controller(jax.random.key(4), wm.spec.controller, wm.spec.obs_dim)
    one = jax.tree.map(lambda x: x[None], params)
    frames = np.random.default_rng(1).integers(0, 256, size=(4, 2, 64, 64, 3), dtype=np.uint8)
    width = (0.0, 0.8, 0.3)

    def play(offset):
        pol = WorldModelPolicy(wm, one, seed=5, action_offset=offset)
        pol.reset(0, EpisodeSpec(seed=21, tag=7))
        pol.reset(1, EpisodeSpec(seed=22, tag=9))
        return np.stack([pol.act(f, np.array([True, True])) for f in frames]), pol

    shifted, pol = play(width)
    carry = initial_carry(wm)
    okey = jax.random.fold_in(_slot_key(22, 9, 0), ACTION_OFFSET_TAG)
    offset = np.asarray(width) * np.asarray(jax.random.uniform(okey, (3,), minval=-1.0,
                                                               maxval=1.0))
    assert offset[0] == 0 and np.all(np.abs(offset) <= width) and abs(offset[1]) > 0
    for t in range(4):
        a0, _, _ = agent_step(_slot_key(22, 9, t), wm, params, carry, jnp.asarray(frames[t, 1]))
        a, carry, _ = agent_step(_slot_key(22, 9, t), wm, params, carry,
                                 jnp.asarray(frames[t, 1]), action_offset=jnp.asarray(offset))
        np.testing.assert_allclose(a, np.clip(a0 + offset, -1, 1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(shifted[t, 1], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pol.h[1], carry.lstm.h, rtol=1e-5, atol=1e-6)
    clean, _ = play(())
    d0, d1 = shifted[0, 0] - clean[0, 0], shifted[0, 1] - clean[0, 1]
    assert not np.allclose(d0, d1)  # another episode, another offset
    with pytest.raises(ValueError, match="action_offset"):
        WorldModelPolicy(wm, one, action_offset=(0.1, 0.1))


def test_agent_step_jit_equals_eager_and_vmap_equals_loop():
    wm = _tiny_world()
    c = wm.spec.controller
    per_agent = jax.vmap(lambda k: init_controller(k, c, wm.spec.obs_dim))(
        jax.random.split(jax.random.key(2), 3))
    frames = jnp.asarray(
        np.random.default_rng(2).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8))
    keys = jax.random.split(jax.random.key(9), 3)
    h0 = jax.random.normal(jax.random.key(8), (3, 4))
    carry = AgentCarry(lstm=wm.mdn.initial_state((3,)).replace(h=h0),
                       restart=jnp.array([0.0, 1.0, 0.0]))
    eager = agent_step(keys, wm, per_agent, carry, frames)
    jitted = jax.jit(agent_step)(keys, wm, per_agent, carry, frames)
    vmapped = jax.jit(jax.vmap(agent_step, in_axes=(0, None, 0, 0, 0)))(
        keys, wm, per_agent, carry, frames)
    for out in (jitted, vmapped):
        jax.tree.map(partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), out, eager)
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], (keys, per_agent, carry, frames))
        a, new, _ = agent_step(one[0], wm, one[1], one[2], one[3])
        np.testing.assert_allclose(a, eager[0][i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.lstm.h, eager[1].lstm.h[i], rtol=1e-5, atol=1e-6)
    # restart = 1 zeroes the state: agent 1 acts as from a fresh episode
    a1, _, _ = agent_step(keys[1], wm, one_params(per_agent, 1), initial_carry(wm), frames[1])
    np.testing.assert_allclose(eager[0][1], a1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(eager[1].restart, 0.0)
    # a shared controller broadcasts over the batch; z is accepted instead of a frame
    shared = one_params(per_agent, 0)
    a, _, out = agent_step(None, wm, shared, carry, jnp.zeros((3, 2)))
    assert a.shape == (3, 3) and out.mu.shape == (3, 2, 2)


def one_params(batch, i):
    return jax.tree.map(lambda x: x[i], batch)


def test_agent_step_refuses_bad_inputs():
    wm = _tiny_world()
    params = init_controller(jax.random.key(0), wm.spec.controller, wm.spec.obs_dim)
    carry = initial_carry(wm, (2,))
    nested = jax.tree.map(lambda x: jnp.stack([x, x])[None], params)  # (1, 2, ...)
    with pytest.raises(ValueError, match="leading dims"):
        agent_step(None, wm, nested, carry, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="uint8"):
        agent_step(jax.random.split(jax.random.key(0), 2), wm, params, carry,
                   jnp.zeros((2, 64, 64, 4), jnp.uint8))
    with pytest.raises(ValueError, match="z must be"):
        agent_step(None, wm, params, carry, jnp.zeros((2, 5)))
    no_v = make_world_model(None, None, wm.mdn, wm.mdn_params)
    with pytest.raises(ValueError, match="no V"):
        agent_step(jax.random.split(jax.random.key(0), 2), no_v, params, carry,
                   jnp.zeros((2, 64, 64, 3), jnp.uint8))
    with pytest.raises(ValueError, match="needs V"):
        WorldModelPolicy(no_v, jax.tree.map(lambda x: x[None], params))
    with pytest.raises(ValueError, match="do not match"):
        make_world_model(None, None, MDNRNN(z_dim=2, action_dim=3, hidden=8, n_mix=2),
                         wm.mdn_params)


def test_render_decodes_latents_with_vae():
    z = jax.random.normal(jax.random.key(1), (3, 4))
    vae = ConvVAE(z_dim=4)
    vp = jax.jit(partial(vae.init, method=ConvVAE.decode))(jax.random.key(0), z)
    frames = render(vae, vp, z, batch=2)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    ref = vae.apply(vp, z, method=ConvVAE.decode)
    np.testing.assert_allclose(frames, np.round(np.asarray(ref) * 255), atol=1)


def test_world_model_policy_slot_results_do_not_depend_on_pool_size():
    """An episode's actions and state are bit-identical whatever the number of slots beside it
    (1, 3, 8 or 13): slots are computed in fixed blocks of SLOT_BLOCK, so a result does not
    depend on --workers or --envs-per-worker."""
    wm = _tiny_world()
    c = wm.spec.controller
    batch = jax.vmap(lambda k: init_controller(k, c, wm.spec.obs_dim))(
        jax.random.split(jax.random.key(4), 3))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(5, 13, 64, 64, 3), dtype=np.uint8)

    def play(S):
        pol = WorldModelPolicy(wm, batch, seed=7)
        for slot in range(S):
            pol.reset(slot, EpisodeSpec(seed=100 + slot, tag=slot % 3))
        acts = np.stack([pol.act(f[:S], np.ones(S, bool)) for f in frames])
        return acts[:, 0], np.asarray(pol.h[0])

    a1, h1 = play(1)
    for S in (3, 8, 13):
        aS, hS = play(S)
        np.testing.assert_array_equal(aS, a1)
        np.testing.assert_array_equal(hS, h1)
