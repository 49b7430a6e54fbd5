"""The report's death-anticipation check on finished Doom run folders.

usage: python anticipation.py RUN_DIR [RUN_DIR ...]
"""

import dataclasses
import sys

from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import death_anticipation_check
from dreamjax.pipeline.run import RunFolder

if __name__ == "__main__":
    for path in sys.argv[1:]:
        cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), workers=2)
        wm = artifacts.load_world_model(RunFolder(path), cfg.controller)
        row = death_anticipation_check(cfg, wm)
        print(path, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
