"""The real Doom TakeCover env (ViZDoom): action map, frame preprocessing, seeding, rewards and
time limit, the worker pool with the Doom factory, the Doom random data policy, collection of
episodes longer than a minimum (PAPER.md §2.2), and one step of the Doom dream (§2.5) against a
hand computation."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vizdoom

from dreamjax import io
from dreamjax.config import CollectConfig
from dreamjax.data.batches import SequenceBatches, TBPTTBatches
from dreamjax.data.collect import collect, damaged_episodes
from dreamjax.data.episodes import episode_path, list_episodes, load_episode, save_episode
from dreamjax.data.policies import (
    POLICIES,
    DoomConstantPolicy,
    DoomMixedPolicy,
    DoomPatrolHeldMixedPolicy,
    DoomPatrolMixedPolicy,
    DoomPatrolPolicy,
    DoomRandomPolicy,
    DoomSweepMixedPolicy,
    DoomSweepPolicy,
    collection_tag,
    episode_rng,
    episode_seed,
    open_loop_schedules,
    split_tag,
)
from dreamjax.dream.env import DreamEnv, random_dream_params
from dreamjax.envs import doom
from dreamjax.envs.doom import LEFT, NOOP, RIGHT, make_env, make_raw_env, preprocess, to_env_action
from dreamjax.envs.pool import EnvPool
from dreamjax.envs.protocol import EnvInfo, EpisodeSpec, probe_env
from dreamjax.errors import ConfigError
from dreamjax.models.mdnrnn import MDNRNN

SHORT = 40
"""A time limit shorter than any episode of the seeds used below (the player survives > 100
steps of standing still)."""


@pytest.fixture(scope="module")
def raw_env():
    env = make_raw_env()
    yield env
    env.close()


@pytest.fixture(scope="module")
def short_env():
    env = make_env(max_episode_steps=SHORT)
    yield env
    env.close()


def _rollout(env, seed: int | None, actions) -> tuple[list[np.ndarray], list[float], bool, bool]:
    """Frames (the reset one first), rewards and the final flags of one episode, stepping
    `actions` in turn until the episode ends or they run out."""
    obs, _ = env.reset(seed=seed)
    frames, rewards, term, trunc = [obs], [], False, False
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        if term or trunc:
            break
        frames.append(obs)
    return frames, rewards, term, trunc


# ----- action map


def test_action_map_at_the_thresholds():
    t = np.float32(doom.THRESHOLD)
    up, down = np.nextafter(t, np.float32(2)), np.nextafter(t, np.float32(-2))
    a = np.array([-1.0, -up, -t, -down, 0.0, down, t, up, 1.0], np.float32)[:, None]  # (9, 1)
    expect = [LEFT, LEFT, NOOP, NOOP, NOOP, NOOP, NOOP, RIGHT, RIGHT]
    np.testing.assert_array_equal(to_env_action(a), expect)
    assert int(to_env_action(np.array([-0.5], np.float32))) == LEFT  # one (1,) action
    with pytest.raises(ValueError, match=r"\(\.\.\., 1\)"):
        to_env_action(np.zeros(3, np.float32))


def test_left_and_right_strafe_the_player(raw_env):
    """LEFT moves the player along its facing direction turned by +90 degrees (Doom angles are
    counter-clockwise), RIGHT the opposite way, NOOP not at all."""
    game, var = raw_env.unwrapped.game, vizdoom.GameVariable
    moved = {}
    for act in (LEFT, RIGHT, NOOP):
        raw_env.reset(seed=1)
        x0, y0 = game.get_game_variable(var.POSITION_X), game.get_game_variable(var.POSITION_Y)
        heading = math.radians(game.get_game_variable(var.ANGLE) + 90.0)
        for _ in range(10):
            raw_env.step(act)
        dx = game.get_game_variable(var.POSITION_X) - x0
        dy = game.get_game_variable(var.POSITION_Y) - y0
        moved[act] = dx * math.cos(heading) + dy * math.sin(heading)
    assert moved[LEFT] > 1.0 and moved[RIGHT] < -1.0 and moved[NOOP] == 0.0


# ----- frames


def test_preprocess_shape_and_crop():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, doom.SCREEN_SHAPE, dtype=np.uint8)
    out = preprocess(frame)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    below = frame.copy()
    below[doom.CROP_ROWS:] = 255 - below[doom.CROP_ROWS:]  # rows 400..479 differ
    np.testing.assert_array_equal(preprocess(below), out)
    last = frame.copy()
    last[doom.CROP_ROWS - 1] = 255 - last[doom.CROP_ROWS - 1]  # row 399 is kept
    assert not np.array_equal(preprocess(last), out)
    with pytest.raises(ValueError, match="uint8 frame"):
        preprocess(frame[:400])


def test_preprocess_maps_the_crop_onto_the_whole_frame():
    """Bands of the 400 kept rows land on the matching rows of the 64x64 frame (the crop is
    stretched over all 64 rows, not padded); constant regions stay exact."""
    frame = np.zeros(doom.SCREEN_SHAPE, np.uint8)
    frame[200:400] = 200  # the lower half of the crop
    frame[400:] = 77  # below the crop: dropped
    out = preprocess(frame)
    assert (out[:31] == 0).all() and (out[33:] == 200).all()


def test_agent_view_spaces_and_frames(short_env):
    info = EnvInfo.of(short_env)
    assert info == EnvInfo(env_id=doom.ENV_ID, observation_shape=(64, 64, 3),
                           observation_dtype="|u1", action_shape=(1,), action_dtype="<f4",
                           max_episode_steps=SHORT)
    obs, extra = short_env.reset(seed=3)
    assert extra["raw_frame"].shape == doom.SCREEN_SHAPE and extra["raw_frame"].dtype == np.uint8
    np.testing.assert_array_equal(obs, preprocess(extra["raw_frame"]))
    obs, _, _, _, extra = short_env.step(np.array([0.9], np.float32))
    np.testing.assert_array_equal(obs, preprocess(extra["raw_frame"]))


# ----- seeding, rewards, time limit


def test_same_seed_same_episode(raw_env):
    """Same seed and actions -> identical frames and rewards, in the same env and in a second
    env (another engine process); another seed -> another episode."""
    acts = np.random.default_rng(0).integers(0, 3, 150)
    frames, rewards, _, _ = _rollout(raw_env, 11, acts)
    other = make_raw_env()
    try:
        for env in (raw_env, other):
            again, rewards2, _, _ = _rollout(env, 11, acts)
            assert rewards2 == rewards and len(again) == len(frames)
            assert all(np.array_equal(a, b) for a, b in zip(again, frames, strict=True))
    finally:
        other.close()
    different, _, _, _ = _rollout(raw_env, 12, acts)
    assert any(not np.array_equal(a, b) for a, b in zip(different, frames, strict=False))


def test_unseeded_resets_follow_the_seeded_one(raw_env):
    """reset() after reset(seed=s) draws the next game seed from the env's generator: the
    sequence of episodes is reproducible, and its episodes differ."""
    acts = [NOOP] * 60  # episodes of different seeds part after about 40 steps
    runs = [(_rollout(raw_env, 5, acts)[0], _rollout(raw_env, None, acts)[0]) for _ in range(2)]
    (f1, s1), (f2, s2) = runs
    assert all(np.array_equal(a, b) for a, b in zip(f1 + s1, f2 + s2, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(f1, s1, strict=False))


def test_plus_one_per_step_until_death(raw_env):
    frames, rewards, term, trunc = _rollout(raw_env, 0, [NOOP] * doom.MAX_EPISODE_STEPS)
    assert term and not trunc
    assert rewards == [1.0] * len(rewards) and len(frames) == len(rewards)
    assert 100 < len(rewards) < doom.MAX_EPISODE_STEPS


def test_time_limit_truncates(short_env):
    frames, rewards, term, trunc = _rollout(short_env, 0, [np.zeros(1, np.float32)] * 100)
    assert trunc and not term
    assert rewards == [1.0] * SHORT and len(frames) == SHORT


def test_default_time_limit_is_2100():
    assert doom.MAX_EPISODE_STEPS == 2100
    assert probe_env(make_env).max_episode_steps == 2100


def test_missing_vizdoom_is_a_config_error():
    """Without ViZDoom the import fails with the one-line fix."""
    code = ("import sys; sys.modules['vizdoom'] = None\n"
            "try:\n    import dreamjax.envs.doom\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("ConfigError") and "pip install 'dreamjax[doom]'" in out


# ----- the worker pool


def _direct(spec: EpisodeSpec, master: int, max_steps: int):
    """One episode of the random policy in a single env in this process."""
    policy = DoomRandomPolicy(master, 1)
    policy.reset(0, spec)
    env = make_env(max_episode_steps=max_steps)
    try:
        obs, _ = env.reset(seed=spec.seed)
        seen, acts, rewards, terms, truncs = [], [], [], [], []
        while True:
            a = policy.act(obs[None], np.ones(1, bool))[0]
            seen.append(obs)
            acts.append(a)
            obs, r, term, trunc, _ = env.step(a)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            if term or trunc:
                return np.stack(seen), np.stack(acts), rewards, terms, truncs
    finally:
        env.close()


def test_pool_equals_a_direct_loop():
    """Two random-policy episodes through a 2-worker EnvPool equal the same episodes run one
    by one in this process: observations, actions, rewards and flags."""
    master, max_steps = 3, 300
    specs = [EpisodeSpec(seed=episode_seed(master, i), tag=i) for i in range(2)]
    with EnvPool(functools.partial(make_env, max_episode_steps=max_steps), num_workers=2) as pool:
        assert pool.env_info.action_shape == (1,)
        results = pool.run(specs, DoomRandomPolicy(master, pool.num_slots), steps=True)
    for spec, res in zip(specs, results, strict=True):
        obs, acts, rewards, terms, truncs = _direct(spec, master, max_steps)
        assert res.spec == spec and res.length == len(rewards)
        assert res.total_reward == float(len(rewards))
        np.testing.assert_array_equal(res.obs, obs)
        np.testing.assert_array_equal(res.actions, acts)
        np.testing.assert_array_equal(res.rewards, rewards)
        np.testing.assert_array_equal(res.terminated, terms)
        np.testing.assert_array_equal(res.truncated, truncs)


# ----- the random data policy


def _drive(policy: DoomRandomPolicy, slot: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) actions of `slot` and (n,) its repeat after each act (0 for a patrol: no repeats)."""
    frames = np.zeros((policy.a.shape[0], 64, 64, 3), np.uint8)
    active = np.zeros(policy.a.shape[0], bool)
    active[slot] = True
    acts, repeats = [], []
    for _ in range(n):
        out = policy.act(frames, active)
        assert out.shape == (policy.a.shape[0], 1) and out.dtype == np.float32
        acts.append(out[slot, 0])
        repeats.append(policy.repeat[slot] if hasattr(policy, "repeat") else 0)
    return np.array(acts), np.array(repeats)


@pytest.mark.parametrize("name, cls, low, high", [("doom_random", DoomRandomPolicy, 1, 10),
                                                    ("doom_sweep", DoomSweepPolicy, 20, 120)])
def test_random_policy_repeat_structure(name, cls, low, high):
    """A new a is drawn exactly at the frames t with t % repeat == 0 (the repeat drawn at the
    last change, absolute frame index), and only there; repeats cover low..high (§2.2: 1..10;
    the sweeps: 20..120, so some holds last 76+ steps); a ~ U(-1, 1)."""
    assert POLICIES[name] is cls
    policy = cls(7, 1)
    policy.reset(0, EpisodeSpec(seed=0, tag=4))
    acts, repeats = _drive(policy, 0, 3000 * low)
    changed = np.r_[True, acts[1:] != acts[:-1]]
    t = np.arange(1, len(acts))
    np.testing.assert_array_equal(changed[1:], t % repeats[:-1] == 0)
    assert not ((repeats[1:] != repeats[:-1]) & ~changed[1:]).any()  # moves only on a change
    assert np.array_equal(np.unique(repeats), np.arange(low, high + 1))
    holds = np.diff(np.flatnonzero(changed))
    assert holds.max() <= high and (holds >= 0.6 * high).any()
    drawn = acts[changed]
    assert (drawn >= -1.0).all() and (drawn < 1.0).all()
    assert drawn.min() < -0.9 and drawn.max() > 0.9 and abs(drawn.mean()) < 0.1


def test_constant_policy_and_the_doom_mixed_parts():
    """`doom_constant` draws one a ~ U(-1, 1) and holds it for 2100 steps; `doom_mixed` acts
    exactly as `doom_constant` on episodes i with i % 4 == 3 and as `doom_random` on the
    others; `doom_sweep_mixed` and `doom_patrol_mixed` as `doom_sweep` / `doom_patrol` on odd
    episodes and `doom_random` on even; `doom_patrol_held_mixed` as `doom_random`,
    `doom_patrol`, `doom_constant`, `doom_patrol` on episodes i % 4 == 0, 1, 2, 3."""
    assert POLICIES["doom_constant"] is DoomConstantPolicy
    assert POLICIES["doom_mixed"] is DoomMixedPolicy
    firsts = []
    for tag in range(60):
        policy = DoomConstantPolicy(7, 1)
        policy.reset(0, EpisodeSpec(seed=0, tag=tag))
        acts, _ = _drive(policy, 0, 2100)
        assert (acts == acts[0]).all()
        firsts.append(acts[0])
    assert len(set(firsts)) == 60 and min(firsts) < -0.8 and max(firsts) > 0.8
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    assert POLICIES["doom_sweep_mixed"] is DoomSweepMixedPolicy
    assert POLICIES["doom_patrol_mixed"] is DoomPatrolMixedPolicy
    assert POLICIES["doom_patrol_held_mixed"] is DoomPatrolHeldMixedPolicy
    for mixed_cls, tag, ref_cls in ((DoomMixedPolicy, 4, DoomRandomPolicy),
                                    (DoomMixedPolicy, 6, DoomRandomPolicy),
                                    (DoomMixedPolicy, 7, DoomConstantPolicy),
                                    (DoomMixedPolicy, 11, DoomConstantPolicy),
                                    (DoomSweepMixedPolicy, 4, DoomRandomPolicy),
                                    (DoomSweepMixedPolicy, 7, DoomSweepPolicy),
                                    (DoomPatrolMixedPolicy, 2, DoomRandomPolicy),
                                    (DoomPatrolMixedPolicy, 9, DoomPatrolPolicy),
                                    (DoomPatrolHeldMixedPolicy, 8, DoomRandomPolicy),
                                    (DoomPatrolHeldMixedPolicy, 5, DoomPatrolPolicy),
                                    (DoomPatrolHeldMixedPolicy, 10, DoomConstantPolicy),
                                    (DoomPatrolHeldMixedPolicy, 7, DoomPatrolPolicy)):
        mixed, ref = mixed_cls(3, 1), ref_cls(3, 1)
        mixed.reset(0, EpisodeSpec(seed=0, tag=tag))
        ref.reset(0, EpisodeSpec(seed=0, tag=tag))
        for _ in range(300):
            np.testing.assert_array_equal(mixed.act(frames, np.array([True])),
                                          ref.act(frames, np.array([True])))


def test_patrol_policy_alternates_buttons_with_one_period_per_episode():
    """`doom_patrol`: every action is -1 or +1; the sign flips every P steps, P ~ U{16..160}
    per episode (the first run of each episode at most P steps, the last cut by the episode's
    end), and P, the first direction and the first run vary across episodes."""
    assert POLICIES["doom_patrol"] is DoomPatrolPolicy
    periods, firsts, signs = set(), set(), set()
    for tag in range(40):
        policy = DoomPatrolPolicy(5, 1)
        policy.reset(0, EpisodeSpec(seed=0, tag=tag))
        acts, _ = _drive(policy, 0, 2100)
        assert set(np.unique(acts)) <= {-1.0, 1.0}
        runs = np.diff(np.flatnonzero(np.r_[True, acts[1:] != acts[:-1], True]))
        period = int(policy.period[0])
        assert 16 <= period <= 160 and 1 <= runs[0] <= period
        assert (runs[1:-1] == period).all() and runs[-1] <= period
        periods.add(period)
        firsts.add(int(runs[0]))
        signs.add(float(acts[0]))
    assert len(periods) > 20 and len(firsts) > 20 and signs == {-1.0, 1.0}


@pytest.mark.parametrize("name", ["doom_random", "doom_constant", "doom_sweep", "doom_patrol"])
def test_open_loop_schedules_are_the_policys_own_episodes(name):
    """`open_loop_schedules` (the calibration's dream actions): episode i is what the policy
    plays, step by step, in the episode tagged i of the same master seed; a policy that reads
    the frames (CarRacing's road follower) is refused."""
    cls = POLICIES[name]
    sched = open_loop_schedules(cls, 11, 5, 400)
    assert sched.shape == (5, 400, 1) and sched.dtype == np.float32
    for i in range(5):
        policy = cls(11, 1)
        policy.reset(0, EpisodeSpec(seed=123, tag=i))
        np.testing.assert_array_equal(sched[i, :, 0], _drive(policy, 0, 400)[0])
    assert not np.array_equal(sched[0], sched[1])
    with pytest.raises(TypeError, match="RoadFollowerPolicy reads the frames"):
        open_loop_schedules(POLICIES["follower"], 11, 2, 10)


def test_random_policy_seeded_per_episode():
    """An episode's actions depend only on (master seed, tag): not on the slot, on other slots,
    or on what the slot ran before."""
    ref = DoomRandomPolicy(7, 1)
    ref.reset(0, EpisodeSpec(seed=0, tag=2))
    expect, _ = _drive(ref, 0, 200)

    busy = DoomRandomPolicy(7, 3)
    busy.reset(2, EpisodeSpec(seed=0, tag=9))
    _drive(busy, 2, 37)  # another episode ran in this slot first
    busy.reset(2, EpisodeSpec(seed=0, tag=2))
    busy.reset(0, EpisodeSpec(seed=0, tag=5))
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    got = [busy.act(frames, np.array([True, False, True]))[2, 0] for _ in range(200)]
    np.testing.assert_array_equal(got, expect)

    other = DoomRandomPolicy(7, 1)
    other.reset(0, EpisodeSpec(seed=0, tag=3))
    assert not np.array_equal(_drive(other, 0, 200)[0], expect)


# ----- collection: episodes of more than 100 frames (PAPER.md §2.2)


COLLECT_STEPS, MIN_FRAMES, MASTER = 130, 120, 1
"""A time limit just above a minimum length that some random-policy episodes miss: with master
seed 1, the first try of episode 2 dies after 113 steps, so collection retries it."""


def _doom_collect(folder, workers: int, n: int = 4, master: int = MASTER) -> dict:
    cfg = CollectConfig(episodes=n, max_steps=COLLECT_STEPS, policy="doom_random")
    return collect(master, folder, cfg, workers=workers, progress=False, min_frames=MIN_FRAMES,
                   env_fn=functools.partial(make_env, max_episode_steps=COLLECT_STEPS))


@pytest.fixture(scope="module")
def doom_collected(tmp_path_factory):
    folder = tmp_path_factory.mktemp("doom_episodes") / "two"
    return folder, _doom_collect(folder, workers=2)


def test_collect_keeps_only_long_episodes_and_retries_with_the_next_seed(doom_collected):
    """Every kept episode has more than min_frames steps and is try k of its index (env seed
    `episode_seed(master, i, k)`, policy stream of tag `collection_tag(i, k)`): exactly what the
    env and policy give for that seed and tag in a plain loop; the discarded tries are the
    earlier ones."""
    folder, stats = doom_collected
    files = list_episodes(folder)
    assert len(files) == 4 and stats["new_episodes"] == 4
    eps = [load_episode(f) for f in files]
    attempts = [ep["attempt"] for ep in eps]
    assert stats["discarded"] == sum(attempts) > 0  # the seeds were chosen to need retries
    assert io.read_json(folder / "collect.json")["min_frames"] == MIN_FRAMES
    for i, ep in enumerate(eps):
        assert MIN_FRAMES < len(ep["actions"]) <= COLLECT_STEPS
        assert ep["seed"] == episode_seed(MASTER, i, ep["attempt"])
        spec = EpisodeSpec(seed=ep["seed"], tag=collection_tag(i, ep["attempt"]))
        obs, acts, rewards, terms, truncs = _direct(spec, MASTER, COLLECT_STEPS)
        np.testing.assert_array_equal(ep["frames"], obs)
        np.testing.assert_array_equal(ep["actions"], acts)
        np.testing.assert_array_equal(ep["terminated"], terms)
        for k in range(ep["attempt"]):  # the earlier tries died within MIN_FRAMES steps
            short = EpisodeSpec(seed=episode_seed(MASTER, i, k), tag=collection_tag(i, k))
            assert len(_direct(short, MASTER, COLLECT_STEPS)[2]) <= MIN_FRAMES


def test_collect_with_retries_is_independent_of_the_number_of_workers(doom_collected, tmp_path):
    folder, _ = doom_collected
    _doom_collect(tmp_path / "one", workers=1)
    for f in list_episodes(folder):
        a, b = load_episode(f), load_episode(tmp_path / "one" / f.name)
        assert (a["seed"], a["attempt"]) == (b["seed"], b["attempt"])
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["actions"], b["actions"])


def test_short_or_foreign_episode_files_are_damaged(tmp_path):
    """A file of at most min_frames steps, or whose seed is not its recorded try's, is redone."""
    cfg = CollectConfig(episodes=2, max_steps=COLLECT_STEPS, policy="doom_random")

    def episode(T: int, seed: int, attempt: int) -> dict:
        ends = np.zeros(T, bool)
        ends[-1] = True
        return {"frames": np.zeros((T, 64, 64, 3), np.uint8),
                "actions": np.zeros((T, 1), np.float32), "rewards": np.ones(T, np.float32),
                "terminated": ends, "truncated": np.zeros(T, bool), "seed": seed,
                "policy": "doom_random", "attempt": attempt}

    save_episode(episode_path(tmp_path, 0), episode(MIN_FRAMES, episode_seed(5, 0, 1), 1))
    save_episode(episode_path(tmp_path, 1), episode(MIN_FRAMES + 1, episode_seed(5, 1, 0), 2))
    bad = damaged_episodes(5, tmp_path, cfg, min_frames=MIN_FRAMES)
    assert set(bad) == {0, 1}
    assert f"not more than min_frames={MIN_FRAMES}" in bad[0] and "not try 2" in bad[1]
    assert damaged_episodes(5, tmp_path, cfg).keys() == {1}  # no minimum: 0 is fine


def test_collect_refuses_a_policy_of_another_game_and_an_unreachable_minimum(tmp_path):
    env_fn = functools.partial(make_env, max_episode_steps=COLLECT_STEPS)
    with pytest.raises(ConfigError, match="acts with 3 actions.*takes 1"):
        collect(0, tmp_path / "a", CollectConfig(episodes=1, max_steps=COLLECT_STEPS,
                                                 policy="brownian"), env_fn=env_fn)
    with pytest.raises(ConfigError, match="must exceed min_frames"):
        collect(0, tmp_path / "b", CollectConfig(episodes=1, max_steps=COLLECT_STEPS,
                                                 policy="doom_random"),
                env_fn=env_fn, min_frames=COLLECT_STEPS)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_collection_tags_split_back_and_try_zero_is_the_plain_index():
    assert collection_tag(7) == 7 and split_tag(collection_tag(7, 3)) == (7, 3)
    first = episode_rng(4, collection_tag(9, 0)).uniform(size=3)
    np.testing.assert_array_equal(first, episode_rng(4, 9).uniform(size=3))
    assert not np.array_equal(first, episode_rng(4, collection_tag(9, 1)).uniform(size=3))
    assert episode_seed(4, 9) == episode_seed(4, 9, 0) != episode_seed(4, 9, 1)


# ----- the dream of PAPER.md §2.5, one step by hand


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hand_dream_step(p: dict, z, a, restart, c, h, u, eps, tau: float):
    """§2.4-2.5 in float64 NumPy from M's raw weights: zero the state where restart > 0.5,
    LSTM on [z, a, restart] (TF cell, forget bias 1), head [done logit, then per dimension
    logπ | μ | logσ], component by inverse CDF of softmax(logπ / τ) at the uniform u,
    z' = μ_k + e^{logσ_k}·ε·√τ. Returns (z', c', h', done logit)."""
    w = {k: np.asarray(v, np.float64) for k, v in p["params"].items()}
    if restart > 0.5:
        c, h = np.zeros_like(c), np.zeros_like(h)
    gates = np.concatenate([z, a, [restart], h]) @ w["lstm_kernel"] + w["lstm_bias"]
    i, j, f, o = np.split(gates, 4)
    c = c * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
    h = np.tanh(c) * _sigmoid(o)
    y = h @ w["output_w"] + w["output_b"]
    logit, mdn = y[0], y[1:].reshape(len(z), -1)
    logpi, mu, logsigma = np.split(mdn, 3, axis=1)  # (Z, K) each
    logpi = logpi - np.log(np.exp(logpi).sum(axis=1, keepdims=True))
    weights = np.exp(logpi / tau) / np.exp(logpi / tau).sum(axis=1, keepdims=True)
    k = (u[:, None] >= np.cumsum(weights, axis=1)[:, :-1]).sum(axis=1)
    rows = np.arange(len(z))
    z_next = mu[rows, k] + np.exp(logsigma[rows, k]) * eps * np.sqrt(tau)
    return z_next, c, h, logit


@pytest.mark.parametrize("done_bias", [None, 30.0])
def test_one_dream_step_equals_the_hand_computation(done_bias):
    """A Doom-shaped dream (restart input, done head, no reward head, [z, c, h] observation,
    +1 per step): the first step from a state that restart must zero, then a second step;
    obs, reward, done and the state equal `_hand_dream_step` with the step's own draws."""
    Z, H, tau = 3, 5, 1.15
    model = MDNRNN(z_dim=Z, action_dim=1, hidden=H, n_mix=4, restart_input=True,
                   done_head=True)
    dp = random_dream_params(jax.random.key(1), model, temperature=tau, obs_mode="zch",
                             reward_mode="survival", done_bias=done_bias, max_steps=2100)
    env = DreamEnv()
    _, state = env.reset_env(jax.random.key(2), dp)
    junk = jax.random.normal(jax.random.key(3), (2, H))
    state = state.replace(lstm=state.lstm.replace(c=junk[0], h=junk[1]))  # restart zeroes it
    c, h = np.asarray(junk[0], np.float64), np.asarray(junk[1], np.float64)
    z = np.asarray(state.z, np.float64)
    restart = 1.0
    for t, a in enumerate((0.7, -0.4)):
        key = jax.random.key(10 + t)
        obs, state, reward, done, info = jax.jit(env.step_env)(
            key, state, jnp.array([a], jnp.float32), dp)
        k_u, k_e = jax.random.split(key)
        u = np.asarray(jax.random.uniform(k_u, (Z,)), np.float64)
        eps = np.asarray(jax.random.normal(k_e, (Z,)), np.float64)
        z, c, h, logit = _hand_dream_step(jax.device_get(dp.mdn_params), z, np.array([a]),
                                          restart, c, h, u, eps, tau)
        np.testing.assert_allclose(obs, np.concatenate([z, c, h]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(info["done_logit"], logit, rtol=1e-4, atol=1e-5)
        assert float(reward) == 1.0 and bool(done) == (logit > 0.0)
        assert int(state.time) == t + 1 and float(state.restart) == 0.0
        restart = 0.0
    if done_bias is not None:
        assert bool(done)  # a large done bias ends the dream: done is logit > 0, no sampling


# ----- M's training data: deaths are labels (PAPER.md §2.4)


def _series(folder, lengths, z_dim: int = 2) -> list:
    """Synthetic Doom-like series files: episode e of T steps has mu[:, 0] = e, mu[:, 1] = t,
    actions (T, 1), +1 rewards and `terminated` on its last step."""
    files = []
    for e, T in enumerate(lengths):
        mu = np.zeros((T, z_dim), np.float16)
        mu[:, 0], mu[:, 1] = e, np.arange(T)
        ends = np.zeros(T, bool)
        ends[-1] = True
        path = episode_path(folder, e)
        io.save_npz(path, mu=mu, logvar=np.zeros_like(mu),
                    actions=np.linspace(-1, 1, T, dtype=np.float32)[:, None],
                    rewards=np.ones(T, np.float32), terminated=ends, truncated=np.zeros(T, bool),
                    seed=np.asarray(e, np.int64), vae_id=np.asarray("v"))
        files.append(path)
    return files


def test_tbptt_batches_label_every_death_with_the_step_mask(tmp_path):
    """In the truncated-BPTT chunks, each episode's last step is an input step whose done label
    is 1: `step_mask` keeps it (every input step is real), while `mask` drops its z target (the
    next episode's first frame); actions keep Doom's size 1."""
    files = _series(tmp_path, [9, 14, 7, 11, 12, 9])
    tb = TBPTTBatches(files, batch_size=2, seq_len=5, seed=3)
    deaths = 0
    for k in range(tb.steps_per_epoch):
        b = tb.batch(k)
        assert b["actions"].shape == (2, 6, 1)
        np.testing.assert_array_equal(b["step_mask"], np.ones((2, 5), np.float32))
        ends = b["restarts"][:, 1:] == 1  # the next step starts another episode
        same = b["mu"][:, 1:, 1] == b["mu"][:, :-1, 1] + 1  # the next step continues this one
        np.testing.assert_array_equal(same, ~ends)
        np.testing.assert_array_equal(b["dones"][:, :-1], ends)
        np.testing.assert_array_equal(b["mask"], 1.0 - ends)
        deaths += int((b["dones"][:, :-1] * b["step_mask"]).sum())
    assert deaths >= 4


def test_sequence_batches_step_mask_covers_a_short_episodes_last_step(tmp_path):
    """A window cut by an episode's end: its last step (done) is a step_mask input, its missing
    target is not a mask target."""
    files = _series(tmp_path, [4, 4])
    b = SequenceBatches(files, batch_size=2, seq_len=6, seed=0).batch(0)
    assert b["actions"].shape == (2, 7, 1)
    np.testing.assert_array_equal(b["mask"], np.tile([1, 1, 1, 0, 0, 0], (2, 1)))
    np.testing.assert_array_equal(b["step_mask"], np.tile([1, 1, 1, 1, 0, 0], (2, 1)))
    assert (b["dones"][:, 3] & (b["step_mask"][:, 3] == 1)).all()


def test_patrol_schedule_and_the_open_loop_pool_policy():
    """The patrol of period P is RIGHT for P // 2 steps, then LEFT and RIGHT for P steps each in
    turn; `OpenLoop` plays a schedule from each slot's own episode start (inactive slots do not
    advance) and repeats its last action after the end."""
    from dreamjax.pipeline.doom import OpenLoop, patrol_schedule

    a = patrol_schedule(64, 300)[:, 0]
    assert a.shape == (300,)
    want = np.r_[np.ones(32), -np.ones(64), np.ones(64), -np.ones(64), np.ones(64), -np.ones(12)]
    np.testing.assert_array_equal(a, want)
    sched = np.arange(5, dtype=np.float32)[:, None]
    policy = OpenLoop(sched, 2)
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    policy.reset(0, EpisodeSpec(seed=0, tag=0))
    policy.reset(1, EpisodeSpec(seed=0, tag=1))
    got = [policy.act(frames, np.array([True, t % 2 == 0])).copy() for t in range(7)]
    np.testing.assert_array_equal([g[0, 0] for g in got], [0, 1, 2, 3, 4, 4, 4])
    np.testing.assert_array_equal([g[1, 0] for g in got], [0, 1, 1, 2, 2, 3, 3])
