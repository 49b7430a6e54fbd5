"""The dream (M as a gymnax env) and population rollouts: shapes under jit + vmap, the paper's
step timing, done threshold, truncation, gymnax auto-reset and wrappers, vmap == loop, the
recorded trajectory, and the dream loaded from a run folder."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from dreamjax import checkpoint, io
from dreamjax.agent import make_world_model
from dreamjax.config import ControllerConfig
from dreamjax.dream.ensemble import dream_rollouts
from dreamjax.dream.env import DreamEnv, make_dream_params, random_dream_params
from dreamjax.dream.rollout import population_rollouts, rollout, rollout_keys, trajectory
from dreamjax.errors import ArtifactError
from dreamjax.models.controller import controller_for, init_controller, obs_dim
from dreamjax.models.mdnrnn import MDNRNN, MDNOutput, init_mdnrnn, sample_next_z
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder

SMALL = MDNRNN(z_dim=4, action_dim=3, hidden=8, n_mix=3, reward_head=True, done_head=True)
ENV = DreamEnv()
reset_env = jax.jit(ENV.reset_env)
step_env = jax.jit(ENV.step_env)
vreset = jax.jit(jax.vmap(ENV.reset_env, in_axes=(0, None)))
vstep = jax.jit(jax.vmap(ENV.step_env, in_axes=(0, 0, 0, None)))


def small_params(done_bias=-50.0, max_steps=1000, **kw):
    return random_dream_params(jax.random.key(3), SMALL, done_bias=done_bias,
                               max_steps=max_steps, **kw)


def test_default_params_paper_shape_under_jit_and_vmap():
    env = DreamEnv()
    p = env.default_params
    assert (p.model.z_dim, p.model.action_dim, p.model.hidden, p.model.n_mix) == (32, 3, 256, 5)
    assert p.model.reward_head and p.model.done_head
    assert env.observation_space(p).shape == (288,) and env.action_space(p).shape == (3,)
    keys = jax.random.split(jax.random.key(0), 4)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, p)
    assert obs.shape == (4, 288) and state.z.shape == (4, 32) and state.lstm.h.shape == (4, 256)
    np.testing.assert_array_equal(obs[:, 32:], 0.0)  # h_0 = 0
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    obs, state, r, term, trunc, info = step(keys, state, jnp.zeros((4, 3)), p)
    assert obs.shape == (4, 288) and r.shape == (4,) and r.dtype == jnp.float32
    assert term.dtype == jnp.bool_ and trunc.shape == (4,)
    assert info["final_observation"].shape == (4, 288)


def test_step_follows_paper_timing_and_m_heads():
    """obs after step = [z_{t+1}, h_{t+1}] with h_{t+1} = M.step(h_t, z_t, a_t); reward and done
    come from M's heads for (z_t, a_t); z_{t+1} is the mixture sample at τ."""
    env = ENV
    p = small_params(done_bias=None, temperature=1.3)
    obs0, s0 = reset_env(jax.random.key(1), p)
    np.testing.assert_array_equal(obs0, jnp.concatenate([s0.z, jnp.zeros(8)]))
    a = jnp.array([0.3, -0.2, 0.9])
    k = jax.random.key(2)
    obs1, s1, r, term, info = step_env(k, s0, a, p)
    lstm, out = SMALL.apply(p.mdn_params, s0.lstm, s0.z, a, method=MDNRNN.step)
    z1 = sample_next_z(k, out, 1.3)
    np.testing.assert_allclose(obs1, jnp.concatenate([z1, lstm.h]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, out.reward, rtol=1e-5, atol=1e-6)
    assert bool(term) == bool(out.done_logit > 0) and int(s1.time) == 1
    np.testing.assert_allclose(info["done_logit"], out.done_logit)
    zch = env.get_obs(s1, p.replace(obs_mode="zch"))
    np.testing.assert_allclose(zch, jnp.concatenate([z1, lstm.c, lstm.h]), rtol=1e-5, atol=1e-6)


def test_dropout_dream_keeps_one_scaled_mask_per_episode():
    """With dropout p, each episode's world M sees z * m_z, a * m_a and h * m_h for one mask
    m ∈ {0, 1/(1-p)} drawn at reset and kept; episodes draw different masks; about p of the
    units are dropped; the reset's z_0 does not depend on p; p = 0 keeps no mask."""
    p_drop = 0.25
    base = small_params(done_bias=None, temperature=1.1)
    dp = base.replace(dropout=p_drop)
    assert reset_env(jax.random.key(1), base)[1].mask is None
    obs, s = reset_env(jax.random.key(1), dp)
    np.testing.assert_array_equal(s.z, reset_env(jax.random.key(1), base)[1].z)
    mask = np.asarray(s.mask)
    assert mask.shape == (4 + 3 + 8,)
    np.testing.assert_allclose(mask[mask > 0], 1 / (1 - p_drop), rtol=1e-6)
    lstm = s.lstm
    for t, k in enumerate(jax.random.split(jax.random.key(2), 5)):
        a = jnp.array([0.3, -0.2, 0.9]) * (t + 1) / 5
        world = lstm.replace(h=lstm.h * mask[7:])
        lstm, out = SMALL.apply(dp.mdn_params, world, s.z * mask[:4], a * mask[4:7],
                                method=MDNRNN.step)
        obs, s, r, _, _ = step_env(k, s, a, dp)
        np.testing.assert_array_equal(s.mask, mask)
        np.testing.assert_allclose(s.z, sample_next_z(k, out, 1.1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(obs[4:], lstm.h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r, out.reward, rtol=1e-5, atol=1e-6)
    _, many = vreset(jax.random.split(jax.random.key(3), 400), dp)
    masks = np.asarray(many.mask)
    assert len({m.tobytes() for m in masks}) > 300  # 15 units at p = 0.25: repeats happen
    assert abs(float((masks == 0).mean()) - p_drop) < 0.02
    with pytest.raises(ValueError, match="dropout must be in"):
        make_dream_params(SMALL, dp.mdn_params, dp.init_mu, dp.init_logvar, dropout=1.0)


@pytest.mark.parametrize(("bias", "expect"), [(50.0, True), (-50.0, False)])
def test_done_is_a_deterministic_logit_threshold(bias, expect):
    p = small_params(done_bias=bias)
    keys = jax.random.split(jax.random.key(0), 16)
    _, s = vreset(keys, p)
    _, _, _, term, _ = vstep(keys, s, jnp.zeros((16, 3)), p)
    assert bool(jnp.all(term == expect))


def test_sampled_done_has_the_calibrated_probability():
    """`done_mode="sample"`: with a constant done logit L and done weight w, a step ends the
    dream with probability sigmoid(L - log w) (the weighted BCE's minimiser is log(w·p/(1-p)));
    the z sample and the reward are those of the threshold dream; a bad mode or weight fails."""
    L, w, n = 0.4, 10.0, 4000
    base = small_params(done_bias=None)
    prm = base.mdn_params["params"]
    prm = {**prm, "output_w": prm["output_w"].at[:, 0].set(0.0),
           "output_b": prm["output_b"].at[0].set(L)}
    thr = base.replace(mdn_params={**base.mdn_params, "params": prm})
    smp = make_dream_params(SMALL, thr.mdn_params, thr.init_mu, thr.init_logvar,
                            done_mode="sample", done_weight=w)
    keys = jax.random.split(jax.random.key(7), n)
    _, s = vreset(keys, smp)
    a = jnp.full((n, 3), 0.2)
    _, s_smp, r_smp, term, info = vstep(keys, s, a, smp)
    _, s_thr, r_thr, term_thr, _ = vstep(keys, s, a, thr)
    np.testing.assert_allclose(info["done_logit"], L, rtol=1e-6)
    assert bool(jnp.all(term_thr))  # L > 0: the threshold always ends it
    p_done = 1.0 / (1.0 + np.exp(-(L - np.log(w))))
    assert abs(float(term.mean()) - p_done) < 4 * np.sqrt(p_done * (1 - p_done) / n)
    np.testing.assert_array_equal(s_smp.z, s_thr.z)
    np.testing.assert_array_equal(r_smp, r_thr)
    with pytest.raises(ValueError, match="unknown done_mode"):
        make_dream_params(SMALL, thr.mdn_params, thr.init_mu, thr.init_logvar, done_mode="coin")
    with pytest.raises(ValueError, match="done_weight must be > 0"):
        make_dream_params(SMALL, thr.mdn_params, thr.init_mu, thr.init_logvar, done_weight=0.0)


def test_done_matches_logit_sign_on_random_states():
    p = small_params(done_bias=0.0)
    keys = jax.random.split(jax.random.key(5), 16)
    _, s = vreset(keys, p)
    a = jax.random.uniform(jax.random.key(6), (16, 3), minval=-1, maxval=1)
    _, _, _, term, info = vstep(keys, s, a, p)
    np.testing.assert_array_equal(term, info["done_logit"] > 0)
    assert 0 < int(term.sum()) < 16


def test_truncation_at_step_limit_and_gymnax_auto_reset():
    env = DreamEnv()
    p = small_params(done_bias=-50.0, max_steps=3)
    obs, s = env.reset(jax.random.key(0), p)
    step = jax.jit(env.step)
    truncs = []
    for t in range(3):
        k = jax.random.key(10 + t)
        obs, s, r, term, trunc, info = step(k, s, jnp.ones(3) * 0.1, p)
        truncs.append(bool(trunc))
        assert not bool(term)
    assert truncs == [False, False, True]
    assert int(s.time) == 0  # auto-reset
    _, k_reset = jax.random.split(jax.random.key(12))
    obs_re, s_re = reset_env(k_reset, p)
    np.testing.assert_allclose(obs, obs_re, rtol=1e-6)
    np.testing.assert_allclose(s.z, s_re.z, rtol=1e-6)
    assert not np.allclose(info["final_observation"], obs)


def test_termination_auto_resets():
    env = DreamEnv()
    p = small_params(done_bias=50.0)
    _, s = env.reset(jax.random.key(0), p)
    _, s, _, term, trunc, _ = env.step(jax.random.key(1), s, jnp.zeros(3), p)
    assert bool(term) and not bool(trunc) and int(s.time) == 0


def test_reward_modes_and_missing_heads():
    p = small_params(reward_mode="survival")
    _, s = reset_env(jax.random.key(0), p)
    assert float(step_env(jax.random.key(1), s, jnp.zeros(3), p)[2]) == 1.0
    no_reward = MDNRNN(z_dim=4, action_dim=3, hidden=8, n_mix=3, done_head=True)
    mp = init_mdnrnn(jax.random.key(0), no_reward)
    with pytest.raises(ValueError, match="no reward head"):
        make_dream_params(no_reward, mp, jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    ok = make_dream_params(no_reward, mp, jnp.zeros((2, 4)), jnp.zeros((2, 4)),
                           reward_mode="survival")
    assert ok.reward_mode == "survival"
    bare = MDNRNN(z_dim=4, action_dim=3, hidden=8, n_mix=3)
    with pytest.raises(ValueError, match="done head"):
        make_dream_params(bare, init_mdnrnn(jax.random.key(0), bare), jnp.zeros((2, 4)),
                          jnp.zeros((2, 4)), reward_mode="survival")
    with pytest.raises(ValueError, match="Z=5"):
        make_dream_params(SMALL, init_mdnrnn(jax.random.key(0), SMALL), jnp.zeros((2, 5)),
                          jnp.zeros((2, 5)))


@partial(jax.jit, static_argnums=0)
def _sample_many(fn, keys, out, tau):
    return jax.vmap(lambda k: fn(k, out, tau))(keys)


def test_dream_sampler_component_frequencies_and_spread():
    """The dream's sampler (`sample_next_z`, inverse CDF): component frequencies
    softmax(logpi / τ), per-component spread sigma·sqrt(τ)."""
    logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    out = MDNOutput(
        logpi=jnp.broadcast_to(jax.nn.log_softmax(logits), (2, 3)),
        mu=jnp.broadcast_to(jnp.array([-10.0, 0.0, 10.0]), (2, 3)),
        logsigma=jnp.broadcast_to(jnp.log(jnp.array([0.3, 0.5, 0.8])), (2, 3)),
    )
    n = 40_000
    keys = jax.random.split(jax.random.key(0), n)
    for tau in (0.5, 1.0, 2.0):
        probs = np.asarray(jax.nn.softmax(logits / tau))
        z = np.asarray(_sample_many(sample_next_z, keys, out, tau)).ravel()
        comp = np.digitize(z, [-5.0, 5.0])
        freq = np.bincount(comp, minlength=3) / z.size
        np.testing.assert_allclose(freq, probs, atol=0.01)
        for c, (m, sd) in enumerate([(-10.0, 0.3), (0.0, 0.5), (10.0, 0.8)]):
            zc = z[comp == c]
            if zc.size > 2000:
                assert abs(zc.mean() - m) < 0.1
                assert abs(zc.std() - sd * np.sqrt(tau)) < 0.05 * sd * np.sqrt(tau) + 0.02


def test_gymnax_wrappers_and_generic_jitted_loop():
    """LogWrapper(FlattenObservationWrapper(DreamEnv)) in a plain jitted scan over env.step."""
    env = LogWrapper(FlattenObservationWrapper(DreamEnv()))
    p = small_params(done_bias=-50.0, max_steps=4)

    @jax.jit
    def run(key):
        obs, state = env.reset(key, p)

        def body(carry, k):
            obs, state = carry
            k_a, k_s = jax.random.split(k)
            a = jax.random.uniform(k_a, (3,), minval=-1.0, maxval=1.0)
            obs, state, r, term, trunc, info = env.step(k_s, state, a, p)
            return (obs, state), (r, info["returned_episode"],
                                  info["returned_episode_returns"],
                                  info["returned_episode_lengths"], obs)

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 12))[1]

    r, ended, ep_ret, ep_len, obs = jax.device_get(run(jax.random.key(0)))
    assert obs.shape == (12, 12)
    np.testing.assert_array_equal(ended, [False, False, False, True] * 3)
    np.testing.assert_array_equal(ep_len[ended], [4, 4, 4])
    np.testing.assert_allclose(ep_ret[ended], r.reshape(3, 4).sum(1), rtol=1e-5)


def _policy_setup():
    c = controller_for("zh")
    o = obs_dim("zh", 4, 8)
    pop = jax.vmap(lambda k: init_controller(k, c, o))(jax.random.split(jax.random.key(7), 4))
    return c, pop


def test_population_rollouts_vmap_equals_loop_of_single_rollouts():
    env = DreamEnv()
    p = small_params(done_bias=0.5, max_steps=9)
    c, pop = _policy_setup()
    key = jax.random.key(11)
    res = jax.jit(lambda k, pp, ep: population_rollouts(k, env, ep, c.apply, pp, 3, 12))(
        key, pop, p)
    assert res.returns.shape == (4, 3) and res.lengths.shape == (4, 3)
    keys = rollout_keys(key, 4, 3, antithetic=True)
    one = jax.jit(lambda k, pp, ep: rollout(k, env, ep, c.apply, pp, 12))
    for i in range(4):
        for j in range(3):
            r1 = one(keys[i, j], jax.tree.map(lambda x, i=i: x[i], pop), p)
            np.testing.assert_allclose(res.returns[i, j], r1.returns, rtol=1e-5, atol=1e-6)
            assert int(res.lengths[i, j]) == int(r1.lengths)
    assert int(res.lengths.max()) <= 9 and int(res.lengths.min()) >= 1


def test_antithetic_pairs_share_episodes_and_return_stops_at_termination():
    env = DreamEnv()
    p = small_params(done_bias=-50.0, max_steps=5)
    c, pop = _policy_setup()
    pop = jax.tree.map(lambda x: x.at[2].set(x[0]), pop)  # candidates 0 and 0 + P/2 equal
    res = jax.jit(lambda k, pp, ep: population_rollouts(k, env, ep, c.apply, pp, 2, 8))(
        jax.random.key(1), pop, p)
    np.testing.assert_array_equal(res.returns[0], res.returns[2])
    assert not np.allclose(res.returns[0], res.returns[1])
    np.testing.assert_array_equal(res.lengths, 5)  # truncated at 5 of the 8 scanned steps
    # the return is the sum of the first 5 rewards of a manual step loop
    k_reset, k_steps = jax.random.split(rollout_keys(jax.random.key(1), 4, 2, True)[0, 0])
    obs, s = reset_env(k_reset, p)
    total = 0.0
    params0 = jax.tree.map(lambda x: x[0], pop)
    act = jax.jit(c.apply)
    for k in jax.random.split(k_steps, 8)[:5]:
        obs, s, r, _, _ = step_env(k, s, act(params0, obs), p)
        total += float(r)
    np.testing.assert_allclose(res.returns[0, 0], total, rtol=1e-5)


def test_trajectory_records_the_rollout_episode():
    """`trajectory` plays `rollout`'s episode (same keys): without termination its rewards sum to
    the rollout's return; states[t] is the state action t was taken in (states[0]: the reset)."""
    env = DreamEnv()
    p = small_params(done_bias=-50.0, max_steps=100)
    c, pop = _policy_setup()
    params0 = jax.tree.map(lambda x: x[0], pop)
    key = jax.random.key(3)
    states, r, term = jax.jit(lambda k, pp, ep: trajectory(k, env, ep, c.apply, pp, 6))(
        key, params0, p)
    assert states.z.shape == (6, 4) and r.shape == (6,) and not bool(term.any())
    res = jax.jit(lambda k, pp, ep: rollout(k, env, ep, c.apply, pp, 6))(key, params0, p)
    np.testing.assert_allclose(r.sum(), res.returns, rtol=1e-5)
    _, s0 = reset_env(jax.random.split(key)[0], p)
    np.testing.assert_array_equal(states.z[0], s0.z)
    np.testing.assert_array_equal(states.time, np.arange(6))


def test_dream_params_from_a_run_folder(tmp_path):
    """`pipeline.artifacts` (the dream does no file I/O): M from mdnrnn/DONE.json and the
    checkpoint it points to, the latent bank from series/; missing or mismatched files raise
    ArtifactError naming the file and the stage to rerun."""
    run = RunFolder(tmp_path)
    mp = init_mdnrnn(jax.random.key(4), SMALL)
    checkpoint.save(tmp_path / "mdnrnn" / "ckpt", 6, {"params": mp, "opt_state": {"n": 1}})
    fields = {"z_dim": 4, "action_dim": 3, "hidden": 8, "n_mix": 3, "reward_head": True,
              "done_head": True}
    done = {"model": fields, "checkpoint": "ckpt", "mdnrnn_id": "m0"}
    io.write_json(tmp_path / "mdnrnn" / "DONE.json", done)
    mdn, params, mdn_id, members = artifacts.load_mdnrnn(run)
    assert mdn == SMALL and mdn_id == "m0" and members == 1
    jax.tree.map(np.testing.assert_array_equal, params, mp)
    wm = make_world_model(None, None, mdn, params, "zh")
    with pytest.raises(ArtifactError, match=r"initial_latents.npz.*rerun the encode stage"):
        artifacts.load_dream_params(run, wm)
    mu = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    io.save_npz(tmp_path / "series" / "initial_latents.npz", mu=mu, logvar=mu * 0 - 1)
    p = artifacts.load_dream_params(run, wm, temperature=1.15, max_steps=77)
    assert p.model == SMALL and int(p.max_steps_in_episode) == 77 and p.obs_mode == "zh"
    np.testing.assert_allclose(float(p.temperature), 1.15)
    np.testing.assert_array_equal(p.init_mu, mu)
    jax.tree.map(np.testing.assert_array_equal, p.mdn_params, mp)
    io.write_json(tmp_path / "mdnrnn" / "DONE.json", {**done, "model": {**fields, "hidden": 16}})
    with pytest.raises(ArtifactError, match=r"DONE.json: .*do not match.*rerun the mdnrnn") as e:
        artifacts.load_mdnrnn(run)
    assert "\n" not in str(e.value)  # one line
    io.write_json(tmp_path / "mdnrnn" / "DONE.json", {**done, "checkpoint": "gone"})
    with pytest.raises(ArtifactError, match=r"gone.*rerun the mdnrnn stage"):
        artifacts.load_mdnrnn(run)
    with pytest.raises(ArtifactError, match=r"vae/DONE.json: missing; rerun the vae stage"):
        artifacts.load_world_model(run, ControllerConfig("zh"))
    with pytest.raises(ArtifactError, match=r"nope/mdnrnn/DONE.json: missing"):
        artifacts.load_mdnrnn(RunFolder(tmp_path / "nope"))


def _episodes(lengths, z_dim=4, a_dim=3, seed=0):
    """Encoded episodes with V's sigma ~ 0 (logvar -30), so z = mu to float32 precision."""
    rng = np.random.default_rng(seed)
    return [{"mu": rng.normal(size=(T, z_dim)).astype(np.float32),
             "logvar": np.full((T, z_dim), -30.0, np.float32),
             "actions": rng.uniform(-1, 1, size=(T, a_dim)).astype(np.float32)}
            for T in lengths]


def test_real_starts_are_m_states_along_real_episodes():
    """`real_start_bank` entry (episode b, step t), t = 0, stride, 2·stride, ...: V's mu_t,
    logvar_t and the state M is in after reading steps 0..t-1 teacher-forced from zero (a
    loop of `m_step`), for episodes of unequal lengths; `max_starts` subsamples evenly."""
    from dreamjax.agent import m_step
    from dreamjax.dream.starts import real_start_bank

    params = small_params().mdn_params
    series = _episodes([23, 9, 17])
    mu, logvar, c, h = real_start_bank(jax.random.key(0), SMALL, params, series, stride=4)
    want = []
    for s in series:
        lstm = SMALL.initial_state(())
        for t in range(len(s["mu"])):
            if t % 4 == 0:
                want.append((s["mu"][t], lstm.c, lstm.h))
            lstm, _ = m_step(SMALL, params, lstm, s["mu"][t], s["actions"][t], jnp.float32(t == 0))
    assert mu.shape == (6 + 3 + 5, 4) and c.shape == h.shape == (14, 8) and logvar[0, 0] == -30
    for i, (m, cw, hw) in enumerate(want):
        np.testing.assert_array_equal(mu[i], m)
        np.testing.assert_allclose(c[i], cw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h[i], hw, rtol=1e-5, atol=1e-6)
    sub = real_start_bank(jax.random.key(0), SMALL, params, series, stride=4, max_starts=5)
    np.testing.assert_array_equal(sub[0], mu[np.linspace(0, 13, 5).astype(int)])
    with pytest.raises(ValueError, match="episode 1 needs"):
        real_start_bank(jax.random.key(0), SMALL, params, [series[0], {**series[1],
                        "actions": series[1]["actions"][:, :2]}])


def test_dream_from_a_real_start_continues_m_from_that_state():
    """With a bank of real states the dream resets to one entry's z and (c, h), restart 0
    (C sees [z, h] of that state), and its first step is M's step from there."""
    from dreamjax.agent import m_step
    from dreamjax.dream.starts import real_start_bank

    base = small_params(done_bias=-50.0, temperature=1.2)
    mu, logvar, c, h = real_start_bank(jax.random.key(0), SMALL, base.mdn_params,
                                       _episodes([30, 30]), stride=3)
    under_way = np.abs(h).sum(axis=1) > 0  # every entry but the two first frames
    assert under_way.sum() == 18
    mu, logvar, c, h = mu[under_way], logvar[under_way], c[under_way], h[under_way]
    dp = make_dream_params(SMALL, base.mdn_params, mu, logvar, temperature=1.2,
                           init_state=(c, h))
    obs, s = reset_env(jax.random.key(4), dp)
    i = int(np.argmin(np.abs(mu - np.asarray(s.z)).sum(axis=1)))
    np.testing.assert_allclose(s.z, mu[i], atol=1e-5)
    np.testing.assert_array_equal(s.lstm.h, h[i])
    np.testing.assert_array_equal(s.lstm.c, c[i])
    np.testing.assert_array_equal(obs, jnp.concatenate([s.z, h[i]]))
    assert float(s.restart) == 0.0
    a = jnp.array([0.1, -0.4, 0.7])
    k = jax.random.key(5)
    _, s1, r, _, _ = step_env(k, s, a, dp)
    lstm, out = m_step(SMALL, dp.mdn_params, s.lstm, s.z, a, s.restart)
    np.testing.assert_allclose(s1.lstm.h, lstm.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s1.z, sample_next_z(k, out, 1.2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, out.reward, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="initial states c, h must both be"):
        make_dream_params(SMALL, base.mdn_params, mu, logvar, init_state=(c[:-1], h))


def test_data_policy_lengths_in_the_dream_are_analytic():
    """`schedule_lengths`: a dream that always ends lives 1 step, one that never ends the step
    limit, and one that ends with probability p a step the truncated geometric mean
    (1 - (1 - p)^T) / p."""
    from dreamjax.dream.calibration import schedule_lengths

    run = jax.jit(schedule_lengths)
    always = small_params(done_bias=50.0)
    never = small_params(done_bias=-50.0)
    zeros = jnp.zeros((8, 30, SMALL.action_dim))
    np.testing.assert_array_equal(run(jax.random.key(0), always, zeros), 1)
    np.testing.assert_array_equal(run(jax.random.key(0), never, zeros), 30)
    prm = never.mdn_params["params"]
    prm = {**prm, "output_w": prm["output_w"].at[:, 0].set(0.0),
           "output_b": prm["output_b"].at[0].set(0.0)}
    coin = make_dream_params(SMALL, {**never.mdn_params, "params": prm}, never.init_mu,
                             never.init_logvar, done_mode="sample", done_weight=9.0)
    p, T, n = 0.1, 40, 3000  # sigmoid(0 - log 9) = 0.1
    lengths = np.asarray(run(jax.random.key(1), coin, jnp.zeros((n, T, SMALL.action_dim))))
    want = (1 - (1 - p) ** T) / p
    assert lengths.min() >= 1 and lengths.max() <= T
    assert abs(lengths.mean() - want) < 4 * lengths.std() / np.sqrt(n)


def _dies_on_right():
    """Dream params of a hand-set M whose done logit is 100·tanh(tanh(50·a_0)) (LSTM unit 0's
    input and output gates open, forget gate shut, its cell input reading a_0; columns
    i|j|f|o): a step with a_0 > 0 ends the dream, any other never does."""
    H, D = SMALL.hidden, SMALL.z_dim + SMALL.action_dim
    never = small_params(done_bias=-50.0)
    kernel = jnp.zeros((D + H, 4 * H)).at[SMALL.z_dim, H].set(50.0)  # a_0 -> j of unit 0
    bias = jnp.zeros(4 * H).at[0].set(50.0).at[2 * H].set(-50.0).at[3 * H].set(50.0)
    out_w = jnp.zeros((H, never.mdn_params["params"]["output_w"].shape[1])).at[0, 0].set(100.0)
    out_b = jnp.zeros_like(never.mdn_params["params"]["output_b"])
    prm = {"lstm_kernel": kernel, "lstm_bias": bias, "output_w": out_w, "output_b": out_b}
    return never.replace(mdn_params={"params": prm})


def test_an_open_loop_schedule_plays_its_actions_in_order():
    """`schedule_lengths` in the M that dies on a_0 > 0: a schedule whose first positive action
    is at step k lives k + 1 steps in every dream (a held RIGHT: 1), an all-non-positive one (a
    held LEFT or nothing) its whole length T; the patrol probe (RIGHT first) dies on step 1,
    mirrored on its first RIGHT, step P/2 + 1; each episode plays its own schedule."""
    from dreamjax.dream.calibration import schedule_lengths
    from dreamjax.pipeline.doom import patrol_schedule

    T, A, dp = 40, SMALL.action_dim, _dies_on_right()
    run = jax.jit(schedule_lengths)
    for k in (0, 7, 39):
        actions = jnp.full((8, T, A), -0.5).at[:, k, 0].set(0.2)
        np.testing.assert_array_equal(run(jax.random.key(k), dp, actions), k + 1)
    for held, want in ((1.0, 1), (-1.0, T), (0.0, T)):  # the held-button probes
        np.testing.assert_array_equal(run(jax.random.key(0), dp, jnp.full((8, T, A), held)),
                                      want)
    patrol = jnp.pad(jnp.asarray(patrol_schedule(16, T)), ((0, 0), (0, A - 1)))  # a_0
    np.testing.assert_array_equal(run(jax.random.key(1), dp, jnp.stack([patrol] * 4)), 1)
    np.testing.assert_array_equal(run(jax.random.key(1), dp, jnp.stack([-patrol] * 4)),
                                  16 // 2 + 1)
    mixed = jnp.stack([patrol, -patrol, jnp.zeros((T, A))])
    np.testing.assert_array_equal(run(jax.random.key(2), dp, mixed), [1, 16 // 2 + 1, T])


@pytest.mark.parametrize("name", ["doom_random", "doom_sweep", "doom_patrol"])
def test_a_data_policy_plays_its_own_actions_in_the_dream(name):
    """The calibration's dream rows: `open_loop_schedules` of a Doom data policy played by
    `schedule_lengths` in the M that dies on a_0 > 0 end each episode on the first step its
    own schedule goes positive (or live T steps), a hand computation from the schedule."""
    from dreamjax.data.policies import POLICIES, open_loop_schedules
    from dreamjax.dream.calibration import schedule_lengths

    T, n = 300, 64
    sched = open_loop_schedules(POLICIES[name], 7, n, T)  # (n, T, 1)
    assert sched.shape == (n, T, 1) and sched.dtype == np.float32
    positive = sched[:, :, 0] > 0
    want = np.where(positive.any(1), positive.argmax(1) + 1, T)
    assert len(np.unique(want)) > 3  # the episodes differ
    actions = jnp.pad(jnp.asarray(sched), ((0, 0), (0, 0), (0, SMALL.action_dim - 1)))
    np.testing.assert_array_equal(jax.jit(schedule_lengths)(jax.random.key(0),
                                                            _dies_on_right(), actions), want)



DOOM_SHAPED = MDNRNN(z_dim=64, action_dim=1, hidden=512, n_mix=5, reward_head=False,
                     done_head=True)


@pytest.mark.parametrize("world", ["doom", "carracing"])
def test_compacted_rollouts_equal_population_rollouts(world):
    """Stepping only the live episodes (gathered every 16 steps into batches of 128 or 256 rows)
    gives the fused scan's lengths and its returns up to float rounding (each episode applies
    its own copy of C), on dreams whose episodes end at many different steps: Doom's shape
    ([z, c, h], its reward head read) and CarRacing's. An ensemble's dreams stay one vmapped
    program."""
    env = DreamEnv()
    if world == "doom":
        model = DOOM_SHAPED.clone(reward_head=True)
        p = random_dream_params(jax.random.key(0), model, done_bias=-0.15, max_steps=150,
                                obs_mode="zch", temperature=1.15)
        c, o = controller_for("zch"), obs_dim("zch", 64, 512)
    else:
        p = random_dream_params(jax.random.key(0), done_bias=-0.12, max_steps=150)
        c, o = controller_for("zh"), obs_dim("zh", 32, 256)
    pop = jax.vmap(lambda k: init_controller(k, c, o))(jax.random.split(jax.random.key(7), 16))
    key = jax.random.key(2)
    fused = jax.jit(lambda k, pp, ep: dream_rollouts(k, env, ep, c.apply, pp, 16, 150))(
        key, pop, p)
    compact = dream_rollouts(key, env, p, c.apply, pop, 16, 150, block=16)
    lengths = np.asarray(fused.lengths)
    assert lengths.min() < 20 and np.mean(lengths < 100) > 0.5 and lengths.max() > 100
    np.testing.assert_array_equal(np.asarray(compact.lengths), lengths)
    np.testing.assert_allclose(np.asarray(compact.returns), np.asarray(fused.returns),
                               rtol=1e-5, atol=1e-5)
    if world == "carracing":
        members = jax.tree.map(lambda x: jnp.stack([x, 0.9 * x]), p.mdn_params)
        ens = make_dream_params(p.model, p.mdn_params, p.init_mu, p.init_logvar, members=members)
        with pytest.raises(ValueError, match="compacted rollouts need one M"):
            dream_rollouts(key, env, ens, c.apply, pop, 16, 150, block=16)
