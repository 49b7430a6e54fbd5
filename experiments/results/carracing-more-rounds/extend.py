"""Reopen a finished iterative CarRacing run (a hard-linked copy) with more `--iterate.rounds`.

usage: python extend.py OLD_RUN NEW_RUN SEED ROUNDS

Hard-links OLD_RUN into NEW_RUN without its evaluate and report stages and marks the
controller stage not done under the fingerprint of today's `laptop` config with `seed = SEED`
and `iterate.rounds = ROUNDS` (`doom-4-rounds/extend.py`'s `reopen`). A round depends only on
the rounds before it, so the CLI (`--seed SEED --iterate.rounds ROUNDS`) then computes what a
fresh run with ROUNDS rounds would: the rounds after OLD_RUN's last, the selection, the
evaluation.
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
    old, new, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    base = PROFILES["laptop"]()
    _doom.reopen(old, new, dataclasses.replace(
        base, run_dir=new, seed=seed, iterate=dataclasses.replace(base.iterate, rounds=rounds)))


if __name__ == "__main__":
    main()
