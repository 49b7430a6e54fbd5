"""Reopen a finished iterative CarRacing run (a hard-linked copy) with more `--iterate.rounds`.

usage: python extend.py OLD_RUN NEW_RUN ROUNDS -- CARRACING_FLAGS...

CARRACING_FLAGS are the flags OLD_RUN was made with (its `--run-dir` is replaced by NEW_RUN).
Hard-links OLD_RUN into NEW_RUN without its evaluate and report stages and rewrites stages.json
so that the controller stage carries the fingerprint of those flags with `--iterate.rounds
ROUNDS` and is not done. OLD_RUN's rounds are kept: a round's keys, data and M depend only on
the rounds before it, never on the number of rounds, so `python -m
dreamjax.experiments.carracing CARRACING_FLAGS --run-dir NEW_RUN --iterate.rounds ROUNDS` then
computes exactly what a fresh run with ROUNDS rounds would (as `../doom-4-rounds/extend.py`).
"""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from dreamjax.config import DEFAULT_PROFILE, PROFILES
from dreamjax.experiments import cli
from dreamjax.pipeline.run import fingerprints


def main() -> None:
    old, new, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flags = sys.argv[sys.argv.index("--") + 1:]
    cfg = cli.parse(PROFILES, flags, default=DEFAULT_PROFILE, prog="extend",
                    description="").config
    cfg = dataclasses.replace(cfg, run_dir=new,
                              iterate=dataclasses.replace(cfg.iterate, rounds=rounds))
    subprocess.run(["cp", "-al", old, new], check=True)
    for stage in ("evaluate", "report"):
        shutil.rmtree(Path(new) / stage, ignore_errors=True)
    for f in ("report.md", "results.json"):
        (Path(new) / f).unlink(missing_ok=True)
    fps = fingerprints(cfg)
    path = Path(new) / "stages.json"
    stages = json.loads(path.read_text())
    for s in ("collect", "vae", "encode", "mdnrnn"):
        assert stages[s]["fingerprint"] == fps[s], s
    stages["controller"] = {"fingerprint": fps["controller"], "done": False}
    for s in ("evaluate", "report"):
        stages.pop(s, None)
    path.unlink()
    path.write_text(json.dumps(stages, indent=1))
    it = Path(new) / "controller" / "iterative"
    for f in ("DONE.json", "best.npz"):
        (it / f).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
