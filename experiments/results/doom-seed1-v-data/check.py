"""Real check of a Doom controller file on training seeds: check.py RUN CTRL.npz N SEED0"""

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax.agent import WorldModelPolicy
from dreamjax.config import DOOM_PROFILES
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import real_pool
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.run import RunFolder

if __name__ == "__main__":
    run = RunFolder(sys.argv[1])
    n = int(sys.argv[3])
    s0 = int(sys.argv[4])
    cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    params, _ = artifacts.load_controller_params(Path(sys.argv[2]), wm.spec)
    policy = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=0)
    with real_pool(cfg, 2100, DOOM) as pool:
        res = pool.run([EpisodeSpec(seed=s0 + i, tag=0) for i in range(n)], policy, steps=True)
    rets = np.array([r.total_reward for r in res])
    acts = np.concatenate([np.asarray(r.actions)[:, 0] for r in res])
    print(
        f"{sys.argv[2]}: {rets.mean():.1f} ± {rets.std():.1f} {rets.astype(int).tolist()} "
        f"left {np.mean(acts < -1 / 3):.2f} right {np.mean(acts > 1 / 3):.2f}"
    )
