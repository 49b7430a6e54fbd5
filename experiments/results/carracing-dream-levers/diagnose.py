"""What a run's final dream-trained C does: 3 dream and 2 real episodes (training-range seeds
3,000,000+), env-space action means and the fraction of steps paid a new tile.

    python experiments/results/carracing-dream-levers/diagnose.py RUN_DIR [START [STEPS]]

START is the dream's `--dream.start` (`first`, the default, or `real`) and STEPS its length
(default 1000; 200 for the real-start screen).
"""

import dataclasses
import sys

import jax
import numpy as np

from dreamjax.agent import WorldModelPolicy
from dreamjax.config import ExperimentConfig
from dreamjax.dream.ensemble import member
from dreamjax.dream.env import DreamEnv
from dreamjax.dream.rollout import trajectory
from dreamjax.envs.carracing import to_env_action
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import CARRACING, real_pool
from dreamjax.pipeline.run import RunFolder


def _row(name: str, ret: float, acts: np.ndarray, paid: np.ndarray) -> str:
    ea = to_env_action(acts)
    return (f"{name}: return {ret:.1f} steer {ea[:, 0].mean():+.2f}±{ea[:, 0].std():.2f} "
            f"gas {ea[:, 1].mean():.2f} brake {ea[:, 2].mean():.2f} paid {paid.mean():.2f}")


def main() -> None:
    run = RunFolder(sys.argv[1])
    cfg = dataclasses.replace(ExperimentConfig(), train_in="dream", workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    params, _ = artifacts.load_controller_params(artifacts.final_controller_path(cfg, run),
                                                 wm.spec)
    start = sys.argv[2] if len(sys.argv) > 2 else "first"
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    dream_cfg = dataclasses.replace(
        cfg, dream=dataclasses.replace(cfg.dream, temperature=1.15, start=start),
        es=dataclasses.replace(cfg.es, max_steps=steps))
    dp = member(artifacts.config_dream_params(dream_cfg, run, wm), 0)  # an ensemble's first world
    env, ctrl = DreamEnv(), wm.spec.controller
    dream = jax.jit(lambda key: trajectory(key, env, dp, ctrl.apply, params, steps))
    for k in range(3):
        states, rewards, _ = dream(jax.random.key(k))
        obs = jax.vmap(lambda s: env.get_obs(s, dp))(states)
        acts = np.asarray(jax.vmap(lambda o: ctrl.apply(params, o))(obs))
        print(_row(f"dream {k}", float(np.sum(rewards)), acts, np.asarray(rewards) > 0.5))
    policy = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=0)
    with real_pool(cfg, 1000, CARRACING) as pool:
        res = pool.run([EpisodeSpec(seed=3_000_000 + i, tag=0) for i in range(2)], policy,
                       steps=True)
    for r in res:
        print(_row("real", r.total_reward, r.actions, np.asarray(r.rewards) > 0))


if __name__ == "__main__":
    main()
