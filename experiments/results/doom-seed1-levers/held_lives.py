"""Dream life of each button held for a whole episode, per ensemble member, at several τ.

usage: python held_lives.py RUN_DIR TAU [TAU ...]   (128 dreams of at most 2100 steps each)
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.config import DOOM_PROFILES
from dreamjax.dream.ensemble import ensemble_size, member
from dreamjax.dream.env import DreamEnv
from dreamjax.dream.rollout import rollout
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    run = RunFolder(sys.argv[1])
    cfg = DOOM_PROFILES["laptop"]()
    wm = artifacts.load_world_model(run, cfg.controller)
    env = DreamEnv()

    @jax.jit
    def lives(key, a, dp):
        keys = jax.random.split(key, 128)
        return jax.vmap(lambda k: rollout(k, env, dp, lambda p, o: p, a, 2100).lengths)(keys)

    for tau in map(float, sys.argv[2:]):
        c = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=tau))
        full = artifacts.config_dream_params(c, run, wm)
        for m in range(ensemble_size(full)):
            dp = member(full, m).replace(max_steps_in_episode=jnp.int32(2100))
            out = []
            for a in (-1.0, 0.0, 1.0):
                n = np.asarray(lives(jax.random.key(0), jnp.array([a], jnp.float32), dp))
                out.append(f"a={a:+.0f}: {n.mean():.0f}±{n.std():.0f}")
            print("tau", tau, "member", m, " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
