"""Reopen a finished iterative Doom run (a hard-linked copy) with more `--iterate.rounds`.

usage: python extend.py OLD_RUN NEW_RUN SEED ROUNDS

Hard-links OLD_RUN into NEW_RUN without its evaluate and report stages, and rewrites
stages.json so that the controller stage carries the fingerprint of today's `laptop` Doom
config with `seed = SEED` and `iterate.rounds = ROUNDS` and is not done. OLD_RUN's rounds are
kept: a round's keys, data and M depend only on the rounds before it, never on the number of
rounds, so the CLI (`--seed SEED --iterate.rounds ROUNDS`) then computes exactly what a fresh
run with ROUNDS rounds would: the rounds after OLD_RUN's last, the selection and the evaluation.
"""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from dreamjax.config import DOOM_PROFILES, ExperimentConfig
from dreamjax.pipeline.run import HOLDER_FILE, LOCK_FILE, fingerprints


def reopen(old: str, new: str, cfg: ExperimentConfig) -> None:
    """Hard-link OLD into NEW and mark NEW's controller stage not done under `cfg`'s
    fingerprint, keeping OLD's rounds up to `cfg.iterate.rounds`; OLD's earlier stages must
    carry `cfg`'s fingerprints."""
    subprocess.run(["cp", "-al", old, new], check=True)
    for f in (LOCK_FILE, HOLDER_FILE):  # a hard link would share OLD's lock while OLD runs
        (Path(new) / f).unlink(missing_ok=True)
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
    for d in it.glob("round_*"):  # rounds past `cfg`'s last: a round needs only earlier ones
        if int(d.name.removeprefix("round_")) >= cfg.iterate.rounds:
            shutil.rmtree(d)


def main() -> None:
    old, new, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    base = DOOM_PROFILES["laptop"]()  # with the 800-step M of these runs (session 26: 2400)
    reopen(old, new, dataclasses.replace(base, run_dir=new, seed=seed,
                                         mdnrnn=dataclasses.replace(base.mdnrnn, steps=800),
                                         iterate=dataclasses.replace(base.iterate,
                                                                     rounds=rounds)))


if __name__ == "__main__":
    main()
