"""Score every round's C of a finished iterative Doom run on the same extra training-seed
episodes (never the evaluation seeds), to see how well 16 checks per round rank the rounds.

usage: python score_rounds.py RUN_DIR OUT_DIR ROUND [ROUND ...]

Round r's C runs with round r's M (as the evaluation would run it) on `EPISODES` real episodes,
env seeds 3,000,000 + i (the same seeds for every round: a paired comparison; the evaluation
seeds start at 1,000,000 and the collection masters are crc32 hashes used as RNG seeds for
their own per-episode seeds). Writes OUT_DIR/round_<r>.json (`evaluate`'s results.json).
"""

import dataclasses
import sys
from pathlib import Path

from dreamjax.agent import WorldModelPolicy
from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import real_pool
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.evaluate import evaluate
from dreamjax.pipeline.iterate import _one, round_dir
from dreamjax.pipeline.run import RunFolder

EPISODES = 64
SEED_START = 3_000_000


def main() -> None:
    run_dir, out, rounds = sys.argv[1], Path(sys.argv[2]), [int(r) for r in sys.argv[3:]]
    cfg = DOOM_PROFILES["laptop"]()
    ev = dataclasses.replace(cfg.eval, episodes=EPISODES, seed_start=SEED_START, videos=False)
    run = RunFolder(run_dir)
    vae = artifacts.load_vae(run)
    for r in rounds:
        rd = round_dir(run, r)
        mdn = rd / "mdnrnn" if r > 0 else run.path("mdnrnn")
        wm = artifacts.load_world_model(run, cfg.controller, mdn, vae)
        params, _ = artifacts.load_controller_params(rd / "dream" / "best.npz", wm.spec)
        with real_pool(cfg, ev.max_steps, DOOM) as pool:
            res = evaluate(pool, WorldModelPolicy(wm, _one(params), seed=0), ev,
                           out / f"round_{r:02d}", meta={"run": run_dir, "round": r})
        (out / f"round_{r:02d}" / "results.json").rename(out / f"round_{r:02d}.json")
        (out / f"round_{r:02d}").rmdir()
        print(f"round {r}: {res['mean']:.1f} ± {res['std']:.1f} over {EPISODES}", flush=True)


if __name__ == "__main__":
    main()
