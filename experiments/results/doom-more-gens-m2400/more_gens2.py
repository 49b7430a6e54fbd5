"""More dream CMA-ES generations on a finished iterative round's M, at that round's τ.

usage: python more_gens2.py RUN_DIR ROUND CHUNKS GENS CHECKS OUT
Continues round ROUND's C in round ROUND's dream (the run's own config from its run.json, the
round's τ from its temperature.json) for CHUNKS x GENS generations, each chunk a fresh CMA-ES at
the previous chunk's best evaluated mean, and plays CHECKS noise-free real episodes on training
seeds (a master seed no other part uses; never the evaluation seeds) with the round's C and
with each chunk's C.
"""

import json
import sys
import zlib
from pathlib import Path

import jax
import numpy as np

from dreamjax import io
from dreamjax.agent_io import run_config
from dreamjax.config import with_temperature
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.es import train_controller_dream
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.iterate import _record, _series_dirs, round_dir
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    run_dir, r, chunks, gens, checks, out = sys.argv[1:7]
    r, chunks, gens, checks = map(int, (r, chunks, gens, checks))
    out = Path(out)
    cfg, _ = run_config(run_dir)
    run = RunFolder(run_dir)
    rd = round_dir(run, r)
    tau = io.read_json(rd / "temperature.json")["tau"]
    cfg = with_temperature(cfg, tau)
    vae = artifacts.load_vae(run)
    mdn = run.path("mdnrnn") if r == 0 else rd / "mdnrnn"
    wm = artifacts.load_world_model(run, cfg.controller, mdn, vae)
    dp = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
    params, _ = artifacts.load_controller_params(rd / "dream" / "best.npz", wm.spec)
    master = zlib.crc32(f"{cfg.seed}/more-gens/check".encode())
    rows = []

    def check(name, p):
        folder = out / name / "check"
        _record(cfg, DOOM, wm, p, folder, checks, master, 0.0)
        rets = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(folder)]
        rows.append({"name": name, "tau": tau, "real_mean": float(np.mean(rets)),
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
