"""Reopen a finished 8-round `laptop` CarRacing run (a hard-linked copy) with
`--iterate.select-episodes N`.

usage: python reselect.py OLD_RUN NEW_RUN SEED N

Hard-links OLD_RUN into NEW_RUN without its evaluate and report stages, marks the controller
stage not done under the fingerprint of today's `laptop` config with `seed = SEED` and
`iterate.select_episodes = N` (`../doom-4-rounds/extend.py`'s `reopen`) and removes every
round's row (`round.json`). Selection episodes are not data, so no round's data, M, dream or
checks change: the CLI (`--seed SEED --iterate.select-episodes N`) finds them finished (their
files and checkpoints), records each round's N selection episodes, rewrites the rows, picks and
evaluates, which is what a fresh run with N selection episodes computes.
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

from dreamjax.config import PROFILES

_spec = importlib.util.spec_from_file_location(
    "extend_doom", Path(__file__).parent.parent / "doom-4-rounds" / "extend.py")
_doom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_doom)


def main() -> None:
    old, new, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    base = PROFILES["laptop"]()
    _doom.reopen(old, new, dataclasses.replace(
        base, run_dir=new, seed=seed,
        iterate=dataclasses.replace(base.iterate, select_episodes=n)))
    for f in (Path(new) / "controller" / "iterative").glob("round_*/round.json"):
        f.unlink()


if __name__ == "__main__":
    main()
