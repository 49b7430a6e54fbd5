"""The report's calibration (with the held-button probes) of a Doom run folder at several τ.

usage: python probes.py RUN_DIR TAU [TAU ...]
"""

import dataclasses
import json
import sys
from pathlib import Path

from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import survival_calibration
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    run = RunFolder(sys.argv[1])
    saved = json.loads((Path(sys.argv[1]) / "run.json").read_text())["config"]
    cfg = DOOM_PROFILES["laptop"]()
    cfg = dataclasses.replace(cfg, seed=saved["seed"], collect=dataclasses.replace(
        cfg.collect, policy=saved["collect"]["policy"]))
    wm = artifacts.load_world_model(run, cfg.controller)
    for tau in map(float, sys.argv[2:]):
        c = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=tau))
        cal = survival_calibration(c, run, artifacts.config_dream_params(c, run, wm))
        held = [(h["button"], round(h["dream_mean"]), round(h["real_mean"])) for h in cal["held"]]
        print(sys.argv[1], "tau", tau, "data", round(cal["dream_mean"]), round(cal["real_mean"]),
              "held (button, dream, game)", held, flush=True)


if __name__ == "__main__":
    main()
