"""Real returns of CarRacing controller files on training seeds (never the evaluation seeds).

    python carcheck.py RUN KIND N SEED0 CTRL.npz...     # KIND: the controller kind (zh, z)
"""

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax.agent import WorldModelPolicy
from dreamjax.config import PROFILES
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import real_pool
from dreamjax.pipeline.run import RunFolder


def main():
    run, kind = RunFolder(sys.argv[1]), sys.argv[2]
    n, s0 = int(sys.argv[3]), int(sys.argv[4])
    cfg = PROFILES["laptop"]()
    cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller, kind=kind))
    wm = artifacts.load_world_model(run, cfg.controller)
    for f in sys.argv[5:]:
        params, _ = artifacts.load_controller_params(Path(f), wm.spec)
        policy = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=0)
        with real_pool(cfg, 1000) as pool:
            res = pool.run([EpisodeSpec(seed=s0 + i, tag=0) for i in range(n)], policy,
                           steps=True)
        rets = np.array([r.total_reward for r in res])
        acts = np.concatenate([np.asarray(r.actions) for r in res])
        gas = np.clip((acts[:, 1] + 1) / 2, 0, 1).mean()
        print(f"{f}: {rets.mean():.1f} ± {rets.std():.1f} min {rets.min():.0f} max "
              f"{rets.max():.0f} |steer| {np.abs(acts[:, 0]).mean():.2f} env gas {gas:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
