"""More dream CMA-ES generations on a finished iterative round's M, checked in the real game.

usage: python more_gens.py RUN_DIR SEED ROUND CHUNKS GENS CHECKS OUT
Continues round ROUND's C in round ROUND's dream for CHUNKS x GENS generations (each chunk
starts a fresh CMA-ES at the previous chunk's best mean), and plays CHECKS noise-free real
episodes on training seeds (a master seed no other part uses) with the round's C and each
chunk's C. Since session 27 the work is `../doom-more-gens-m2400/more_gens2.py`'s, which reads
the run's own config (this folder's run dreamt at its config's fixed τ 2.0, the profile's then);
SEED must be the run's.
"""

import importlib.util
import sys
from pathlib import Path

from dreamjax.agent_io import run_config

_spec = importlib.util.spec_from_file_location(
    "more_gens2", Path(__file__).parent.parent / "doom-more-gens-m2400" / "more_gens2.py")
_mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mg)


def main() -> None:
    run_dir, seed, r, chunks, gens, checks, out = sys.argv[1:8]
    if run_config(run_dir)[0].seed != int(seed):
        raise SystemExit(f"error: {run_dir}/run.json: the run's seed is not SEED {seed}")
    _mg.more_gens(run_dir, int(r), int(chunks), int(gens), int(checks), Path(out))


if __name__ == "__main__":
    main()
