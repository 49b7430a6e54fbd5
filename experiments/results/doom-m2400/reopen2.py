"""Reopen a Doom run of `--mdnrnn.steps 2400` whose rounds 0 and 1 are finished as a 2-round
run: `doom-4-rounds/extend.py`'s `reopen` with `mdnrnn.steps = 2400` and `iterate.rounds = 2`;
rounds 2 and later are dropped (a round depends only on the rounds before it). Run from the
repository root.

usage: python experiments/results/doom-m2400/reopen2.py OLD_RUN NEW_RUN SEED
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
    cfg = dataclasses.replace(base, run_dir=new, seed=seed,
                              mdnrnn=dataclasses.replace(base.mdnrnn, steps=2400),
                              iterate=dataclasses.replace(base.iterate, rounds=2))
    _doom.reopen(old, new, cfg)  # drops rounds 2 and later


if __name__ == "__main__":
    main()
