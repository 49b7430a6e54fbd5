"""EnvPool on the real CarRacing env: order, determinism, and recovery from dead or hung workers."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from dreamjax.envs.carracing import make_env, to_env_action
from dreamjax.envs.pool import EnvPool, EpisodeSpec

MAX_STEPS = 30


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


def reference_return(seed: int) -> tuple[float, int]:
    """The same episode run in-process with make_env directly."""
    env = make_env(fast=True, max_episode_steps=MAX_STEPS)
    env.reset(seed=seed)
    total, t = 0.0, 0
    while True:
        _, r, term, trunc, _ = env.step(to_env_action(scripted_action(seed, t)))
        total += r
        t += 1
        if term or trunc:
            env.close()
            return total, t


@pytest.fixture(scope="module")
def pool():
    with EnvPool(num_workers=2, envs_per_worker=1, max_steps=MAX_STEPS, step_timeout=5.0) as p:
        yield p


def test_results_in_order_and_equal_to_in_process_runs(pool):
    specs = [EpisodeSpec(seed=s, tag=k) for k, s in enumerate([11, 3, 7, 5, 2])]
    seen = []
    results = pool.run(specs, ScriptedPolicy(pool.num_slots), record=True, steps=True,
                       progress=lambda r: seen.append(r.spec))
    assert [r.spec for r in results] == specs
    assert sorted(seen, key=lambda s: s.tag) == specs
    for r in results:
        total, length = reference_return(r.spec.seed)
        assert r.length == length == MAX_STEPS
        assert r.total_reward == pytest.approx(total, abs=1e-9)
        assert r.frames.shape == (MAX_STEPS, 96, 96, 3) and r.frames.dtype == np.uint8
        assert r.obs.shape == (MAX_STEPS, 64, 64, 3)
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


def test_hung_worker_is_replaced_and_episode_rerun(pool):
    specs = [EpisodeSpec(seed=31), EpisodeSpec(seed=32, fault_hang_step=5), EpisodeSpec(seed=33)]
    restarts = pool.restarts
    results = pool.run(specs, ScriptedPolicy(pool.num_slots))
    assert pool.restarts == restarts + 1
    for r in results:
        total, length = reference_return(r.spec.seed)
        assert (r.total_reward, r.length) == (pytest.approx(total, abs=1e-9), length)


def test_bad_policy_output_is_a_clear_error(pool):
    class Bad(ScriptedPolicy):
        def act(self, frames, active):
            return np.zeros((1, 2))

    with pytest.raises(ValueError, match="policy.act returned shape"):
        pool.run([EpisodeSpec(seed=1)], Bad(pool.num_slots))
    # the pool stays usable after a run that raised
    (r,) = pool.run([EpisodeSpec(seed=1)], ScriptedPolicy(pool.num_slots))
    assert (r.total_reward, r.length) == (pytest.approx(reference_return(1)[0], abs=1e-9),
                                          MAX_STEPS)


def test_close_stops_workers():
    p = EnvPool(num_workers=1, max_steps=5)
    procs = list(p._procs)
    p.close()
    assert not any(proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError, match="closed"):
        p.run([EpisodeSpec(seed=0)], ScriptedPolicy(1))
