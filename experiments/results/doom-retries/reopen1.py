"""Reopen a Doom `laptop` run with `--iterate.retries 1` whose round 0 is finished as a 1-round
run: `dreamjax.pipeline.reopen`, what the `--reopen` flag does (round 1 and later are dropped: a
round depends only on the rounds before it). Round 0's row, its rejected attempts and their
folders are kept, so the CLI recomputes nothing and evaluates round 0's C. Run from the
repository root. (Session 29 ran this with `doom-4-rounds/extend.py`'s `reopen`; session 30
checked that this version gives the same pick, the same `best.npz` bytes.)

usage: python experiments/results/doom-retries/reopen1.py OLD_RUN NEW_RUN SEED
"""

import dataclasses
import sys

from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline.reopen import reopen


def main() -> None:
    old, new, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = DOOM_PROFILES["laptop"]()
    reopen(dataclasses.replace(
        base, run_dir=new, reopen=old, seed=seed,
        iterate=dataclasses.replace(base.iterate, rounds=1, retries=1)))


if __name__ == "__main__":
    main()
