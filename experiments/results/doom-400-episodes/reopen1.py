"""Reopen a Doom run of `--collect.episodes 400 --vae.epochs 2` whose round 0 is finished as a
1-round run (`doom-4-rounds/extend.py`'s `reopen` with `iterate.rounds = 1`; round 1 and later
are dropped: a round depends only on the rounds before it), with `iterate.retries = RETRIES`.
With RETRIES > 0 round 0's row is removed too, so that the CLI re-decides the round: its dream
CMA-ES and checks are finished files (nothing recomputed), and a C whose checks fall below the
data policy's real return is set aside and trained again with a new key. Run from the
repository root.

usage: python experiments/results/doom-400-episodes/reopen1.py OLD_RUN NEW_RUN SEED RETRIES
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
    old, new, seed, retries = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    base = DOOM_PROFILES["laptop"]()
    cfg = dataclasses.replace(
        base, run_dir=new, seed=seed,
        collect=dataclasses.replace(base.collect, episodes=400),
        vae=dataclasses.replace(base.vae, epochs=2.0),
        iterate=dataclasses.replace(base.iterate, rounds=1, retries=retries))
    _doom.reopen(old, new, cfg)
    if retries:
        (Path(new) / "controller" / "iterative" / "round_00" / "round.json").unlink()


if __name__ == "__main__":
    main()
