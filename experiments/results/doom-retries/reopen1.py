"""Reopen a Doom `laptop` run with `--iterate.retries 1` whose round 0 is finished as a 1-round
run (`doom-4-rounds/extend.py`'s `reopen` with `iterate.rounds = 1`; round 1 and later are
dropped: a round depends only on the rounds before it). Round 0's row, its rejected attempts
and their folders are kept, so the CLI recomputes nothing and evaluates round 0's C. Run from
the repository root.

usage: python experiments/results/doom-retries/reopen1.py OLD_RUN NEW_RUN SEED
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

from dreamjax.config import DOOM_PROFILES

_spec = importlib.util.spec_from_file_location(
    "extend_doom", Path(__file__).parent.parent / "doom-4-rounds" / "extend.py")
_doom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_doom)


def main() -> None:
    old, new, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = DOOM_PROFILES["laptop"]()
    _doom.reopen(old, new, dataclasses.replace(
        base, run_dir=new, seed=seed,
        iterate=dataclasses.replace(base.iterate, rounds=1, retries=1)))


if __name__ == "__main__":
    main()
