"""Reopen a finished iterative Doom run (a hard-linked copy) for more rounds.

usage: python extend.py RUN_DIR SEED ROUNDS
Rewrites stages.json so that the controller, evaluate and report stages carry the fingerprints
of the laptop config with `iterate.rounds = ROUNDS` and are not done; rerunning the CLI with
`--iterate.rounds ROUNDS` then reuses the finished rounds (their round.json) and runs the rest.
"""

import dataclasses
import json
import os
import sys

from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline.run import fingerprints


def main() -> None:
    run_dir, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    base = DOOM_PROFILES["laptop"]()
    cfg = dataclasses.replace(base, run_dir=run_dir, seed=seed,
                              iterate=dataclasses.replace(base.iterate, rounds=rounds))
    fps = fingerprints(cfg)
    path = os.path.join(run_dir, "stages.json")
    with open(path) as f:
        stages = json.load(f)
    for s in ("collect", "vae", "encode", "mdnrnn"):
        assert stages[s]["fingerprint"] == fps[s], s
    for s in ("controller", "evaluate", "report"):
        stages[s]["fingerprint"] = fps[s]
        stages[s]["done"] = False
    os.remove(path)
    with open(path, "w") as f:
        json.dump(stages, f, indent=1)
    os.remove(os.path.join(run_dir, "controller", "iterative", "DONE.json"))


if __name__ == "__main__":
    main()
