"""Hard-link a finished iterative CarRacing run keeping only round 0, under today's laptop
config with seed SEED and --iterate.action-offset X X X (rounds >= 1 recomputed)."""
import dataclasses
import importlib.util
import shutil
import sys
from pathlib import Path

from dreamjax.config import PROFILES

spec = importlib.util.spec_from_file_location(
    "extend_doom", Path(__file__).parent.parent / "doom-4-rounds" / "extend.py")
doom = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doom)
old, new, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
offset = tuple(float(x) for x in sys.argv[4:])
base = PROFILES["laptop"]()
doom.reopen(old, new, dataclasses.replace(
    base, run_dir=new, seed=seed,
    iterate=dataclasses.replace(base.iterate, action_offset=offset)))
for d in sorted((Path(new) / "controller/iterative").glob("round_*")):
    if d.name != "round_00":
        shutil.rmtree(d)
