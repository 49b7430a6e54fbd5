"""Real check of a Doom controller on training seeds, with what it does with the buttons.

usage: python check.py RUN CTRL.npz N SEED0   (seeds SEED0.., never the evaluation seeds)

Prints the mean life, the share of steps on LEFT / RIGHT, and the mean length of a run of one
button (LEFT, nothing or RIGHT held on consecutive steps): a patrol holds each for ~64-128
steps, a jitter for a few.
"""

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax.agent import WorldModelPolicy
from dreamjax.config import DOOM_PROFILES
from dreamjax.envs.doom import to_env_action
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import real_pool
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.run import RunFolder

if __name__ == "__main__":
    run = RunFolder(sys.argv[1])
    n, s0 = int(sys.argv[3]), int(sys.argv[4])
    cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    params, _ = artifacts.load_controller_params(Path(sys.argv[2]), wm.spec)
    policy = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=0)
    with real_pool(cfg, 2100, DOOM) as pool:
        res = pool.run([EpisodeSpec(seed=s0 + i, tag=0) for i in range(n)], policy, steps=True)
    rets = np.array([r.total_reward for r in res])
    buttons = [to_env_action(np.asarray(r.actions)) for r in res]
    runs = np.concatenate([np.diff(np.flatnonzero(np.r_[True, b[1:] != b[:-1], True]))
                           for b in buttons])
    allb = np.concatenate(buttons)
    print(f"{sys.argv[2]}: {rets.mean():.1f} ± {rets.std():.1f} {sorted(rets.astype(int))} "
          f"left {np.mean(allb == 1):.2f} right {np.mean(allb == 2):.2f} "
          f"mean run {runs.mean():.1f} steps")
