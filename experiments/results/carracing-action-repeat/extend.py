"""Reopen a finished iterative CarRacing run (a hard-linked copy) with more `--iterate.rounds`.

usage: python extend.py OLD_RUN NEW_RUN ROUNDS -- CARRACING_FLAGS...

CARRACING_FLAGS are the flags OLD_RUN was made with (its `--run-dir` is replaced by NEW_RUN).
Hard-links OLD_RUN into NEW_RUN without its evaluate and report stages and rewrites stages.json
so that the controller stage carries the fingerprint of those flags with `--iterate.rounds
ROUNDS` and is not done. OLD_RUN's rounds are kept: a round's keys, data and M depend only on
the rounds before it, never on the number of rounds, so `python -m
dreamjax.experiments.carracing CARRACING_FLAGS --run-dir NEW_RUN --iterate.rounds ROUNDS` then
computes exactly what a fresh run with ROUNDS rounds would (`reopen` of
`../doom-4-rounds/extend.py` does the work).
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

from dreamjax.config import DEFAULT_PROFILE, PROFILES
from dreamjax.experiments import cli


def _doom_extend():
    """`../doom-4-rounds/extend.py`, whose `reopen` does the work for either game."""
    path = Path(__file__).resolve().parent.parent / "doom-4-rounds" / "extend.py"
    spec = importlib.util.spec_from_file_location("doom_extend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    old, new, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flags = sys.argv[sys.argv.index("--") + 1:]
    cfg = cli.parse(PROFILES, flags, default=DEFAULT_PROFILE, prog="extend",
                    description="").config
    _doom_extend().reopen(old, new, dataclasses.replace(
        cfg, run_dir=new, iterate=dataclasses.replace(cfg.iterate, rounds=rounds)))


if __name__ == "__main__":
    main()
