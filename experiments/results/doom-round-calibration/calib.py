"""Each iterative round's M at several τ: the data policy's parts, a held RIGHT and a 128-step
patrol, their mean life in 128 dreams; the parts beside their real life (collected episodes).

usage: python calib.py RUN_DIR SEED TAUS   (TAUS comma-separated, e.g. 1.15,2.0,3.0)
Prints one JSON row per (round, τ) with the round's check return.
"""

import dataclasses
import json
import sys

import jax
import numpy as np

from dreamjax.config import DOOM_PROFILES
from dreamjax.data.episodes import episode_index, episode_length, list_episodes
from dreamjax.data.policies import POLICIES, episode_part, open_loop_schedules, part_classes
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import (
    CALIBRATION_POLICY_SEED,
    MIN_FRAMES,
    _schedule_lengths,
    patrol_schedule,
)
from dreamjax.pipeline.iterate import _series_dirs, round_dir
from dreamjax.pipeline.run import RunFolder

N = 128


def main() -> None:
    run_dir, seed = sys.argv[1], int(sys.argv[2])
    taus = [float(t) for t in sys.argv[3].split(",")]
    cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), run_dir=run_dir, seed=seed)
    run = RunFolder(run_dir)
    vae = artifacts.load_vae(run)
    policy = POLICIES[cfg.collect.policy]
    classes = part_classes(policy)
    paths = list_episodes(run.path("collect"))
    steps = cfg.es.max_steps
    for r in range(4):
        rd = round_dir(run, r)
        mdn = run.path("mdnrnn") if r == 0 else rd / "mdnrnn"
        if not (mdn / "DONE.json").is_file():
            break
        wm = artifacts.load_world_model(run, cfg.controller, mdn, vae)
        for tau in taus:
            c = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=tau))
            dp = artifacts.config_dream_params(c, run, wm, _series_dirs(run, r))
            row = {"run": run_dir, "round": r, "tau": tau}
            for j, part in enumerate(dict.fromkeys(classes)):
                real = np.array([episode_length(p) for p in paths
                                 if classes[episode_part(policy, episode_index(p))] is part])
                acts = open_loop_schedules(part, CALIBRATION_POLICY_SEED, N, steps)
                lengths = np.asarray(_schedule_lengths(jax.random.key(j), dp, acts))
                lengths = lengths[lengths > MIN_FRAMES]
                row[part.name] = [round(float(lengths.mean()), 1) if lengths.size else 0.0,
                                  round(float(real.mean()), 1)]
            held = np.full((N, steps, 1), 1.0, np.float32)
            row["held_right"] = round(float(np.asarray(
                _schedule_lengths(jax.random.key(9), dp, held)).mean()), 1)
            patrol = np.broadcast_to(patrol_schedule(128, steps), (N, steps, 1))
            row["patrol128"] = round(float(np.asarray(
                _schedule_lengths(jax.random.key(8), dp, patrol)).mean()), 1)
            done = rd / "round.json"
            row["check"] = json.loads(done.read_text())["real_return"] if done.is_file() else None
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
