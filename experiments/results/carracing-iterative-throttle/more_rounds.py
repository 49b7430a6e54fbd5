"""Extend a finished --train-in iterative CarRacing run: rounds R0..R1-1 with the same settings.
usage: more_rounds.py R0 R1 -- <the run's carracing flags>"""
import json
import sys

import jax

from dreamjax.config import DEFAULT_PROFILE, PROFILES
from dreamjax.experiments import cli
from dreamjax.pipeline import artifacts, iterate
from dreamjax.pipeline.carracing import CARRACING, stage_key
from dreamjax.pipeline.run import RunFolder

if __name__ == "__main__":
    r0, r1 = int(sys.argv[1]), int(sys.argv[2])
    cfg = cli.parse(PROFILES, sys.argv[4:], default=DEFAULT_PROFILE, prog="more_rounds",
                    description="").config
    run = RunFolder(cfg.run_dir)
    key = stage_key(cfg, "controller")
    vae = artifacts.load_vae(run)
    prev = json.loads((iterate.round_dir(run, r0 - 1) / "round.json").read_text())
    for r in range(r0, r1):
        prev = iterate.run_round(cfg, run, CARRACING, r, prev, vae, jax.random.fold_in(key, r))
