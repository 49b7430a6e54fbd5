"""Reopen the stopped seed-0 run (/tmp/dm/s0, rounds 0-1 finished) as a 2-round run
(/tmp/dm/s0r2): `doom-4-rounds/extend.py`'s `reopen` with `mdnrnn.steps = 2400` and
`iterate.rounds = 2`; the unfinished round 2 is dropped. Run from the repository root."""

import dataclasses
import importlib.util
import shutil
from pathlib import Path

from dreamjax.config import DOOM_PROFILES

_spec = importlib.util.spec_from_file_location(
    "extend_doom", Path(__file__).parent.parent / "doom-4-rounds" / "extend.py")
_doom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_doom)


def main() -> None:
    base = DOOM_PROFILES["laptop"]()
    cfg = dataclasses.replace(base, run_dir="/tmp/dm/s0r2", seed=0,
                              mdnrnn=dataclasses.replace(base.mdnrnn, steps=2400),
                              iterate=dataclasses.replace(base.iterate, rounds=2))
    _doom.reopen("/tmp/dm/s0", "/tmp/dm/s0r2", cfg)
    shutil.rmtree("/tmp/dm/s0r2/controller/iterative/round_02", ignore_errors=True)


if __name__ == "__main__":
    main()
