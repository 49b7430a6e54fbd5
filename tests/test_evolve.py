"""CMA-ES: lazy eigendecomposition, strategy names and their early check, the fused generation
(sphere and dream), chunked scan == one-by-one, resume == uninterrupted (dream and real), one
loop and one file layout for both fitnesses, the controller file format, WorldModelPolicy."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms import CMA_ES
from test_train import _read_scalars

from dreamjax.agent import WorldModelPolicy, make_world_model
from dreamjax.config import ControllerConfig, ESConfig
from dreamjax.dream.env import make_dream_params, random_dream_params
from dreamjax.errors import ArtifactError, ConfigError
from dreamjax.es import (
    LazyCMA_ES,
    check_strategy,
    load_controller,
    make_strategy,
    save_controller,
    strategy_names,
    strategy_params,
    train_controller_dream,
    train_controller_real,
)
from dreamjax.es.dream import DreamFitness
from dreamjax.es.generation import es_generation, make_chunk_fn, make_host_chunk_fn
from dreamjax.es.loop import train_controller
from dreamjax.io import save_npz
from dreamjax.models.controller import (
    controller_for,
    controller_spec,
    init_controller,
    make_obs,
    obs_dim,
    ravel_params,
    zeros_params,
)
from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn

TARGET = jnp.linspace(-0.5, 0.5, 8)


def sphere(key, population, args):
    """Fitness (P,) = |x - TARGET|²; aux holds the same as a 'return'."""
    f = jnp.sum((population - args) ** 2, axis=-1)
    return f, {"mean_return": -f}


generation = jax.jit(es_generation, static_argnums=(1, 4))


def test_lazy_cma_with_zero_gap_is_evosax_cma():
    x0 = jnp.zeros(8)
    ours, ref = LazyCMA_ES(8, x0, eigen_gap=0.0), CMA_ES(8, x0)
    states = []
    for es in (ours, ref):
        p = strategy_params(es, 0.3)
        s = es.init(jax.random.key(0), x0, p)
        for g in range(4):
            s, _ = generation(jax.random.key(g), es, s, p, sphere, TARGET)
        states.append(s)
    np.testing.assert_allclose(states[0].mean, states[1].mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(states[0].C, states[1].C, rtol=1e-4, atol=1e-5)


def test_lazy_cma_refreshes_eigenbasis_on_pycma_schedule():
    es = LazyCMA_ES(8, jnp.zeros(8), eigen_gap=2.0)
    p = strategy_params(es, 0.3)
    s = es.init(jax.random.key(0), jnp.zeros(8), p)
    seen = []
    for g in range(9):
        s, _ = generation(jax.random.key(g), es, s, p, sphere, TARGET)
        seen.append(int(s.eigen_generation))
    assert seen == [-1, -1, 2, 2, 2, 5, 5, 5, 8]
    # pycma's lazy_update_gap = 1 / (c1 + cmu) / N / 10: every 3rd generation for the paper's C
    assert 2 < LazyCMA_ES(64, jnp.zeros(867)).eigen_gap < 3


def test_fused_generations_improve_sphere_and_chunking_is_exact():
    es = make_strategy("CMA_ES", 8, jnp.zeros(8))
    p = strategy_params(es, 0.3)
    s0 = es.init(jax.random.key(0), jnp.zeros(8), p)
    key = jax.random.key(1)
    chunked = make_chunk_fn(es, sphere, 5)
    single = make_chunk_fn(es, sphere, 1)
    s_a, m_a = s0, []
    for start in range(0, 30, 5):
        s_a, m = chunked(key, s_a, p, TARGET, start, 30)
        m_a.append(np.asarray(m["best_fitness"]))
    s_b, m_b = s0, []
    for g in range(30):
        s_b, m = single(key, s_b, p, TARGET, g, 30)
        m_b.append(np.asarray(m["best_fitness"]))
    np.testing.assert_allclose(s_a.mean, s_b.mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(m_a), np.concatenate(m_b), rtol=1e-4, atol=1e-6)
    f0 = float(jnp.sum(TARGET**2))
    assert float(jnp.sum((s_a.mean - TARGET) ** 2)) < 0.05 * f0
    # generations at or past `stop` leave the state unchanged
    s_c, _ = chunked(key, s_a, p, TARGET, 30, 30)
    np.testing.assert_array_equal(s_c.mean, s_a.mean)


def test_other_strategies_by_name_and_bad_names():
    es = make_strategy("Sep_CMA_ES", 8, jnp.zeros(8))
    p = strategy_params(es, 0.3)
    s = es.init(jax.random.key(0), jnp.zeros(8), p)
    s, m = make_chunk_fn(es, sphere, 10)(jax.random.key(1), s, p, TARGET, 0, 10)
    assert np.all(np.isfinite(m["best_fitness"]))
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("NoSuchES", 8, jnp.zeros(8))


def known_reward_dream(max_steps=10):
    """A tiny M built by hand whose reward is tanh(tanh(3·a0)) and which never ends: the cell
    forgets everything each step (f gate -20), opens i and o gates, and writes tanh(3·a0) into
    unit 0; the reward head's conditional means both read h0; the done bias is -20."""
    m = MDNRNN(z_dim=2, action_dim=3, hidden=4, n_mix=2, reward_head=True, done_head=True)
    p = jax.tree.map(jnp.zeros_like, init_mdnrnn(jax.random.key(0), m))["params"]
    H = 4
    kernel = p["lstm_kernel"].at[2, H].set(3.0)  # row a0 -> j gate of unit 0
    bias = p["lstm_bias"].at[:H].set(10.0).at[2 * H:3 * H].set(-20.0).at[3 * H:].set(10.0)
    out_w = p["output_w"].at[0, -2].set(1.0).at[0, -1].set(1.0)
    out_b = p["output_b"].at[0].set(-20.0)
    params = {"params": {"lstm_kernel": kernel, "lstm_bias": bias, "output_w": out_w,
                         "output_b": out_b}}
    return make_dream_params(m, params, jnp.zeros((3, 2)), jnp.zeros((3, 2)), max_steps=max_steps)


ES_SMALL = ESConfig(popsize=8, rollouts=2, dream_generations=6, eval_every=3, eval_episodes=4,
                    chunk=2, max_steps=10, sigma_init=0.5)


def test_dream_training_improves_known_reward_and_writes_outputs(tmp_path):
    dp = known_reward_dream()
    r = train_controller_dream(jax.random.key(0), dp, tmp_path, ES_SMALL, ControllerConfig("zh"),
                               progress=False)
    assert r.generations == 6 and len(r.history) == 6
    assert [e["generation"] for e in r.evals] == [3, 6]
    assert r.best_return > 4.0  # the zero controller (start) scores 0; the optimum is 7.59
    assert r.history[-1]["mean_return"] > r.history[0]["mean_return"]
    for rec in r.history:
        assert {"generation", "best_fitness", "mean_fitness", "mean_return", "best_return",
                "sigma", "mean_length", "wall_s"} <= set(rec)
    done = json.loads((tmp_path / "DONE.json").read_text())
    assert done["best_eval_return"] == r.best_return and done["num_params"] == 21
    c, params, meta = load_controller(tmp_path / "best.npz")
    assert meta["kind"] == "zh" and meta["obs_dim"] == 6
    np.testing.assert_allclose(ravel_params(params), ravel_params(r.params))
    again = train_controller_dream(jax.random.key(0), dp, tmp_path, ES_SMALL,
                                   ControllerConfig("zh"), progress=False)  # DONE: skipped
    assert again.best_return == r.best_return


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    dp = known_reward_dream()
    full = train_controller_dream(jax.random.key(3), dp, tmp_path / "a", ES_SMALL,
                                  ControllerConfig("zh"), progress=False)

    class InterruptError(Exception):
        pass

    def stop_after_first_chunk(records):
        raise InterruptError

    with pytest.raises(InterruptError):
        train_controller_dream(jax.random.key(3), dp, tmp_path / "b", ES_SMALL,
                               ControllerConfig("zh"), callback=stop_after_first_chunk,
                               progress=False)
    assert not (tmp_path / "b" / "DONE.json").exists()
    with pytest.raises(ValueError, match="another key"):
        train_controller_dream(jax.random.key(4), dp, tmp_path / "b", ES_SMALL,
                               ControllerConfig("zh"), progress=False)
    resumed = train_controller_dream(jax.random.key(3), dp, tmp_path / "b", ES_SMALL,
                                     ControllerConfig("zh"), progress=False)
    np.testing.assert_allclose(ravel_params(resumed.params), ravel_params(full.params),
                               rtol=1e-6)
    assert resumed.best_return == pytest.approx(full.best_return, rel=1e-6)
    assert len(resumed.history) == len(full.history) == 6
    for a, b in zip(resumed.history, full.history, strict=True):
        for k in ("generation", "best_fitness", "mean_fitness", "sigma", "mean_length"):
            assert a[k] == pytest.approx(b[k], rel=1e-5)


def test_missing_reward_head_is_refused_before_training(tmp_path):
    dp = known_reward_dream()
    no_reward = MDNRNN(z_dim=2, action_dim=3, hidden=4, n_mix=2, done_head=True)
    with pytest.raises(ValueError, match="no reward head"):
        train_controller_dream(jax.random.key(0), dp.replace(model=no_reward), tmp_path,
                               ES_SMALL, ControllerConfig("zh"), progress=False)
    assert not any(tmp_path.iterdir())


@functools.cache
def _tiny_world():
    """(V, its params, M, its params) at toy sizes, built once for the module (one compile of
    V's init)."""
    from dreamjax.models.vae import ConvVAE

    vae = ConvVAE(z_dim=2)
    frames = jnp.zeros((1, 64, 64, 3))
    vae_params = jax.jit(lambda k: vae.init(k, frames, method=ConvVAE.encode))(jax.random.key(0))
    mdn = MDNRNN(z_dim=2, action_dim=3, hidden=4, n_mix=2)
    return vae, vae_params, mdn, init_mdnrnn(jax.random.key(1), mdn)


def test_world_model_policy_matches_v_m_c_by_hand_and_replays():
    from dreamjax.envs.pool import EpisodeSpec
    from dreamjax.models.vae import ConvVAE

    vae, vp, mdn, mp = _tiny_world()
    c = controller_for("zh")
    o = obs_dim("zh", 2, 4)
    batch = jax.vmap(lambda k: init_controller(k, c, o))(jax.random.split(jax.random.key(2), 2))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 3, 64, 64, 3), dtype=np.uint8)

    def play(slot_specs, active, frames=frames):
        pol = WorldModelPolicy(make_world_model(vae, vp, mdn, mp, "zh"), batch, seed=5)
        for slot, spec in enumerate(slot_specs):
            pol.reset(slot, spec)
        return np.stack([pol.act(f, active) for f in frames]), pol

    specs = [EpisodeSpec(seed=11, tag=1), EpisodeSpec(seed=12, tag=0), EpisodeSpec(seed=13, tag=1)]
    active = np.array([True, True, False])
    acts, pol = play(specs, active)
    assert acts.shape == (4, 3, 3) and np.all(np.abs(acts) <= 1)
    np.testing.assert_array_equal(np.asarray(pol.h[2]), 0.0)  # inactive slot never advances
    # slot 1 by hand: V encode -> sampled z -> C on [z, h] -> M step
    from dreamjax.models.mdnrnn import MDNRNN as M

    state = mdn.initial_state((1,))
    p1 = jax.tree.map(lambda x: x[0], batch)
    base = jax.random.key(5)
    for t in range(4):
        mu, logvar = vae.apply(vp, frames[t, 1:2] / 255.0, method=ConvVAE.encode)
        k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base, 12), 0), t)
        z = mu + jnp.exp(logvar / 2) * jax.random.normal(k, (2,))
        a = c.apply(p1, make_obs("zh", z, state.c, state.h))
        np.testing.assert_allclose(acts[t, 1], a[0], rtol=1e-4, atol=1e-5)
        state, _ = mdn.apply(mp, state, z, a, method=M.step)
    # the same episode in another slot with other neighbours replays exactly
    acts2, _ = play([specs[1], specs[0], specs[2]], np.array([True, True, False]),
                    frames[:, [1, 0, 2]])
    np.testing.assert_allclose(acts2[:, 0], acts[:, 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a candidate"):
        pol.reset(0, EpisodeSpec(seed=1, tag=2))


class FakePool:
    """TEST FAKE standing in for `EnvPool` (no real env): each episode is `steps` ticks of
    constant frames, with reward = action[0] per tick, driven through the BatchPolicy protocol
    the same way EnvPool drives it (reset per slot, act on all slots)."""

    num_slots = 3

    def __init__(self, steps=3):
        self.steps = steps
        self.calls = []

    def run(self, specs, policy, record=False, progress=None):
        from dreamjax.envs.pool import EpisodeResult

        self.calls.append(list(specs))
        out = []
        for i in range(0, len(specs), self.num_slots):
            group = specs[i : i + self.num_slots]
            for slot, spec in enumerate(group):
                policy.reset(slot, spec)
            frames = np.full((self.num_slots, 64, 64, 3), 128, np.uint8)
            active = np.arange(self.num_slots) < len(group)
            total = np.zeros(self.num_slots)
            for _ in range(self.steps):
                total += policy.act(frames, active)[:, 0]
            out += [EpisodeResult(spec, float(total[s]), self.steps) for s, spec in
                    enumerate(group)]
        return out


def test_train_controller_real_host_loop(tmp_path):
    vae, vp, mdn, mp = _tiny_world()
    pool = FakePool()
    es = ESConfig(popsize=2, rollouts=2, generations=3, eval_every=2, eval_episodes=2)

    def factory(batch):
        return WorldModelPolicy(make_world_model(vae, vp, mdn, mp, "zh"), batch)

    r = train_controller_real(jax.random.key(0), pool, factory, tmp_path, es,
                              ControllerConfig("zh"), z_dim=2, hidden_size=4, progress=False)
    assert r.generations == 3 and [e["generation"] for e in r.evals] == [2, 3]
    gen1 = pool.calls[0]
    assert len(gen1) == 4 and [s.tag for s in gen1] == [0, 0, 1, 1]
    assert [s.seed for s in gen1[:2]] == [s.seed for s in gen1[2:]]  # i and i + P/2 share seeds
    assert pool.calls[1] != gen1  # new seeds each generation
    assert [s.seed for s in pool.calls[2]] == [0, 1]  # evaluation of the mean on fixed seeds
    assert (tmp_path / "DONE.json").exists() and (tmp_path / "best.npz").exists()


def test_train_controller_real_starts_from_init_params(tmp_path):
    """dream-then-real: the first generation is sampled around the given initial mean."""
    vae, vp, mdn, mp = _tiny_world()
    ctrl = controller_for("zh")
    init = jax.tree.map(lambda x: jnp.full_like(x, 0.5), zeros_params(ctrl, 2 + 4))
    batches = []

    def factory(batch):
        batches.append(batch)
        return WorldModelPolicy(make_world_model(vae, vp, mdn, mp, "zh"), batch)

    es = ESConfig(popsize=2, rollouts=1, generations=1, eval_every=1, eval_episodes=1,
                  sigma_init=1e-4)
    train_controller_real(jax.random.key(0), FakePool(), factory, tmp_path, es,
                          ControllerConfig("zh"), z_dim=2, hidden_size=4, init_params=init,
                          progress=False)
    for leaf in jax.tree.leaves(batches[0]):
        np.testing.assert_allclose(np.asarray(leaf), 0.5, atol=1e-2)


def test_strategy_names_are_unique_sorted_and_checked_before_any_work(tmp_path):
    names = strategy_names()
    assert list(names) == sorted(set(names))
    assert {"CMA_ES", "CMA_ES_evosax", "Sep_CMA_ES"} <= set(names)
    for bad, why in (("NoSuchES", "unknown strategy 'NoSuchES'"), ("Open_ES", "no std_init"),
                     ("SV_CMA_ES", "num_populations")):
        with pytest.raises(ConfigError, match=why) as err:
            check_strategy(bad, 0.1)
        msg = str(err.value)
        assert msg.startswith("--es.strategy") and "\n" not in msg
        assert tuple(msg.split("choose one of ")[1].split(", ")) == names  # each name once
    with pytest.raises(ConfigError, match="sigma-init"):
        check_strategy("CMA_ES", 0.0)
    # what the check accepts builds and takes sigma_0; what it refuses for std_init cannot
    for name in ("CMA_ES", "CMA_ES_evosax", "Sep_CMA_ES", "SNES"):
        check_strategy(name, 0.1)
        p = strategy_params(make_strategy(name, 4, jnp.zeros(3)), 0.1)
        assert float(p.std_init) == pytest.approx(0.1)
    assert isinstance(make_strategy("CMA_ES", 4, jnp.zeros(3)), LazyCMA_ES)
    assert not isinstance(make_strategy("CMA_ES_evosax", 4, jnp.zeros(3)), LazyCMA_ES)
    with pytest.raises(ConfigError, match="std_init"):
        strategy_params(make_strategy("Open_ES", 4, jnp.zeros(3)), 0.1)
    # the training entry points refuse a bad strategy before writing anything
    bad = ESConfig(strategy="NoSuchES", popsize=2, generations=1, dream_generations=1)
    with pytest.raises(ConfigError, match="unknown strategy"):
        train_controller_dream(jax.random.key(0), known_reward_dream(), tmp_path / "d", bad,
                               ControllerConfig("zh"), progress=False)
    with pytest.raises(ConfigError, match="unknown strategy"):
        train_controller_real(jax.random.key(0), FakePool(), None, tmp_path / "r", bad,
                              ControllerConfig("zh"), z_dim=2, hidden_size=4, progress=False)
    assert not any(tmp_path.iterdir())


def test_controller_file_format_round_trip_old_files_and_corrupt_ones(tmp_path):
    c = controller_for("z-hidden", hidden_units=3)
    params = init_controller(jax.random.key(0), c, 5)
    path = save_controller(tmp_path / "c.npz", c, params, {"kind": "z-hidden", "obs_dim": 5})
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) == {"paper_flat", "meta"}  # no evosax-order `flat` copy
    c2, params2, meta = load_controller(path)
    assert c2 == c and meta["obs_dim"] == 5 and meta["kind"] == "z-hidden"
    np.testing.assert_array_equal(ravel_params(params2), ravel_params(params))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    old = save_npz(tmp_path / "old.npz", flat=np.asarray(ravel_params(params)), **arrays)
    np.testing.assert_array_equal(ravel_params(load_controller(old)[1]), ravel_params(params))

    def refused(name, **arrays):
        p = tmp_path / name
        if arrays:
            save_npz(p, **arrays)
        with pytest.raises(ArtifactError, match=str(p)):
            load_controller(p)

    refused("missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    refused("junk.npz")
    refused("no_meta.npz", paper_flat=arrays["paper_flat"])
    refused("short.npz", paper_flat=arrays["paper_flat"][:-1], meta=arrays["meta"])
    refused("bad_meta.npz", paper_flat=arrays["paper_flat"], meta=np.array('{"hidden": 3}'))


def _tiny_policy_factory():
    vae, vp, mdn, mp = _tiny_world()
    wm = make_world_model(vae, vp, mdn, mp, "zh")
    return lambda batch: WorldModelPolicy(wm, batch)


def test_dream_and_real_run_through_one_loop_with_one_file_layout(tmp_path):
    es = ESConfig(popsize=2, rollouts=1, generations=3, dream_generations=3, eval_every=2,
                  eval_episodes=1, chunk=2, max_steps=10, sigma_init=0.5)
    chunks = {"dream": [], "real": []}
    dream = train_controller_dream(jax.random.key(0), known_reward_dream(), tmp_path / "dream",
                                   es, ControllerConfig("zh"),
                                   callback=lambda r: chunks["dream"].append(len(r)),
                                   progress=False)
    real = train_controller_real(jax.random.key(0), FakePool(), _tiny_policy_factory(),
                                 tmp_path / "real", es, ControllerConfig("zh"), z_dim=2,
                                 hidden_size=4, callback=lambda r: chunks["real"].append(len(r)),
                                 progress=False)
    # the dream runs `chunk` generations per call up to the next evaluation; the real env one
    assert chunks == {"dream": [2, 1], "real": [1, 1, 1]}
    layout = ["DONE.json", "best.npz", "ckpt", "evals.jsonl", "log.jsonl"]
    for r, rate in ((dream, "dream_steps_per_s"), (real, "env_steps_per_s")):
        assert sorted(p.name for p in r.out_dir.iterdir()) == layout
        assert [e["generation"] for e in r.evals] == [2, 3]
        assert [h["generation"] for h in r.history] == [1, 2, 3]
        assert all(rate in h for h in r.history)
        assert r.best_return == max(e["eval_return"] for e in r.evals)
        assert {e["generation"]: e["eval_return"] for e in r.evals}[r.best_generation] == (
            r.best_return)
    assert ({*dream.history[0]} - {"dream_steps_per_s"}
            == {*real.history[0]} - {"env_steps_per_s"})
    assert [{*e} for e in dream.evals] == [{*e} for e in real.evals]
    d_done = json.loads((dream.out_dir / "DONE.json").read_text())
    r_done = json.loads((real.out_dir / "DONE.json").read_text())
    assert {*d_done} - {"dream"} == {*r_done}
    assert (d_done["trained_in"], r_done["trained_in"]) == ("dream", "real")
    assert load_controller(dream.out_dir / "best.npz")[2].keys() == load_controller(
        real.out_dir / "best.npz")[2].keys()


def test_real_resume_after_interrupt_equals_uninterrupted(tmp_path):
    es = ESConfig(popsize=2, rollouts=1, generations=3, eval_every=2, eval_episodes=1,
                  sigma_init=0.5)
    factory = _tiny_policy_factory()

    def train(folder, pool, callback=None):
        return train_controller_real(jax.random.key(7), pool, factory, tmp_path / folder, es,
                                     ControllerConfig("zh"), z_dim=2, hidden_size=4,
                                     callback=callback, progress=False)

    full_pool = FakePool()
    full = train("a", full_pool)

    class InterruptError(Exception):
        pass

    def stop_after_two(records):
        if records[-1]["generation"] == 2:
            raise InterruptError

    first, second = FakePool(), FakePool()
    with pytest.raises(InterruptError):
        train("b", first, stop_after_two)
    resumed = train("b", second)
    # generation 3 was played on the same env seeds after the resume
    assert [(s.seed, s.tag) for c in first.calls + second.calls for s in c] == [
        (s.seed, s.tag) for c in full_pool.calls for s in c]
    np.testing.assert_array_equal(ravel_params(resumed.params), ravel_params(full.params))
    assert resumed.best_generation == full.best_generation
    for a, b in zip(resumed.history, full.history, strict=True):
        for k in ("generation", "best_fitness", "mean_fitness", "sigma", "mean_length"):
            assert a[k] == b[k]
    assert resumed.evals == full.evals


def test_real_zero_generations_evaluates_the_initial_mean(tmp_path):
    pool = FakePool()
    es = ESConfig(popsize=2, rollouts=1, generations=0, eval_episodes=2)
    r = train_controller_real(jax.random.key(0), pool, _tiny_policy_factory(), tmp_path, es,
                              ControllerConfig("zh"), z_dim=2, hidden_size=4, progress=False)
    assert (r.generations, r.best_generation, r.history, r.evals) == (0, 0, [], [])
    np.testing.assert_array_equal(ravel_params(r.params), 0.0)
    assert r.best_return == 0.0  # the zero controller's action (and reward) is 0
    assert [s.seed for s in pool.calls[0]] == [0, 1]


def test_es_tensorboard_scalars_equal_the_logs(tmp_path):
    """The ES loop's TensorBoard scalars equal its JSONL logs; without a folder, same result."""

    dp = known_reward_dream()
    spec = controller_spec("zh", dp.model.z_dim, dp.model.hidden, action_dim=dp.model.action_dim)
    r = train_controller(jax.random.key(0), lambda: DreamFitness.build(dp, ES_SMALL, spec),
                         tmp_path / "es", ES_SMALL, generations=ES_SMALL.dream_generations,
                         progress=False, tensorboard_dir=tmp_path / "tb")
    scalars = _read_scalars(tmp_path / "tb")
    for key in ("best_return", "mean_return", "sigma", "mean_length"):
        steps, values = zip(*scalars[f"controller/{key}"], strict=True)
        assert list(steps) == [h["generation"] for h in r.history]
        np.testing.assert_allclose(values, [h[key] for h in r.history], rtol=1e-6)
    for key, name in (("eval_return", "eval_return"), ("eval_std", "eval_std"),
                      ("best_return", "best_eval_return")):
        steps, values = zip(*scalars[f"controller/{name}"], strict=True)
        assert list(steps) == [e["generation"] for e in r.evals] == [3, 6]
        np.testing.assert_allclose(values, [e[key] for e in r.evals], rtol=1e-6)
    # no TensorBoard folder: no scalars, same result
    same = train_controller(jax.random.key(0), lambda: DreamFitness.build(dp, ES_SMALL, spec),
                            tmp_path / "es2", ES_SMALL, generations=ES_SMALL.dream_generations,
                            progress=False)
    assert same.best_return == r.best_return
    np.testing.assert_array_equal(jax.tree.leaves(same.params)[0], jax.tree.leaves(r.params)[0])


def test_host_generation_loop_equals_the_fused_scan():
    """`make_host_chunk_fn` (ask and tell jitted, the fitness on the host) computes what the
    fused `lax.scan` computes, with the same keys per generation."""
    es = make_strategy("CMA_ES", 8, jnp.zeros(8))
    p = strategy_params(es, 0.3)
    s0 = es.init(jax.random.key(0), jnp.zeros(8), p)
    key = jax.random.key(1)
    fused, host = make_chunk_fn(es, sphere, 4), make_host_chunk_fn(es, sphere, 4)
    s_a, s_b = s0, s0
    for start in range(0, 12, 4):
        s_a, m_a = fused(key, s_a, p, TARGET, start, 10)
        s_b, m_b = host(key, s_b, p, TARGET, start, 10)
        n = min(4, 10 - start)
        assert all(v.shape == (n,) for v in m_b.values()) and set(m_a) == set(m_b)
        for k in m_a:
            np.testing.assert_allclose(m_b[k], np.asarray(m_a[k])[:n], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s_b.mean, s_a.mean, rtol=1e-4, atol=1e-6)


def test_compacted_dream_training_equals_the_fused_one(tmp_path):
    """`--es.compact-every` changes how fast the dream runs, not what C learns: the same records
    and the same C, up to float rounding, with the dreams compacted every 16 steps as with one
    fused scan, on a dream whose episodes end at many different steps (256 per generation, so
    batches shrink)."""
    dp = random_dream_params(jax.random.key(0), done_bias=-0.12, max_steps=120)
    es = ESConfig(popsize=16, rollouts=16, dream_generations=4, eval_every=2, eval_episodes=128,
                  chunk=2, max_steps=120, sigma_init=0.1)
    runs = {}
    for every in (0, 16):
        cfg = dataclasses.replace(es, compact_every=every)
        runs[every] = train_controller_dream(jax.random.key(5), dp, tmp_path / str(every), cfg,
                                             ControllerConfig("zh"), progress=False)
    fused, compact = runs[0], runs[16]
    assert 10 < fused.history[0]["mean_length"] < 80  # most dreams end well before 120 steps
    for a, b in zip(fused.history, compact.history, strict=True):
        for k in ("best_fitness", "mean_fitness", "sigma", "mean_length"):
            assert b[k] == pytest.approx(a[k], rel=1e-5), k
    assert [e["eval_return"] for e in compact.evals] == pytest.approx(
        [e["eval_return"] for e in fused.evals], rel=1e-5)
    np.testing.assert_allclose(ravel_params(compact.params), ravel_params(fused.params),
                               rtol=1e-5, atol=1e-7)
