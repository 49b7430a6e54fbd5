"""The iterative loop's pieces: ensembles of Ms (training as one vmapped program, dreams with one
member per episode and C's memory from member 0), the ensemble fitness, M's fidelity on real
episodes, and the `--train-in iterative` controller stage end to end on `smoke` (a round's data
includes the previous round's controller episodes; resume in the middle of a round; the
dream-vs-real numbers are written)."""

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax import io
from dreamjax.agent import m_step
from dreamjax.config import profile_config
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.dream.ensemble import dream_rollouts, ensemble_fitness, ensemble_size, member
from dreamjax.dream.env import DreamEnv, make_dream_params
from dreamjax.dream.fidelity import (
    auc,
    death_anticipation,
    done_logits,
    episode_fidelity,
    open_loop,
    teacher_forced,
)
from dreamjax.dream.rollout import population_rollouts
from dreamjax.errors import ConfigError
from dreamjax.models.controller import controller_for, init_controller, obs_dim
from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn, mdnrnn_loss_fn
from dreamjax.pipeline import artifacts, iterate
from dreamjax.pipeline.carracing import CARRACING, carracing_runners, stage_key
from dreamjax.pipeline.report import render_markdown
from dreamjax.pipeline.run import RunFolder, fingerprints, run_stages, stage_config, validate
from dreamjax.pipeline.training import ensemble_loss

SMALL = MDNRNN(z_dim=4, action_dim=3, hidden=8, n_mix=3, reward_head=True, done_head=True)
ENV = DreamEnv()


def _members(k, n=3):
    return jax.vmap(init_mdnrnn, in_axes=(0, None))(jax.random.split(jax.random.key(k), n),
                                                    SMALL)


def _bank():
    mu = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    return mu, np.full_like(mu, -2.0)


def _pop():
    c = controller_for("zh")
    pop = jax.vmap(lambda k: init_controller(k, c, obs_dim("zh", 4, 8)))(
        jax.random.split(jax.random.key(7), 4))
    return c, pop


def _batch(B=3, T=6):
    rng = np.random.default_rng(1)
    return {"mu": rng.normal(size=(B, T + 1, 4)).astype(np.float32),
            "logvar": np.full((B, T + 1, 4), -3.0, np.float32),
            "actions": rng.uniform(-1, 1, size=(B, T + 1, 3)).astype(np.float32),
            "rewards": rng.choice([-0.1, 3.0], size=(B, T + 1)).astype(np.float32),
            "dones": np.zeros((B, T + 1), bool)}


def test_ensemble_loss_gives_each_member_its_own_gradient():
    """The ensemble's loss is the members' sum, so member k's gradient is exactly the one its own
    loss (on the same batch, with key split(key, K)[k]) gives it alone."""
    K, batch, key = 3, _batch(), jax.random.key(4)
    params = _members(0, K)
    loss_fn = functools.partial(mdnrnn_loss_fn, model=SMALL)
    ens = jax.jit(jax.value_and_grad(ensemble_loss(loss_fn, K, False), has_aux=True))
    (loss, metrics), grads = ens(params, batch, key)
    one = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    keys = jax.random.split(key, K)
    singles = []
    for k in range(K):
        (l_k, m_k), alone = one(jax.tree.map(lambda x, k=k: x[k], params), batch, keys[k])
        singles.append((l_k, m_k))
        jax.tree.map(lambda a, b, k=k: np.testing.assert_allclose(a[k], b, rtol=1e-5,
                                                                  atol=1e-7), grads, alone)
    np.testing.assert_allclose(loss, sum(s[0] for s in singles), rtol=1e-5)
    np.testing.assert_allclose(metrics["z_nll"], np.mean([s[1]["z_nll"] for s in singles]),
                               rtol=1e-5)


def _ensemble_dream(K=3, max_steps=7):
    members = _members(0, K)
    mu, lv = _bank()
    agent = jax.tree.map(lambda x: x[0], members)
    return make_dream_params(SMALL, agent, mu, lv, temperature=1.1, max_steps=max_steps,
                             members=members)


def test_ensemble_dream_one_member_per_episode():
    """Rollout columns [k R/K, (k+1) R/K) are member k's dream alone (keys fold_in(key, k)); the
    members' dreams differ; with the world equal to C's memory the two-M dream is the one-M
    dream."""
    K, R, T = 3, 6, 7
    dp = _ensemble_dream(K, T)
    assert ensemble_size(dp) == K
    c, pop = _pop()
    key = jax.random.key(5)
    res = jax.jit(lambda k, d, p: dream_rollouts(k, ENV, d, c.apply, p, R, T))(key, dp, pop)
    assert res.returns.shape == (4, R)
    per = R // K
    rollouts = jax.jit(lambda k, d, p, n: population_rollouts(k, ENV, d, c.apply, p, n, T),
                       static_argnums=3)
    for k in range(K):
        alone = rollouts(jax.random.fold_in(key, k), member(dp, k), pop, per)
        np.testing.assert_allclose(res.returns[:, k * per:(k + 1) * per], alone.returns,
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(res.returns[:, :per], res.returns[:, per:2 * per])
    one = make_dream_params(SMALL, dp.agent_params, dp.init_mu, dp.init_logvar,
                            temperature=1.1, max_steps=T)
    same = rollouts(key, member(dp, 0), pop, 2)
    plain = rollouts(key, one, pop, 2)
    np.testing.assert_allclose(same.returns, plain.returns, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="do not split evenly"):
        dream_rollouts(key, ENV, dp, c.apply, pop, 4, T)


def test_two_m_dream_shows_c_the_agents_memory():
    """In member 1's world, C sees [z, h] with h from the agent's M (member 0) fed the same z
    and a, as in the real env, while z, reward and done follow member 1."""
    dp = member(_ensemble_dream(2), 1)
    world = dp.mdn_params
    obs, s = ENV.reset_env(jax.random.key(0), dp)
    agent = world_lstm = SMALL.initial_state(())
    restart = jnp.float32(1.0)
    for k in jax.random.split(jax.random.key(1), 4):
        a = jnp.tanh(obs[:3])
        agent, _ = m_step(SMALL, dp.agent_params, agent, s.z, a, restart)
        world_lstm, out = m_step(SMALL, world, world_lstm, s.z, a, restart)
        obs, s, r, _, _ = ENV.step_env(k, s, a, dp)
        restart = jnp.float32(0.0)
        np.testing.assert_allclose(obs[4:], agent.h, rtol=1e-6)
        np.testing.assert_allclose(s.lstm.h, world_lstm.h, rtol=1e-6)
        np.testing.assert_allclose(r, out.reward, rtol=1e-6)
    assert not np.allclose(agent.h, world_lstm.h)


def test_ensemble_fitness_mean_and_worst_member():
    returns = jnp.array([[1.0, 3.0, 10.0, 20.0], [5.0, 5.0, 4.0, 6.0]])  # (P=2, R=4), K=2
    np.testing.assert_allclose(ensemble_fitness(returns, 2, "mean"), [-8.5, -5.0])
    np.testing.assert_allclose(ensemble_fitness(returns, 2, "min"), [-2.0, -5.0])
    np.testing.assert_allclose(ensemble_fitness(returns, 1, "min"), [-8.5, -5.0])
    with pytest.raises(ValueError, match="unknown ensemble fitness"):
        ensemble_fitness(returns, 2, "max")


def test_fidelity_teacher_forced_and_open_loop_follow_m_step():
    """teacher_forced is M read along the real z; open_loop feeds M its own mixture means; both
    equal a loop of m_step; a perfect-memory episode (z fixed to M's own means) has zero
    drift."""
    params = init_mdnrnn(jax.random.key(2), SMALL)
    rng = np.random.default_rng(3)
    T = 12
    mu = rng.normal(size=(T, 4)).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(T, 3)).astype(np.float32)
    r, logit, _ = teacher_forced(SMALL, params, mu, acts)
    lstm = SMALL.initial_state(())
    for t in range(T):
        lstm, out = m_step(SMALL, params, lstm, mu[t], acts[t], jnp.float32(t == 0))
        np.testing.assert_allclose(r[t], out.reward, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logit[t], out.reward_parts[0], rtol=1e-5, atol=1e-6)
    zs, r_open = open_loop(SMALL, params, mu[0], acts)
    own = np.concatenate([mu[:1], np.asarray(zs)])  # M's own trajectory as "V's" latents
    rewards = np.asarray(r_open) * 0 + 1.0
    f = episode_fidelity(SMALL, params, own[:T], acts, rewards, horizon=T - 1)
    assert max(f["open_loop_drift"].values()) < 1e-8
    assert f["one_step_z_error"] < 1e-8  # teacher forcing on M's own path: the same means
    assert f["real_return"] == pytest.approx(T) and f["steps"] == T


def test_auc_counts_ordered_pairs_and_ties():
    """AUC = P(positive scores above negative), ties 1/2: 1 when separated, 0 when reversed,
    1/2 for a constant score, and (1 + 1/2 + 1 + 1) / 4 for scores 1, 2, 2, 3 with positives
    at 2 and 3."""
    y = np.array([False, False, True, True])
    assert auc(np.array([0.0, 1.0, 2.0, 3.0]), y) == 1.0
    assert auc(np.array([3.0, 2.0, 1.0, 0.0]), y) == 0.0
    assert auc(np.zeros(4), y) == 0.5
    assert auc(np.array([1.0, 2.0, 2.0, 3.0]), np.array([False, True, False, True])) == 0.875
    with pytest.raises(ValueError, match="both classes"):
        auc(np.zeros(3), np.zeros(3, bool))


def test_death_anticipation_of_an_m_that_reads_the_action():
    """A hand-set M whose done logit is 100·tanh(tanh(50·a_0)) (LSTM unit 0: input and output
    gates open, forget gate shut, its cell input reading a_0): on episodes whose last 4 actions
    are +1 and the rest -1, `done_logits` equals a loop of m_step, "ends within 4 steps" is
    separated exactly (AUC 1), "ends on this step" ties each last step with the 3 before it
    (AUC (57 - 9/2) / 57 over 3 + 57 steps), and the step index cannot separate episodes of
    different lengths."""
    H, D = SMALL.hidden, SMALL.z_dim + SMALL.action_dim
    base = init_mdnrnn(jax.random.key(0), SMALL)["params"]
    prm = {"lstm_kernel": jnp.zeros((D + H, 4 * H)).at[SMALL.z_dim, H].set(50.0),
           "lstm_bias": jnp.zeros(4 * H).at[0].set(50.0).at[2 * H].set(-50.0).at[3 * H].set(50.0),
           "output_w": jnp.zeros_like(base["output_w"]).at[0, 0].set(100.0),
           "output_b": jnp.zeros_like(base["output_b"])}
    params = {"params": prm}
    rng = np.random.default_rng(0)
    episodes = []
    for T in (15, 20, 25):
        acts = np.zeros((T, 3), np.float32)
        acts[:, 0] = np.where(np.arange(T) >= T - 4, 1.0, -1.0)
        episodes.append((rng.normal(size=(T, 4)).astype(np.float32), acts))
    mu, acts = episodes[0]
    logit, lstm = np.asarray(done_logits(SMALL, params, mu, acts)), SMALL.initial_state(())
    for t in range(len(mu)):
        lstm, out = m_step(SMALL, params, lstm, mu[t], acts[t], jnp.float32(t == 0))
        np.testing.assert_allclose(logit[t], out.done_logit, rtol=1e-6)
    assert np.all((logit > 50) == (acts[:, 0] > 0)) and np.all(logit[acts[:, 0] < 0] < -50)
    a = death_anticipation(SMALL, params, episodes, within=4)
    assert (a["episodes"], a["steps"], a["within"]) == (3, 60, 4)
    assert a["auc_within"] == 1.0
    assert a["auc_last"] == pytest.approx((57 - 9 * 0.5) / 57)
    assert a["auc_within_clock"] < 1.0 and a["auc_last_clock"] < 1.0


def test_iterative_config_is_checked():
    cfg = profile_config("smoke")
    bad = dataclasses.replace(cfg, train_in="iterative",
                              iterate=dataclasses.replace(cfg.iterate, rounds=2,
                                                          check_episodes=9, episodes=3))
    with pytest.raises(ConfigError, match="--iterate.check-episodes"):
        validate(bad)
    bad = dataclasses.replace(cfg, mdnrnn=dataclasses.replace(cfg.mdnrnn, ensemble=3))
    with pytest.raises(ConfigError, match="--es.rollouts"):
        validate(bad)


def _smoke_iterative(run_dir):
    cfg = profile_config("smoke")
    return dataclasses.replace(
        cfg, run_dir=str(run_dir), train_in="iterative",
        stages=("collect", "vae", "encode", "mdnrnn", "controller"),
        mdnrnn=dataclasses.replace(cfg.mdnrnn, ensemble=2),
        es=dataclasses.replace(cfg.es, dream_generations=2, max_steps=20),
        iterate=dataclasses.replace(cfg.iterate, rounds=2, episodes=2, check_episodes=1,
                                    mdnrnn_steps=2, dream_generations=2, select_episodes=2,
                                    action_offset=(0.2, 0.5, 0.0)))


@pytest.fixture(scope="module")
def iterative_run(tmp_path_factory):
    """A finished smoke pipeline up to the iterative controller stage (ensemble of 2)."""
    cfg = _smoke_iterative(tmp_path_factory.mktemp("iter") / "run")
    run_stages(cfg, carracing_runners())
    return cfg


def test_iterative_rounds_write_their_data_and_gap(iterative_run):
    cfg = iterative_run
    run = RunFolder(cfg.run_dir)
    r0, r1 = (iterate.round_dir(run, r) for r in (0, 1))
    check0 = list_episodes(r0 / "check")
    noisy1 = list_episodes(r1 / "episodes")
    assert len(check0) == 1 and len(noisy1) == 1
    assert load_episode(noisy1[0])["policy"] == iterate.CONTROLLER_POLICY
    # round 1's M trained on the random data and round 0's controller episodes
    done1 = io.read_json(r1 / "mdnrnn" / "DONE.json")
    n_random = len(list_episodes(run.path("encode")))
    assert done1["episodes"] == n_random + 2 and done1["ensemble"] == 2
    assert [p.name for p in iterate._series_dirs(run, 1)] == ["series", "check_series", "series"]
    summary = io.read_json(iterate.iterative_dir(run) / "DONE.json")
    rows = summary["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    for row in rows:
        for k in ("dream_return", "real_return", "real_std", "gap"):
            assert np.isfinite(row[k])
        assert row["gap"] == pytest.approx(row["dream_return"] - row["real_return"])
        assert row["fidelity"]["episodes"] == 1
        assert np.isfinite(row["fidelity"]["predicted_return"])
    # the selection episodes: the same training-seed tracks every round, not M's data
    sel = [[load_episode(f) for f in list_episodes(rd / "select")] for rd in (r0, r1)]
    assert [len(x) for x in sel] == [2, 2]
    assert [int(e["seed"]) for e in sel[0]] == [int(e["seed"]) for e in sel[1]]
    eval_seeds = range(cfg.eval.seed_start, cfg.eval.seed_start + cfg.eval.episodes)
    assert not {int(e["seed"]) for e in sel[0]} & set(eval_seeds)
    for row, eps in zip(rows, sel, strict=True):
        got = [float(e["rewards"].sum()) for e in eps]
        check = [float(e["rewards"].sum())
                 for e in map(load_episode, list_episodes(iterate.round_dir(run, row["round"])
                                                          / "check"))]
        assert row["select_episodes"] == 2
        assert row["select_return"] == pytest.approx(np.mean(got))
        assert row["selection_return"] == pytest.approx(np.mean(check + got))
        assert iterate.selection_return(row) == row["selection_return"]
    best = max(rows, key=lambda r: r["selection_return"])
    assert summary["selected_round"] == best["round"]
    assert (iterate.iterative_dir(run) / "best.npz").read_bytes() == (
        iterate.round_dir(run, best["round"]) / "dream" / "best.npz").read_bytes()
    wm = artifacts.final_world_model(cfg, run)
    assert wm.mdn_members is not None and ensemble_size(
        artifacts.load_dream_params(run, wm)) == 2
    assert str(artifacts.final_mdnrnn_dir(cfg, run).relative_to(run.root)) == best["mdnrnn"]


def _round1_again(iterative_run, tmp_path, **iterate_fields):
    """A copy of the fixture's run with round 1's dream, checks, selection and row deleted,
    and the config with `iterate_fields`: (cfg, run, round 1's folder, round 0's row, V)."""
    dst = tmp_path / "run"
    shutil.copytree(iterative_run.run_dir, dst)
    run = RunFolder(dst)
    r1 = iterate.round_dir(run, 1)
    for name in ("dream", "check", "check_series", "select"):
        shutil.rmtree(r1 / name)
    (r1 / "round.json").unlink()
    cfg = dataclasses.replace(iterative_run, run_dir=str(dst), iterate=dataclasses.replace(
        iterative_run.iterate, **iterate_fields))
    rows = [io.read_json(iterate.round_dir(run, 0) / "round.json")]
    return cfg, run, r1, rows, artifacts.load_vae(run)


def _round1_key(cfg):
    return jax.random.fold_in(stage_key(cfg, "controller"), 1)


def test_iterative_resumes_inside_a_round(iterative_run, tmp_path):
    """Round 1 cut after its collection and M (its dream ES, check, selection episodes and row
    deleted) is finished by a rerun with nothing before it redone; the rerun's row equals the
    uninterrupted one."""
    want = io.read_json(iterate.round_dir(RunFolder(iterative_run.run_dir), 1) / "round.json")
    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path)
    kept = {p: p.stat().st_mtime_ns for p in list_episodes(r1 / "episodes")}
    kept[r1 / "mdnrnn" / "DONE.json"] = (r1 / "mdnrnn" / "DONE.json").stat().st_mtime_ns

    got = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    assert got == want
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())


def test_carracing_rounds_calibrate_their_temperature_on_return(iterative_run, tmp_path):
    """`--iterate.temperatures` in CarRacing: round 1 dreams at the τ of the grid whose dream
    pays round 0's C the mean return of its real checks (each τ's dream return that dream's,
    with the round's key; error |dream - real|); round 0 has no previous C to match and dreams
    at `dream.temperature`."""
    from dreamjax.config import with_temperature
    from dreamjax.es.dream import make_mean_eval_fn

    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path, temperatures=(0.5, 2.0))
    key = _round1_key(cfg)
    row = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, key)
    chosen = io.read_json(r1 / "temperature.json")
    assert chosen["on"] == "return" and [g["tau"] for g in chosen["grid"]] == [0.5, 2.0]
    assert chosen["tau"] == min(chosen["grid"], key=lambda g: g["error"])["tau"] == row["tau"]
    wm0 = artifacts.load_world_model(run, cfg.controller, vae=vae)
    wm1 = artifacts.load_world_model(run, cfg.controller, r1 / "mdnrnn", vae)
    c0, _ = artifacts.load_controller_params(
        iterate.round_dir(run, 0) / "dream" / "best.npz", wm0.spec)
    eval_fn = make_mean_eval_fn(DreamEnv(), wm1.spec.controller.apply,
                                iterate.TEMPERATURE_DREAMS, cfg.es.max_steps)
    for g in chosen["grid"]:
        (probe,) = g["probes"]
        assert probe["probe"] == "previous C" and probe["real_mean"] == rows[0]["real_return"]
        dream = artifacts.config_dream_params(with_temperature(cfg, g["tau"]), run, wm1,
                                              iterate._series_dirs(run, 1))
        returns, _ = eval_fn(jax.random.fold_in(jax.random.fold_in(key, 3), 0), c0, dream)
        assert probe["dream_mean"] == pytest.approx(float(np.mean(returns)), rel=1e-5)
        assert g["error"] == pytest.approx(abs(probe["dream_mean"] - probe["real_mean"]))
    r0 = iterate.choose_temperature(cfg, run, CARRACING, wm0, iterate._series_dirs(run, 0),
                                    None, key, tmp_path / "t0.json")
    assert r0 == {"tau": cfg.dream.temperature, "grid": []}


def test_calibration_error_on_return_is_the_mean_absolute_difference():
    """Returns may be negative: the error is their mean absolute difference."""
    probes = [{"dream_mean": -50.0, "real_mean": 30.0}, {"dream_mean": 300.0, "real_mean": 280.0}]
    assert iterate.calibration_error(probes, "return") == pytest.approx(50.0)
    assert iterate.calibration_error([{"dream_mean": 7.0, "real_mean": 7.0}], "return") == 0.0


def test_a_round_below_its_floor_trains_c_again(iterative_run, tmp_path):
    """With `iterate.retries 1` and a floor above any return, round 1's first attempt is the
    uninterrupted round's (same key, same C, same checks), is set aside in `rejected/0/`, and a
    second CMA-ES run with a new key gives the round's C; a floor below any return keeps the
    first attempt, with the same row as a run without retries."""
    want = io.read_json(iterate.round_dir(RunFolder(iterative_run.run_dir), 1) / "round.json")
    best0 = (iterate.round_dir(RunFolder(iterative_run.run_dir), 1) / "dream" / "best.npz")
    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path, retries=1,
                                            retry_below=1e9)
    got = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    assert got["retry_below"] == 1e9 and len(got["rejected"]) == 1
    first = got["rejected"][0]
    assert first["attempt"] == 0 and first["below"] == 1e9
    assert first["real_return"] == pytest.approx(want["real_return"])
    assert first["dream_return"] == pytest.approx(want["dream_return"])
    assert (r1 / "rejected" / "0" / "dream" / "best.npz").read_bytes() == best0.read_bytes()
    assert (r1 / "dream" / "best.npz").read_bytes() != best0.read_bytes()
    assert len(list_episodes(r1 / "rejected" / "0" / "check_series")) == 1
    checks = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(r1 / "check")]
    assert got["real_return"] == pytest.approx(np.mean(checks))
    # the next round's data are the kept attempt's checks
    assert iterate._series_dirs(run, 2)[3] == r1 / "check_series"

    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path / "low", retries=1,
                                            retry_below=-1e9)
    kept = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    assert kept.pop("rejected") == [] and kept.pop("retry_below") == -1e9
    assert kept == want and not (r1 / "rejected").exists()


def test_a_retry_cut_by_a_kill_resumes(iterative_run, tmp_path, monkeypatch):
    """Killed after the rejected attempt's row is written but before its folders move, the
    rerun finishes the move and the retry: the same row and C as an uninterrupted run."""
    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path / "a", retries=1,
                                            retry_below=1e9)
    want = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    want_c = (r1 / "dream" / "best.npz").read_bytes()

    cfg, run, r1, rows, vae = _round1_again(iterative_run, tmp_path / "b", retries=1,
                                            retry_below=1e9)

    def killed(rd, attempt):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(iterate, "_move_attempt", killed)
        with pytest.raises(KeyboardInterrupt):
            iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    assert (r1 / "rejected" / "0.json").is_file() and (r1 / "dream").is_dir()
    got = iterate.run_round(cfg, run, CARRACING, 1, rows, vae, _round1_key(cfg))
    assert got == want
    assert (r1 / "dream" / "best.npz").read_bytes() == want_c
    assert sorted(p.name for p in (r1 / "rejected" / "0").iterdir()) == sorted(
        iterate.ATTEMPT_DIRS)


def test_the_retry_floor_is_the_data_policys_return(iterative_run):
    run = RunFolder(iterative_run.run_dir)
    returns = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(run.path("collect"))]
    assert iterate.retry_floor(iterative_run, run) == pytest.approx(np.mean(returns), abs=1e-4)
    cfg = dataclasses.replace(iterative_run, iterate=dataclasses.replace(
        iterative_run.iterate, retry_below=-3.5))
    assert iterate.retry_floor(cfg, run) == -3.5
    with pytest.raises(ConfigError, match="--iterate.retry-below"):
        validate(dataclasses.replace(cfg, iterate=dataclasses.replace(
            cfg.iterate, retry_below=float("nan"))))


def test_the_report_names_a_rejected_attempt():
    """A committed Doom run's results with a rejected attempt added to round 0: the report
    says which attempt was set aside, its dream and real returns and the floor."""
    r = json.loads((Path(__file__).parents[1] / "experiments" / "results" / "doom-m2400"
                    / "seed3" / "results.json").read_text())
    assert "attempt 0 was set aside" not in render_markdown(r)
    r["dream_vs_real"][0]["rejected"] = [{"attempt": 0, "dream_return": 1694.0,
                                          "real_return": 173.9, "real_std": 40.9,
                                          "check_episodes": 16, "below": 425.2}]
    assert ("Round 0's attempt 0 was set aside and C trained again with a new key "
            "(`--iterate.retries`): dream 1694.0, real 173.9 ± 40.9 on its checks, below "
            "425.2.") in render_markdown(r)


@pytest.mark.parametrize("start, want", [("previous", 2), ("best", 1)])
def test_a_round_starts_from_the_previous_or_the_best_checked_round(start, want):
    """`iterate.start`: the last row, or the row with the best `selection_return` (the check
    return where a round has no selection episodes; the earliest of equals), whichever rounds
    came after it."""
    smoke = profile_config("smoke")
    cfg = dataclasses.replace(smoke, iterate=dataclasses.replace(smoke.iterate, start=start))
    rows = [{"round": 0, "real_return": 239.3}, {"round": 1, "real_return": 602.8},
            {"round": 2, "real_return": 268.7}]
    assert iterate.start_row(cfg, rows)["round"] == want
    selected = [{"round": 0, "real_return": 300.0, "selection_return": 250.0},
                {"round": 1, "real_return": 280.0, "selection_return": 320.0},
                {"round": 2, "real_return": 200.0}]
    assert iterate.start_row(cfg, selected)["round"] == (2 if start == "previous" else 1)
    tied = [{"round": 0, "real_return": 5.0}, {"round": 1, "real_return": 5.0}]
    assert iterate.start_row(cfg, tied)["round"] == (1 if start == "previous" else 0)


@pytest.mark.parametrize("field, value", [("start", "best"), ("temperatures", (1.0, 2.0)),
                                          ("action_offset", (0.0, 0.5, 0.0)),
                                          ("select_episodes", 24), ("retries", 2),
                                          ("retry_below", 400.0)])
def test_iterate_fields_at_their_defaults_keep_old_fingerprints(field, value):
    """A run folder made before `iterate.start`, `iterate.temperatures`,
    `iterate.action_offset`, `iterate.select_episodes` and the retries existed keeps its
    controller fingerprint at their defaults; another value changes it."""
    cfg = dataclasses.replace(profile_config("smoke"), train_in="iterative")
    assert field not in stage_config(cfg, "controller")["iterate"]
    new = dataclasses.replace(cfg, iterate=dataclasses.replace(cfg.iterate, **{field: value}))
    assert stage_config(new, "controller")["iterate"][field] == value
    assert fingerprints(new)["controller"] != fingerprints(cfg)["controller"]


def test_overshoot_held_at_its_default_keeps_old_fingerprints():
    """A run folder made before `mdnrnn.overshoot_held` existed keeps its mdnrnn fingerprint;
    turning it on changes M's fingerprint and everything after it."""
    cfg = dataclasses.replace(profile_config("smoke"), train_in="iterative")
    assert "overshoot_held" not in stage_config(cfg, "mdnrnn")["mdnrnn"]
    new = dataclasses.replace(cfg, mdnrnn=dataclasses.replace(cfg.mdnrnn, overshoot=4,
                                                              overshoot_held=True))
    old = dataclasses.replace(cfg, mdnrnn=dataclasses.replace(cfg.mdnrnn, overshoot=4))
    assert stage_config(new, "mdnrnn")["mdnrnn"]["overshoot_held"] is True
    for stage in ("mdnrnn", "controller"):
        assert fingerprints(new)[stage] != fingerprints(old)[stage]
    assert fingerprints(new)["encode"] == fingerprints(old)["encode"]


def test_calibrate_probes_at_its_default_keeps_old_fingerprints():
    """`iterate.calibrate_probes` off stays out of the controller's fingerprint (older run
    folders keep theirs); on, it changes the controller's and nothing before it."""
    cfg = dataclasses.replace(profile_config("smoke"), train_in="iterative")
    assert "calibrate_probes" not in stage_config(cfg, "controller")["iterate"]
    on = dataclasses.replace(cfg, iterate=dataclasses.replace(cfg.iterate,
                                                              calibrate_probes=True))
    assert fingerprints(on)["controller"] != fingerprints(cfg)["controller"]
    assert fingerprints(on)["mdnrnn"] == fingerprints(cfg)["mdnrnn"]


def test_calibration_error_is_the_mean_absolute_log_ratio():
    """Twice and half as long both count log 2; a match counts 0; lives under one step count as
    one step (a dream that ends at once is not infinitely wrong)."""
    probes = [{"dream_mean": 200.0, "real_mean": 100.0}, {"dream_mean": 50.0, "real_mean": 100.0},
              {"dream_mean": 300.0, "real_mean": 300.0}]
    assert iterate.calibration_error(probes) == pytest.approx(2 * np.log(2) / 3)
    assert iterate.calibration_error([{"dream_mean": 0.0, "real_mean": 4.0}]) == pytest.approx(
        np.log(4))


def test_iterate_temperatures_must_be_positive():
    cfg = dataclasses.replace(profile_config("smoke"), train_in="iterative")
    bad = dataclasses.replace(cfg, iterate=dataclasses.replace(cfg.iterate,
                                                               temperatures=(1.0, 0.0)))
    with pytest.raises(ConfigError, match="--iterate.temperatures must all be > 0"):
        validate(bad)


def test_iterate_action_offset_is_checked():
    """Negative half-widths fail `validate`; a count that is not the game's action size fails
    `check_game` (the CLIs' check before any work), naming the flag."""
    cfg = dataclasses.replace(profile_config("smoke"), train_in="iterative")
    bad = dataclasses.replace(cfg, iterate=dataclasses.replace(cfg.iterate,
                                                               action_offset=(0.1, -0.2, 0.0)))
    with pytest.raises(ConfigError, match="--iterate.action-offset must all be >= 0"):
        validate(bad)
    short = dataclasses.replace(cfg, iterate=dataclasses.replace(cfg.iterate,
                                                                 action_offset=(0.1, 0.2)))
    with pytest.raises(ConfigError, match="--iterate.action-offset: CarRacing-v3 has 3"):
        iterate.check_game(short, CARRACING)
    iterate.check_game(dataclasses.replace(short, train_in="dream"), CARRACING)


def test_action_repeat_at_its_default_keeps_old_fingerprints():
    """`action_repeat` 1 stays out of every stage's fingerprint; another value is in the
    collection's (so in every later stage's) and the evaluation's."""
    cfg = profile_config("smoke")
    assert all("action_repeat" not in stage_config(cfg, s) for s in ("collect", "controller",
                                                                     "evaluate"))
    new = dataclasses.replace(cfg, action_repeat=4)
    assert stage_config(new, "collect")["action_repeat"] == 4
    assert stage_config(new, "evaluate")["action_repeat"] == 4
    old, changed = fingerprints(cfg), fingerprints(new)
    assert all(changed[s] != old[s] for s in ("collect", "vae", "mdnrnn", "controller",
                                              "evaluate"))


def _snapshot(root):
    """{relative path: (inode, bytes)} of every file under `root`."""
    return {p.relative_to(root): (p.stat().st_ino, p.read_bytes())
            for p in Path(root).rglob("*") if p.is_file()}


def test_a_reopened_run_keeps_its_rounds_and_computes_the_rest(iterative_run, tmp_path):
    """`--reopen OLD --iterate.rounds 3` starts a new folder from the fixture's 2-round run:
    rounds 0 and 1 are OLD's files (the same inodes, their rows unchanged), only round 2 and
    the pick are computed, and OLD is left as it was (the appended logs were unshared)."""
    old = RunFolder(iterative_run.run_dir)
    before = _snapshot(old.root)
    rows = io.read_json(iterate.iterative_dir(old) / "DONE.json")["rounds"]
    cfg = dataclasses.replace(iterative_run, run_dir=str(tmp_path / "new"),
                              reopen=iterative_run.run_dir,
                              iterate=dataclasses.replace(iterative_run.iterate, rounds=3))
    run_stages(cfg, carracing_runners())
    new = RunFolder(cfg.run_dir)
    assert _snapshot(old.root) == before
    got = io.read_json(iterate.iterative_dir(new) / "DONE.json")["rounds"]
    assert [r["round"] for r in got] == [0, 1, 2] and got[:2] == rows
    for rel in (Path("controller/iterative/round_00/dream/best.npz"),
                Path("controller/iterative/round_01/mdnrnn/DONE.json"), Path("mdnrnn/DONE.json")):
        assert (new.root / rel).stat().st_ino == before[rel][0]
    assert all((new.root / rel).stat().st_ino != ino
               for rel, (ino, _) in before.items() if rel.suffix == ".jsonl")
    assert new.read_stages()["controller"]["fingerprint"] == fingerprints(cfg)["controller"]
    # rerunning the command resumes the new folder (reopen is ignored once it holds a run)
    run_stages(cfg, carracing_runners())
    assert io.read_json(iterate.iterative_dir(new) / "DONE.json")["rounds"] == got


def test_a_reopened_run_with_fewer_rounds_picks_among_them(iterative_run, tmp_path):
    """`--iterate.rounds 1` keeps round 0 only and computes nothing but the pick."""
    cfg = dataclasses.replace(iterative_run, run_dir=str(tmp_path / "one"),
                              reopen=iterative_run.run_dir,
                              iterate=dataclasses.replace(iterative_run.iterate, rounds=1))
    run_stages(cfg, carracing_runners())
    run = RunFolder(cfg.run_dir)
    assert [d.name for d in iterate.iterative_dir(run).glob("round_*")] == ["round_00"]
    done = io.read_json(iterate.iterative_dir(run) / "DONE.json")
    assert [r["round"] for r in done["rounds"]] == [0]
    assert (iterate.iterative_dir(run) / "best.npz").read_bytes() == (
        iterate.round_dir(run, 0) / "dream" / "best.npz").read_bytes()


def test_reopen_refuses_other_flags_and_a_used_run_dir(iterative_run, tmp_path):
    base = dataclasses.replace(iterative_run, run_dir=str(tmp_path / "new"),
                               reopen=iterative_run.run_dir)
    cases = [
        (dataclasses.replace(base, mdnrnn=dataclasses.replace(base.mdnrnn, steps=7)),
         "stage 'mdnrnn' was made with other flags"),
        (dataclasses.replace(base, iterate=dataclasses.replace(base.iterate, episodes=3)),
         r"controller stage was made with other flags than these \(only --iterate.rounds"),
        (dataclasses.replace(base, train_in="dream"), "--reopen needs --train-in iterative"),
        (dataclasses.replace(base, reopen=str(tmp_path)), "not a dreamjax run folder"),
        (dataclasses.replace(base, run_dir=iterative_run.run_dir), "is --run-dir itself"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_stages(cfg, carracing_runners())
        assert not Path(base.run_dir).exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    from dreamjax.pipeline.reopen import reopen

    with pytest.raises(ConfigError, match="is not empty"):
        reopen(dataclasses.replace(base, run_dir=str(tmp_path / "used")))
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_reopen_of_a_run_stopped_before_its_controller_keeps_v_and_m(iterative_run, tmp_path):
    """OLD stopped before the controller stage began: the copy keeps collect, V, encode and M
    (the same inodes) and has no round yet."""
    old = tmp_path / "old"
    shutil.copytree(iterative_run.run_dir, old)
    shutil.rmtree(old / "controller")
    stages = io.read_json(old / "stages.json")
    del stages["controller"]
    io.write_json(old / "stages.json", stages)
    from dreamjax.pipeline.reopen import reopen

    cfg = dataclasses.replace(iterative_run, run_dir=str(tmp_path / "new"), reopen=str(old))
    new = reopen(cfg)
    assert (new.root / "mdnrnn" / "DONE.json").stat().st_ino == (
        old / "mdnrnn" / "DONE.json").stat().st_ino
    assert not iterate.iterative_dir(new).exists()
    assert new.read_stages()["controller"] == {
        "fingerprint": fingerprints(cfg)["controller"], "done": False}
    assert [s for s in new.read_stages() if new.read_stages()[s].get("done")] == [
        "collect", "encode", "mdnrnn", "vae"]


def test_a_reopened_run_resumes_without_its_source(iterative_run, tmp_path):
    """Once --run-dir holds the copy, --reopen is not read again: the copy resumes after OLD is
    gone."""
    old = tmp_path / "old"
    shutil.copytree(iterative_run.run_dir, old)
    cfg = dataclasses.replace(iterative_run, run_dir=str(tmp_path / "new"), reopen=str(old),
                              iterate=dataclasses.replace(iterative_run.iterate, rounds=1))
    run_stages(cfg, carracing_runners())
    shutil.rmtree(old)
    validate(cfg)
    run_stages(cfg, carracing_runners())
    assert io.read_json(iterate.iterative_dir(RunFolder(cfg.run_dir)) / "DONE.json")[
        "selected_round"] == 0
