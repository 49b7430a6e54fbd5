"""More dream CMA-ES generations on a finished iterative round's M, checked in the real game.

usage: python more_gens.py RUN_DIR SEED ROUND CHUNKS GENS CHECKS OUT
Continues round ROUND's C in round ROUND's dream for CHUNKS x GENS generations (each chunk
starts a fresh CMA-ES at the previous chunk's best mean), and plays CHECKS noise-free real
episodes on training seeds (a master seed no other part uses) with the round's C and each
chunk's C.
"""

import dataclasses
import json
import sys
import zlib
from pathlib import Path

import jax
import numpy as np

from dreamjax.config import DOOM_PROFILES
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.es import train_controller_dream
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.iterate import _record, _series_dirs, round_dir
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    run_dir, seed, r, chunks, gens, checks, out = sys.argv[1:8]
    seed, r, chunks, gens, checks = map(int, (seed, r, chunks, gens, checks))
    out = Path(out)
    cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), run_dir=run_dir, seed=seed)
    run = RunFolder(run_dir)
    vae = artifacts.load_vae(run)
    rd = round_dir(run, r)
    mdn = run.path("mdnrnn") if r == 0 else rd / "mdnrnn"
    wm = artifacts.load_world_model(run, cfg.controller, mdn, vae)
    dp = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
    params, _ = artifacts.load_controller_params(rd / "dream" / "best.npz", wm.spec)
    master = zlib.crc32(f"{seed}/more-gens/check".encode())
    rows = []

    def check(name, p):
        folder = out / name / "check"
        _record(cfg, DOOM, wm, p, folder, checks, master, 0.0)
        rets = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(folder)]
        rows.append({"name": name, "real_mean": float(np.mean(rets)),
                     "real_std": float(np.std(rets)), "episodes": len(rets)})
        print(json.dumps(rows[-1]), flush=True)

    check("start", params)
    for c in range(chunks):
        res = train_controller_dream(jax.random.key(1000 + c), dp, out / f"chunk{c}" / "dream",
                                     cfg.es, cfg.controller, generations=gens, init_params=params,
                                     progress=False)
        params = res.params
        print(f"chunk {c}: dream {res.best_return:.1f}", flush=True)
        check(f"chunk{c}", params)
        rows[-1]["dream"] = res.best_return
    (out / "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
