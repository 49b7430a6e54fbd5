"""RayEnvPool: the local pool's results on the same seeds (a world-model policy run inside the
actors, and a scripted one), and recovery from an actor that dies or hangs. Starts its own
local Ray instance (2 CPUs) and nothing outside this machine."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from test_evolve import _tiny_world
from test_vector import CAR_FN, ScriptedPolicy, faulty_env, reference_episode

from dreamjax.agent import WorldModelPolicy, make_world_model
from dreamjax.envs.pool import EnvPool, EpisodeSpec
from dreamjax.models.controller import controller_for, init_controller, obs_dim

ray = pytest.importorskip("ray")
from dreamjax.envs.ray_pool import RayEnvPool, remote_policy  # noqa: E402

SEEDS = [11, 3, 7, 5, 2]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray instance whose workers can import this folder's test helpers."""
    tests = str(Path(__file__).parent)
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@functools.cache
def _world():
    """A tiny V and M, and two controllers."""
    vae, vp, mdn, mp = _tiny_world()
    c = controller_for("zh")
    batch = jax.vmap(lambda k: init_controller(k, c, obs_dim("zh", 2, 4)))(
        jax.random.split(jax.random.key(2), 2))
    return make_world_model(vae, vp, mdn, mp, "zh"), batch


def _policy() -> WorldModelPolicy:
    """A fresh policy (it keeps per-slot state) over the same world model, with action noise and
    a per-episode action offset (both must travel to the actors)."""
    return WorldModelPolicy(*_world(), seed=5, action_noise=0.1, action_offset=(0.1, 0.3, 0.0))


def _same(a, b):
    assert (a.spec, a.total_reward, a.length) == (b.spec, b.total_reward, b.length)
    for name in ("frames", "obs", "actions", "rewards", "terminated", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_world_model_policy_in_actors_equals_the_local_pool():
    specs = [EpisodeSpec(seed=s, tag=i % 2) for i, s in enumerate(SEEDS[:4])]
    policy = _policy()
    build, shared, light = remote_policy(policy)
    assert shared is policy.world_model and light[0]["params"]["out"]["kernel"].shape[0] == 2
    assert light[2:] == (0.1, (0.1, 0.3, 0.0))
    with EnvPool(CAR_FN, num_workers=1, envs_per_worker=2) as local:
        want = local.run(specs, _policy(), steps=True)
    with RayEnvPool(CAR_FN, num_actors=1, envs_per_actor=3) as pool:  # other slot counts
        assert pool.env_info == local.env_info and pool.num_slots == 3
        got = pool.run(specs, policy, steps=True)
        again = pool.run(specs[::-1], _policy(), steps=True)  # the shared part is re-sent
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    for a, b in zip(again, want[::-1], strict=True):
        _same(a, b)
    assert pool.env_steps == sum(r.length for r in want) and pool.restarts == 0


def test_scripted_policy_frames_equal_in_process_runs():
    seen = []
    with RayEnvPool(CAR_FN, num_actors=2, envs_per_actor=1) as pool:
        results = pool.run([EpisodeSpec(seed=s, tag=k) for k, s in enumerate(SEEDS[:3])],
                           ScriptedPolicy(1), record=True, progress=seen.append)
    assert sorted(r.spec.tag for r in seen) == [0, 1, 2]
    for r, s in zip(results, SEEDS, strict=False):
        total, length, _, frames = reference_episode(s)
        assert (r.total_reward, r.length) == (total, length)
        np.testing.assert_array_equal(r.frames, frames)


@pytest.mark.parametrize("mode", ["crash", "hang"])
def test_dead_or_hung_actor_is_replaced_and_its_episode_rerun(tmp_path, mode):
    marker = tmp_path / "fault"
    env_fn = functools.partial(faulty_env, CAR_FN, seed=SEEDS[1], step=5, mode=mode,
                               marker=marker)
    specs = [EpisodeSpec(seed=s, tag=k) for k, s in enumerate(SEEDS[:3])]
    # a crash is noticed at once, so its deadline is long enough that no healthy episode of a
    # loaded machine can miss it; a hang is noticed only by its deadline, which still leaves a
    # healthy episode (under 2 s idle) eight times its time
    timeout = 300.0 if mode == "crash" else 16.0
    with RayEnvPool(env_fn, num_actors=2, envs_per_actor=1, episode_timeout=timeout) as pool:
        results = pool.run(specs, ScriptedPolicy(1))
    assert marker.exists() and pool.restarts == 1
    assert [r.spec for r in results] == specs
    for r, s in zip(results, SEEDS, strict=False):
        assert (r.total_reward, r.length) == reference_episode(s)[:2]
    assert pool.env_steps == sum(r.length for r in results)
