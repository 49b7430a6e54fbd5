"""The real Doom TakeCover env (ViZDoom): action map, frame preprocessing, seeding, rewards and
time limit, the worker pool with the Doom factory, and the Doom random data policy."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import numpy as np
import pytest
import vizdoom

from dreamjax.data.policies import POLICIES, DoomRandomPolicy, episode_seed
from dreamjax.envs import doom
from dreamjax.envs.doom import LEFT, NOOP, RIGHT, make_env, make_raw_env, preprocess, to_env_action
from dreamjax.envs.pool import EnvPool
from dreamjax.envs.protocol import EnvInfo, EpisodeSpec, probe_env

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
    """(n,) actions of `slot` and (n,) its repeat after each act."""
    frames = np.zeros((policy.a.shape[0], 64, 64, 3), np.uint8)
    active = np.zeros(policy.a.shape[0], bool)
    active[slot] = True
    acts, repeats = [], []
    for _ in range(n):
        out = policy.act(frames, active)
        assert out.shape == (policy.a.shape[0], 1) and out.dtype == np.float32
        acts.append(out[slot, 0])
        repeats.append(policy.repeat[slot])
    return np.array(acts), np.array(repeats)


def test_random_policy_repeat_structure():
    """A new a is drawn exactly at the frames t with t % repeat == 0 (the repeat drawn at the
    last change, absolute frame index), and only there; repeats cover 1..10; a ~ U(-1, 1)."""
    assert POLICIES["doom_random"] is DoomRandomPolicy
    policy = DoomRandomPolicy(7, 1)
    policy.reset(0, EpisodeSpec(seed=0, tag=4))
    acts, repeats = _drive(policy, 0, 3000)
    changed = np.r_[True, acts[1:] != acts[:-1]]
    t = np.arange(1, len(acts))
    np.testing.assert_array_equal(changed[1:], t % repeats[:-1] == 0)
    assert not ((repeats[1:] != repeats[:-1]) & ~changed[1:]).any()  # moves only on a change
    assert np.array_equal(np.unique(repeats), np.arange(1, 11))
    drawn = acts[changed]
    assert (drawn >= -1.0).all() and (drawn < 1.0).all()
    assert drawn.min() < -0.9 and drawn.max() > 0.9 and abs(drawn.mean()) < 0.1


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
