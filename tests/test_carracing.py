"""The real CarRacing env: FastCarRacing is byte-identical to stock gymnasium; frame/action maps."""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import Box2D
import gymnasium as gym
import numpy as np
import pygame
import pytest
from PIL import Image

from dreamjax.envs import carracing as cr
from dreamjax.envs import fast_carracing as fcr
from dreamjax.envs.carracing import (
    ActionRepeat,
    AgentView,
    FastCarRacing,
    make_env,
    make_raw_env,
    preprocess,
    to_env_action,
)
from dreamjax.envs.fast_carracing import rotate_rad
from dreamjax.envs.view import DrawsOnDemand

# ----- exact arithmetic helpers


def test_rotate_rad_bit_identical_to_pygame():
    rng = np.random.default_rng(0)
    half_pi = math.pi / 2
    angles = [0.0, -0.0, 100.0, -100.0, 2 * math.pi, -2 * math.pi, 1e-7, -1e-7]
    for k in range(-8, 9):  # multiples of pi/2 and just around pygame's 1e-6 special-case band
        for d in (0.0, 1e-7, -1e-7, 9e-7, -9e-7, 1.1e-6, -1.1e-6, 1e-3):
            angles.append(k * half_pi + d)
    angles += list(rng.uniform(-20, 20, size=200))
    pts = rng.uniform(-400, 400, size=(50, 2))
    for angle in angles:
        rx, ry = rotate_rad(pts, angle)
        ref = np.array([tuple(pygame.math.Vector2(tuple(p)).rotate_rad(angle)) for p in pts])
        assert np.array_equal(rx, ref[:, 0]) and np.array_equal(ry, ref[:, 1]), angle


def test_b2_mul_bit_identical_to_box2d():
    rng = np.random.default_rng(1)
    for _ in range(200):
        t = Box2D.b2Transform()
        t.Set(tuple(rng.uniform(-300, 300, size=2)), float(rng.uniform(-50, 50)))
        v = rng.uniform(-3, 3, size=(6, 2)).astype(np.float32)
        rot = np.array([[t.q.c, t.q.s, t.position[0], t.position[1]]] * 6, dtype=np.float32)
        ours = fcr._b2_mul(rot, v)
        ref = np.array([tuple(t * (float(x), float(y))) for x, y in v], dtype=np.float64)
        assert np.array_equal(ours.astype(np.float64), ref)


def test_covers_window():
    w, h = fcr.WINDOW_W, fcr.WINDOW_H
    big = [(-10.0, -10.0), (w + 10.0, -10.0), (w + 10.0, h + 10.0), (-10.0, h + 10.0)]
    assert fcr._covers_window(big)
    assert fcr._covers_window(big[::-1])  # orientation does not matter
    tight = [(-2.0, -2.0), (w + 2.0, -2.0), (w + 2.0, h + 2.0), (-2.0, h + 2.0)]
    assert not fcr._covers_window(tight)  # inside the safety margin
    assert not fcr._covers_window([(0.0, 0.0), (500.0, 0.0), (500.0, 500.0), (0.0, 500.0)])


def test_smoothscale_two_passes_commute_with_flip():
    """The identity the fast renderer rests on, on random pixels: smoothscale(flip(S)) ==
    Y-pass(stack(flip(X-pass(S rows)), X-pass(dashboard rows)))."""
    rng = np.random.default_rng(2)
    s = pygame.Surface((fcr.WINDOW_W, fcr.WINDOW_H))
    px = pygame.surfarray.pixels3d(s)
    px[:] = rng.integers(0, 256, size=px.shape)
    del px
    full = pygame.transform.flip(s, False, True)
    ref = pygame.surfarray.array3d(pygame.transform.smoothscale(full, (96, 96)))
    road = s.subsurface(pygame.Rect(0, fcr._DASH_H, fcr.WINDOW_W, fcr._ROAD_H))
    dash = full.subsurface(pygame.Rect(0, fcr._ROAD_H, fcr.WINDOW_W, fcr._DASH_H))
    road_x = pygame.transform.smoothscale(road, (96, fcr._ROAD_H))
    dash_x = pygame.transform.smoothscale(dash, (96, fcr._DASH_H))
    cols = pygame.Surface((96, fcr.WINDOW_H))
    c = pygame.surfarray.pixels2d(cols)
    c[:, : fcr._ROAD_H] = pygame.surfarray.pixels2d(road_x)[:, ::-1]
    c[:, fcr._ROAD_H :] = pygame.surfarray.pixels2d(dash_x)
    del c
    ours = pygame.surfarray.array3d(pygame.transform.smoothscale(cols, (96, 96)))
    assert np.array_equal(ours, ref)


def test_fill_matches_sdl_fill():
    """`_fill` (NumPy stores) writes exactly what SDL's `Surface.fill` writes, only inside the
    subsurface, pad byte included."""
    rng = np.random.default_rng(3)
    ref = pygame.Surface((fcr.WINDOW_W, fcr.WINDOW_H))
    px = pygame.surfarray.pixels2d(ref)
    px[:] = rng.integers(0, 2**32, size=px.shape, dtype=np.uint32)
    del px
    ours = ref.copy()
    rect = pygame.Rect(0, fcr._DASH_H, fcr.WINDOW_W, fcr._ROAD_H)
    for color in [(102, 204, 102), (0, 0, 0), (255, 255, 255), (13, 200, 77)]:
        mapped = ref.map_rgb(color)
        ref.subsurface(rect).fill(mapped)
        fcr._fill(ours.subsurface(rect), mapped)
        assert ours.get_buffer().raw == ref.get_buffer().raw


# ----- construction, version pin, wrappers


def test_version_pin(monkeypatch):
    for ok in ("1.3.0", "1.3.7", "1.3.0rc1"):
        fcr._check_gym_version(ok)
    for bad in ("1.2.9", "1.4.0", "2.0.0", "0.29.1"):
        with pytest.raises(RuntimeError, match="verified"):
            fcr._check_gym_version(bad)
    monkeypatch.setattr(gym, "__version__", "1.4.0")
    with pytest.raises(RuntimeError, match="1.4.0"):
        FastCarRacing()


def test_make_env_wrappers_and_limits():
    fast, stock = make_raw_env(fast=True), make_raw_env(fast=False, max_episode_steps=77)
    assert type(fast.unwrapped) is FastCarRacing
    assert type(stock.unwrapped) is gym.envs.box2d.car_racing.CarRacing
    assert fast.spec.max_episode_steps == 1000 and stock.spec.max_episode_steps == 77
    assert (fast.spec.id, stock.spec.id) == ("FastCarRacing-v3", "CarRacing-v3")

    def stack(env):
        names = []
        while isinstance(env, gym.Wrapper):
            names.append(type(env).__name__)
            env = env.env
        return names

    assert stack(fast) == stack(stock) == ["TimeLimit", "OrderEnforcing", "PassiveEnvChecker"]
    with pytest.raises(gym.error.ResetNeeded):
        fast.step(np.zeros(3, np.float32))
    agent = make_env(fast=False, max_episode_steps=77)
    assert stack(agent) == ["AgentView", *stack(stock)]
    assert agent.spec.max_episode_steps == 77 and agent.spec.id == "CarRacing-v3"


def test_agent_view_is_preprocess_and_to_env_action_on_the_raw_env():
    """`make_env`'s observations are `preprocess` of the raw env's frames, its actions go
    through `to_env_action`, and `info["raw_frame"]` is the raw frame, byte for byte."""
    agent, raw = make_env(fast=True, max_episode_steps=25), make_raw_env(fast=True,
                                                                         max_episode_steps=25)
    assert isinstance(agent, AgentView)
    assert agent.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert agent.action_space == gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    obs, info = agent.reset(seed=4)
    frame, _ = raw.reset(seed=4)
    assert info["raw_frame"].tobytes() == frame.tobytes()
    assert obs.tobytes() == preprocess(frame).tobytes()
    acts = np.random.default_rng(4).uniform(-1.2, 1.2, (25, 3)).astype(np.float32)
    for a in acts:
        obs, r, term, trunc, info = agent.step(a)
        frame, r0, term0, trunc0, _ = raw.step(to_env_action(a))
        assert info["raw_frame"].tobytes() == frame.tobytes()
        assert obs.dtype == np.uint8 and obs.tobytes() == preprocess(frame).tobytes()
        assert (r, term, trunc) == (r0, term0, trunc0)
    assert trunc


def test_action_repeat_plays_each_action_for_k_frames():
    """`make_env(action_repeat=3)` is the raw env with each action played 3 frames: the last
    frame, the summed reward, the last flags; an episode of 10 steps is 30 frames, and the
    spec counts steps."""
    agent = make_env(fast=True, max_episode_steps=10, action_repeat=3)
    raw = make_raw_env(fast=True, max_episode_steps=30)
    assert isinstance(agent.env, ActionRepeat) and agent.spec.max_episode_steps == 10
    _, info = agent.reset(seed=5)
    frame, _ = raw.reset(seed=5)
    assert info["raw_frame"].tobytes() == frame.tobytes()
    acts = np.random.default_rng(5).uniform(-1.0, 1.0, (10, 3)).astype(np.float32)
    for t, a in enumerate(acts):
        obs, r, term, trunc, info = agent.step(a)
        total = 0.0
        for _ in range(3):
            frame, r0, term0, trunc0, _ = raw.step(to_env_action(a))
            total += float(r0)
        assert obs.tobytes() == preprocess(frame).tobytes()
        assert (r, term, trunc) == (total, term0, trunc0) and trunc == (t == 9)


def test_action_repeat_draws_only_the_frames_it_returns():
    """On `FastCarRacing` the repeat draws one frame per step, and an episode that ends on an
    undrawn frame (a 29-frame limit with k = 4) returns that frame drawn: every observation and
    reward equals the raw env's stepped frame by frame."""
    lazy = ActionRepeat(make_raw_env(fast=True, max_episode_steps=29), 4)
    raw = make_raw_env(fast=True, max_episode_steps=29)
    assert isinstance(lazy.unwrapped, DrawsOnDemand)
    assert lazy.reset(seed=7)[0].tobytes() == raw.reset(seed=7)[0].tobytes()
    acts = np.random.default_rng(7).uniform(-1.0, 1.0, (8, 3)).astype(np.float32)
    for t, a in enumerate(acts):
        obs, r, term, trunc, _ = lazy.step(to_env_action(a))
        total = 0.0
        for _ in range(4 if t < 7 else 1):
            frame, r0, term0, trunc0, _ = raw.step(to_env_action(a))
            total += float(r0)
        assert obs.tobytes() == frame.tobytes() and r == total
        assert (term, trunc) == (term0, trunc0) and trunc == (t == 7)
    assert lazy.unwrapped.undrawn_frames == 7 * 3 + 1 and lazy.unwrapped.draw  # + frame 29
    assert not isinstance(make_raw_env(fast=False).unwrapped, DrawsOnDemand)


class _EndsAtFrame(gym.Env):
    """Test-only fake: reward = frame number, terminates at frame `end`."""

    observation_space = gym.spaces.Box(0, 255, (1,), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, end: int):
        self.end, self.t = end, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.uint8), float(self.t), self.t == self.end, False, {}


def test_action_repeat_stops_at_the_episode_end_and_refuses_k_below_1():
    env = ActionRepeat(_EndsAtFrame(5), 3)
    env.reset()
    assert env.step(np.zeros(1, np.float32))[1:3] == (1.0 + 2.0 + 3.0, False)
    obs, r, term, _, _ = env.step(np.zeros(1, np.float32))
    assert (int(obs[0]), r, term) == (5, 4.0 + 5.0, True)
    with pytest.raises(ValueError, match="repeat"):
        ActionRepeat(_EndsAtFrame(5), 0)


# ----- byte identity against stock gymnasium


def _pair(**kwargs):
    return make_raw_env(fast=False, **kwargs), make_raw_env(fast=True, **kwargs)


def _step_both(envs, action):
    (o0, r0, te0, tr0, i0), (o1, r1, te1, tr1, i1) = (e.step(action) for e in envs)
    assert o0.dtype == o1.dtype == np.uint8 and o0.shape == o1.shape == (96, 96, 3)
    assert o0.tobytes() == o1.tobytes()
    assert (r0, te0, tr0, i0) == (r1, te1, tr1, i1)
    return o0, r0, te0, tr0


def _reset_both(envs, seed, **kwargs):
    o0, o1 = (e.reset(seed=seed, **kwargs)[0] for e in envs)
    assert o0.tobytes() == o1.tobytes()


def _smooth_controller(seed: int, n: int) -> np.ndarray:
    """(n, 3) env actions from tanh(W x_t + b) of a slowly varying x_t, with brake episodes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    x = np.sin(t / rng.uniform(15, 80, size=8) + rng.uniform(0, 2 * np.pi, size=8))
    raw = np.tanh(x @ rng.normal(0, 0.8, size=(8, 3)) + rng.normal(0, 0.3, size=3))
    brake = (t[:, 0] // 60) % 4 == 3  # every 4th stretch of 60 steps: hard braking
    raw[brake, 1] = -1.0
    raw[brake, 2] = 1.0
    return to_env_action(raw)


def _off_track(n: int) -> np.ndarray:
    """Steer away from the track at low gas, then straight on until the playfield ends."""
    a = np.zeros((n, 3), np.float32)
    a[:, 1] = 0.2
    a[:50, 0] = 0.6
    return a


def _byte_identical_1000_steps(seed: int) -> tuple[int, int, int]:
    """1000 steps of the stock and the fast env side by side, asserting byte identity at every
    step (the test below, one seed): (episodes finished, fast env's fast-rendered frames,
    off-playfield terminations)."""
    envs = _pair(max_episode_steps=300)
    rng = np.random.default_rng(100 + seed)
    policies = [
        rng.uniform([-1, 0, 0], [1, 1, 1], size=(300, 3)).astype(np.float32),
        _off_track(300),
        _smooth_controller(seed, 300),
    ]
    off_track_terminations = 0
    episode, t, steps = 0, 0, 0
    _reset_both(envs, seed=seed)
    while steps < 1000:
        _, r, terminated, truncated = _step_both(envs, policies[episode % 3][t])
        t += 1
        steps += 1
        if terminated or truncated:
            off_track_terminations += int(terminated and r == -100)
            episode, t = episode + 1, 0
            _reset_both(envs, seed=seed + 1000 * episode)
    return episode, envs[1].unwrapped.fast_frames, off_track_terminations


@pytest.mark.slow
def test_fast_env_byte_identical_3_seeds_x_1000_steps():
    """3 seeds x 1000 steps, episodes of at most 300 steps on the same instances (reset caches):
    random actions, a smooth controller with braking, and driving off the playfield (-100).
    The seeds run in processes of their own, one per core (a failed assertion comes back as
    that process's error)."""
    workers = min(3, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_byte_identical_1000_steps, range(3)))
    for episodes, fast_frames, _ in runs:
        assert episodes >= 3
        assert fast_frames >= 900
    assert sum(off_track for _, _, off_track in runs) >= 1


@pytest.mark.slow
def test_fast_env_byte_identical_domain_randomize():
    """Randomised (float) colours, including a reset that keeps them and one that redraws them."""
    envs = _pair(domain_randomize=True)
    acts = _smooth_controller(7, 150)
    for options in (None, {"randomize": False}, {"randomize": True}):
        _reset_both(envs, seed=3, options=options)
        for a in acts:
            _step_both(envs, a)


def test_fast_env_stock_fallback_when_indicator_overflows():
    """A wheel spinning fast enough draws its ABS bar above the dashboard: the fast env falls
    back to the stock renderer for that frame and stays byte-identical."""
    envs = _pair()
    _reset_both(envs, seed=5)
    acts = _smooth_controller(5, 30)
    for a in acts[:20]:
        _step_both(envs, a)
    fast = envs[1].unwrapped
    before = fast.stock_frames
    for e in envs:
        e.unwrapped.car.wheels[0].omega = 450.0
    _step_both(envs, acts[20])
    assert fast.stock_frames == before + 1
    for a in acts[21:]:
        _step_both(envs, a)


def test_fast_env_rgb_array_render_mode():
    envs = _pair(render_mode="rgb_array")
    _reset_both(envs, seed=11)
    for a in _smooth_controller(11, 5):
        _step_both(envs, a)
    f0, f1 = (e.render() for e in envs)
    assert f0.shape == (400, 600, 3) and np.array_equal(f0, f1)


# ----- preprocess and to_env_action (PAPER.md §1.1, §1.5)


@pytest.fixture(scope="module")
def real_frames():
    env = make_raw_env(fast=True)
    obs, _ = env.reset(seed=0)
    frames = [obs]
    for a in _smooth_controller(0, 80):
        frames.append(env.step(a)[0])
    return np.stack(frames[::10])


def _pil_bilinear_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Independent separable triangle-filter resample (PIL BILINEAR's filter when shrinking)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = max(scale, 1.0)
        centres = (np.arange(n_out) + 0.5) * scale
        x = np.arange(n_in) + 0.5
        w = np.clip(1.0 - np.abs(x[None, :] - centres[:, None]) / support, 0.0, None)
        return w / w.sum(axis=1, keepdims=True)

    f = img.astype(np.float64)
    wy, wx = weights(img.shape[0], size), weights(img.shape[1], size)
    out = np.einsum("oh,hwc->owc", wy, np.einsum("pw,hwc->hpc", wx, f))
    return np.clip(np.round(out), 0, 255)


def test_preprocess_on_real_frames(real_frames):
    for frame in real_frames:
        out = preprocess(frame)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        # the dashboard rows 84..95 do not reach the output
        scribbled = frame.copy()
        scribbled[cr.CROP_ROWS :] = np.random.default_rng(0).integers(0, 256, (12, 96, 3))
        assert np.array_equal(preprocess(scribbled), out)
        # a bilinear resize of the 84x96 crop (squashed to 64x64)
        pil = np.asarray(Image.fromarray(frame[:84]).resize((64, 64), Image.BILINEAR))
        assert np.array_equal(out, pil)
        ref = _pil_bilinear_reference(frame[:84], 64)
        assert np.abs(out.astype(np.float64) - ref).max() <= 2


def test_preprocess_constant_frame_and_bad_input():
    frame = np.full((96, 96, 3), 77, np.uint8)
    frame[84:] = 0
    assert np.all(preprocess(frame) == 77)
    with pytest.raises(ValueError, match="96, 96, 3"):
        preprocess(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((96, 96, 3), np.float32))


def test_to_env_action_values():
    a = np.array(
        [[-1, -1, -1], [1, 1, 1], [0, 0, 0], [0.3, -0.2, -0.5], [-0.5, 0.5, 0.25], [2, 3, 4]],
        np.float32,
    )
    expect = np.array(
        [[-1, 0, 0], [1, 1, 1], [0, 0.5, 0], [0.3, 0.4, 0], [-0.5, 0.75, 0.25], [1, 1, 1]],
        np.float32,
    )
    out = to_env_action(a)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expect, atol=1e-7)
    batched = to_env_action(a.reshape(2, 3, 3))
    assert batched.shape == (2, 3, 3)
    np.testing.assert_array_equal(batched.reshape(6, 3), out)
    with pytest.raises(ValueError, match=r"\.\.\., 3"):
        to_env_action(np.zeros((4, 2)))
