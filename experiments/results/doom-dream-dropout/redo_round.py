"""Redo an iterative round's dream CMA-ES with another dream dropout or ES key; check in the game.

usage: python redo_round.py RUN_DIR ROUND DROPOUT KEY CHECKS OUT
Trains C in round ROUND's dream (the run's config from its run.json, the round's M and τ) from
the C the round started from (zeros for round 0), for the round's own number of generations,
with `--dream.dropout DROPOUT` and ES key `jax.random.key(KEY)`; then plays CHECKS noise-free
real episodes on training seeds (a master seed no other part uses; never the evaluation seeds)
and appends a row to OUT/rows.jsonl. KEY = -1 replays the round's own C (no training).
"""

import dataclasses
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
    run_dir, r, p, k, checks, out = sys.argv[1:7]
    r, p, k, checks, out = int(r), float(p), int(k), int(checks), Path(out)
    cfg, _ = run_config(run_dir)
    run = RunFolder(run_dir)
    rd = round_dir(run, r)
    row = io.read_json(rd / "round.json")
    tau = io.read_json(rd / "temperature.json")["tau"]
    cfg = with_temperature(cfg, tau)
    cfg = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, dropout=p))
    vae = artifacts.load_vae(run)
    wm = artifacts.load_world_model(run, cfg.controller, run.root / row["mdnrnn"], vae)
    name = f"r{r}_p{p}_k{k}"
    if k < 0:
        params, _ = artifacts.load_controller_params(rd / "dream" / "best.npz", wm.spec)
        dream = row["dream_return"]
    else:
        init = None
        if row["started_from"] is not None:
            init, _ = artifacts.load_controller_params(
                round_dir(run, row["started_from"]) / "dream" / "best.npz", wm.spec)
        dp = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
        res = train_controller_dream(jax.random.key(k), dp, out / name / "dream", cfg.es,
                                     cfg.controller, generations=row["dream_generations"],
                                     init_params=init, progress=False)
        params, dream = res.params, res.best_return
    master = zlib.crc32(f"{cfg.seed}/more-gens/check".encode())
    folder = out / name / "check"
    _record(cfg, DOOM, wm, params, folder, checks, master, 0.0)
    rets = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(folder)]
    rec = {"round": r, "dropout": p, "key": k, "tau": tau, "dream": dream,
           "real_mean": float(np.mean(rets)), "real_std": float(np.std(rets)),
           "episodes": len(rets), "returns": rets}
    with open(out / "rows.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({k_: v for k_, v in rec.items() if k_ != "returns"}), flush=True)


if __name__ == "__main__":
    main()
