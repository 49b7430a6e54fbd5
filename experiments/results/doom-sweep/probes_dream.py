"""Dream life of the open-loop probes (held buttons, patrols) in a run's dream, at several τ.

usage: python probes_dream.py RUN_DIR TAU [TAU ...]   (256 dreams of at most 2100 steps each)

The same schedules as the report's calibration (`dreamjax.pipeline.doom.open_loop_probes`),
with more patrol periods; the real lives are `patrol_real.py`'s.
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.config import DOOM_PROFILES
from dreamjax.dream.calibration import schedule_lengths
from dreamjax.dream.ensemble import member
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import patrol_schedule
from dreamjax.pipeline.run import RunFolder

STEPS = 2100
PERIODS = (2, 4, 8, 16, 32, 64, 100, 128, 160)


def main() -> None:
    run = RunFolder(sys.argv[1])
    cfg = DOOM_PROFILES["laptop"]()
    wm = artifacts.load_world_model(run, cfg.controller)
    lengths = jax.jit(schedule_lengths)
    probes = {f"held {a:+.0f}": np.full((STEPS, 1), a, np.float32) for a in (-1.0, 0.0, 1.0)}
    probes |= {f"patrol {p}": patrol_schedule(p, STEPS) for p in PERIODS}
    for tau in map(float, sys.argv[2:]):
        c = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=tau))
        dp = member(artifacts.config_dream_params(c, run, wm), 0)
        row = []
        for name, actions in probes.items():
            tiled = jnp.broadcast_to(jnp.asarray(actions), (256, *actions.shape))
            n = np.asarray(lengths(jax.random.key(0), dp, tiled))
            row.append(f"{name}: {n.mean():.0f}")
        print(f"{sys.argv[1]} tau {tau}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
