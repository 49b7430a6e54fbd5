"""EnvPool: order, determinism, any env factory, and recovery from dead or hung workers."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from dreamjax.envs.carracing import make_env, make_raw_env, preprocess, to_env_action
from dreamjax.envs.pool import EnvInfo, EnvPool, EpisodeSpec
from dreamjax.errors import WorkerError

MAX_STEPS = 30
CAR_FN = functools.partial(make_env, fast=True, max_episode_steps=MAX_STEPS)
CARTPOLE_STEPS = 120
CARTPOLE_FN = functools.partial(gym.make, "CartPole-v1", max_episode_steps=CARTPOLE_STEPS)


def scripted_action(seed: int, t: int) -> np.ndarray:
    """A deterministic open-loop action for episode `seed` at step t (raw, in [-1, 1])."""
    return np.array([np.sin(0.3 * t + seed), 0.6, 0.1 * np.cos(t)], np.float32)


class ScriptedPolicy:
    """Open-loop per-slot scripted policy; `on_act(calls)` is a hook for fault injection."""

    def __init__(self, num_slots: int, on_act=None):
        self.t = np.zeros(num_slots, int)
        self.seed = np.zeros(num_slots, int)
        self.resets: list[tuple[int, int]] = []
        self.calls = 0
        self.on_act = on_act

    def reset(self, slot, spec):
        self.t[slot] = 0
        self.seed[slot] = spec.seed
        self.resets.append((slot, spec.seed))

    def act(self, frames, active):
        assert frames.shape == (len(self.t), 64, 64, 3) and frames.dtype == np.uint8
        self.calls += 1
        if self.on_act is not None:
            self.on_act(self.calls)
        a = np.stack([scripted_action(s, t) for s, t in zip(self.seed, self.t, strict=True)])
        self.t[active] += 1
        return a


@functools.cache
def reference_episode(seed: int) -> tuple[float, int, np.ndarray, np.ndarray]:
    """The same episode run in-process on the raw env with the frame and action maps applied by
    hand (what the pool's workers did before `AgentView`): (return, length, 64x64 observations,
    96x96 frames), observations and frames at which each action was taken."""
    env = make_raw_env(fast=True, max_episode_steps=MAX_STEPS)
    raw, _ = env.reset(seed=seed)
    total, t, obs, frames = 0.0, 0, [], []
    while True:
        obs.append(preprocess(raw))
        frames.append(raw)
        raw, r, term, trunc, _ = env.step(to_env_action(scripted_action(seed, t)))
        total += r
        t += 1
        if term or trunc:
            env.close()
            return total, t, np.stack(obs), np.stack(frames)


class FaultAt(gym.Wrapper):
    """TEST-ONLY fault injection: in the episode reset with `seed`, just before step `step`, hang
    (`mode="hang"`: sleep) or crash (`mode="crash"`: exit the process). With a `marker` path only
    on the first attempt (the marker file records that the fault happened), else every time."""

    def __init__(self, env, seed: int, step: int, mode: str, marker: Path | None = None):
        super().__init__(env)
        self.fault_seed, self.fault_step, self.mode, self.marker = seed, step, mode, marker
        self._armed, self._t = False, 0

    def reset(self, *, seed=None, options=None):
        self._armed = seed == self.fault_seed and not (self.marker and self.marker.exists())
        self._t = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self._armed and self._t == self.fault_step:
            if self.marker is not None:
                self.marker.touch()
            if self.mode == "hang":
                time.sleep(1e6)
            os._exit(3)
        self._t += 1
        return self.env.step(action)


def faulty_env(env_fn, **fault) -> gym.Env:
    """TEST-ONLY env factory: `env_fn()` wrapped in `FaultAt(**fault)`."""
    return FaultAt(env_fn(), **fault)


def broken_env() -> gym.Env:
    """TEST-ONLY env factory that fails, as a missing game or bad option would."""
    raise RuntimeError("no such game installed")


def jax_free_car_env() -> gym.Env:
    """TEST-ONLY env factory that refuses to build in a process that has imported JAX."""
    if "jax" in sys.modules:
        raise RuntimeError("the env worker imported jax")
    return make_env(fast=True, max_episode_steps=5)


@pytest.fixture(scope="module")
def pool():
    with EnvPool(CAR_FN, num_workers=2, envs_per_worker=1, step_timeout=5.0) as p:
        yield p


def test_results_in_order_and_equal_to_in_process_runs(pool):
    assert pool.env_info == EnvInfo("FastCarRacing-v3", (64, 64, 3), "|u1", (3,), "<f4",
                                    MAX_STEPS)
    specs = [EpisodeSpec(seed=s, tag=k) for k, s in enumerate([11, 3, 7, 5, 2])]
    seen = []
    results = pool.run(specs, ScriptedPolicy(pool.num_slots), record=True, steps=True,
                       progress=lambda r: seen.append(r.spec))
    assert [r.spec for r in results] == specs
    assert sorted(seen, key=lambda s: s.tag) == specs
    for r in results:
        total, length, obs, frames = reference_episode(r.spec.seed)
        assert r.length == length == MAX_STEPS
        assert r.total_reward == total
        assert r.frames.dtype == np.uint8 and r.frames.tobytes() == frames.tobytes()
        assert r.obs.dtype == np.uint8 and r.obs.tobytes() == obs.tobytes()
        np.testing.assert_allclose(r.actions[3], scripted_action(r.spec.seed, 3))
        assert r.rewards.sum() == pytest.approx(r.total_reward, abs=1e-4)
        assert r.truncated[-1] and not r.truncated[:-1].any()
    assert pool.env_steps == MAX_STEPS * len(specs)


def test_killed_worker_is_replaced_and_episodes_rerun(pool):
    specs = [EpisodeSpec(seed=s) for s in (21, 22, 23, 24)]
    clean = pool.run(specs, ScriptedPolicy(pool.num_slots))
    victim = pool.worker_pids()[0]
    restarts = pool.restarts

    def kill_once(calls):
        if calls == 10:
            os.kill(victim, signal.SIGKILL)

    policy = ScriptedPolicy(pool.num_slots, on_act=kill_once)
    results = pool.run(specs, policy)
    assert pool.restarts == restarts + 1
    assert victim not in pool.worker_pids()
    assert [r.total_reward for r in results] == [r.total_reward for r in clean]
    assert [r.length for r in results] == [MAX_STEPS] * len(specs)
    # slot 0's first episode was restarted: its seed was reset twice on slot 0
    assert policy.resets.count((0, 21)) == 2


def test_hung_worker_is_replaced_and_episode_rerun(tmp_path):
    marker = tmp_path / "hung"
    env_fn = functools.partial(faulty_env, CAR_FN, seed=32, step=5, mode="hang", marker=marker)
    specs = [EpisodeSpec(seed=31), EpisodeSpec(seed=32), EpisodeSpec(seed=33)]
    with EnvPool(env_fn, num_workers=2, step_timeout=5.0) as p:
        results = p.run(specs, ScriptedPolicy(p.num_slots))
        assert p.restarts == 1 and marker.exists()
    for r in results:
        total, length, _, _ = reference_episode(r.spec.seed)
        assert (r.total_reward, r.length) == (total, length)


def test_worker_that_keeps_failing_raises_a_one_line_worker_error():
    env_fn = functools.partial(faulty_env, CARTPOLE_FN, seed=5, step=3, mode="crash")
    with EnvPool(env_fn, num_workers=1, max_retries=1) as p, \
            pytest.raises(WorkerError, match="seed=5 tag=7 failed 2 times") as exc:
        p.run([EpisodeSpec(seed=4, tag=6), EpisodeSpec(seed=5, tag=7)], CartPolePolicy())
    assert "\n" not in str(exc.value)
    with EnvPool(broken_env, num_workers=1) as p, \
            pytest.raises(WorkerError, match="could not build its env.*no such game"):
        p.run([EpisodeSpec(seed=0)], CartPolePolicy())


def test_bad_policy_output_is_a_clear_error(pool):
    class Bad(ScriptedPolicy):
        def act(self, frames, active):
            return np.zeros((1, 2))

    with pytest.raises(ValueError, match="policy.act returned shape"):
        pool.run([EpisodeSpec(seed=1)], Bad(pool.num_slots))
    # the pool stays usable after a run that raised
    (r,) = pool.run([EpisodeSpec(seed=1)], ScriptedPolicy(pool.num_slots))
    assert (r.total_reward, r.length) == reference_episode(1)[:2]


def test_close_stops_workers_and_workers_never_import_jax():
    p = EnvPool(jax_free_car_env, num_workers=1)
    assert p.env_info.max_episode_steps == 5  # raises WorkerError if the worker imported jax
    procs = list(p._procs)
    p.close()
    assert not any(proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError, match="closed"):
        p.run([EpisodeSpec(seed=0)], ScriptedPolicy(1))


# ----- any env factory: CartPole's (4,) float32 observations and discrete actions


def cartpole_action(obs: np.ndarray, tag: np.ndarray) -> np.ndarray:
    """A closed-loop rule on (..., 4) observations: push towards where the pole falls (even
    tags), or a rule too slow to keep it up for long (odd tags)."""
    gain = np.where(tag % 2 == 0, 0.3, -1.0)
    return (obs[..., 2] + gain * obs[..., 3] > 0.05 * obs[..., 0]).astype(np.int64)


class CartPolePolicy:
    """`cartpole_action` for every slot; observations must be (S, 4) float32."""

    def __init__(self):
        self.tags = np.zeros(0, np.int64)

    def reset(self, slot, spec):
        self.tags = np.pad(self.tags, (0, max(0, slot + 1 - len(self.tags))))
        self.tags[slot] = spec.tag

    def act(self, frames, active):
        assert frames.ndim == 2 and frames.shape[1] == 4 and frames.dtype == np.float32
        tags = np.pad(self.tags, (0, len(frames) - len(self.tags)))
        return cartpole_action(frames, tags)


def cartpole_reference(seed: int, tag: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(return, observations (T, 4), actions (T,)) of one CartPole episode in this process."""
    env = CARTPOLE_FN()
    obs, _ = env.reset(seed=seed)
    total, seen, acts = 0.0, [], []
    while True:
        a = cartpole_action(obs, np.int64(tag))
        seen.append(obs)
        acts.append(a)
        obs, r, term, trunc, _ = env.step(a)
        total += r
        if term or trunc:
            env.close()
            return total, np.stack(seen), np.stack(acts)


def test_pool_runs_any_env_factory_like_a_direct_loop():
    seeds = [3, 14, 15, 92, 65, 35, 89]
    with EnvPool(CARTPOLE_FN, num_workers=2, envs_per_worker=2) as p:
        assert p.env_info == EnvInfo("CartPole-v1", (4,), "<f4", (), "<i8", CARTPOLE_STEPS)
        results = p.run([EpisodeSpec(seed=s, tag=k) for k, s in enumerate(seeds)],
                        CartPolePolicy(), record=True, steps=True)
    lengths = set()
    for r, s in zip(results, seeds, strict=True):
        total, obs, acts = cartpole_reference(s, r.spec.tag)
        assert r.spec.seed == s and r.length == len(obs) and r.total_reward == total
        np.testing.assert_array_equal(r.obs, obs)
        np.testing.assert_array_equal(r.frames, obs)  # no info["raw_frame"]: the observation
        np.testing.assert_array_equal(r.actions, acts)
        assert r.terminated[-1] != r.truncated[-1]
        lengths.add(r.length)
    assert min(lengths) < CARTPOLE_STEPS == max(lengths)  # poles that fell and time limits
