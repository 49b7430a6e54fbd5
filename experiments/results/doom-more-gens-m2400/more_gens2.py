"""More dream CMA-ES generations on a finished iterative round's M, at that round's τ.

usage: python more_gens2.py RUN_DIR ROUND CHUNKS GENS CHECKS OUT
Continues round ROUND's C in round ROUND's dream (the run's own config from its run.json, the
round's τ from its temperature.json) for CHUNKS x GENS generations, each chunk a fresh CMA-ES at
the previous chunk's best evaluated mean, and plays CHECKS noise-free real episodes on training
seeds (a master seed no other part uses; never the evaluation seeds) with the round's C and
with each chunk's C. `open_round` and `check_returns` also serve
`../doom-dream-dropout/redo_round.py` and `../doom-more-gens-seed1/more_gens.py`.
"""

import json
import sys
import zlib
from pathlib import Path

import jax
import numpy as np

from dreamjax import io
from dreamjax.agent import WorldModel
from dreamjax.agent_io import run_config
from dreamjax.config import ExperimentConfig, with_temperature
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.es import train_controller_dream
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.iterate import _record, _series_dirs, round_dir
from dreamjax.pipeline.run import RunFolder


def open_round(run_dir: str, r: int) -> tuple[ExperimentConfig, RunFolder, WorldModel]:
    """The run's own config (its run.json) at round r's τ (its temperature.json; a round
    without one dreamt at the config's τ), the run folder and round r's world model."""
    cfg, _ = run_config(run_dir)
    run = RunFolder(run_dir)
    rd = round_dir(run, r)
    if (rd / "temperature.json").is_file():
        cfg = with_temperature(cfg, io.read_json(rd / "temperature.json")["tau"])
    mdn = run.path("mdnrnn") if r == 0 else rd / "mdnrnn"
    return cfg, run, artifacts.load_world_model(run, cfg.controller, mdn, artifacts.load_vae(run))


def check_returns(cfg: ExperimentConfig, wm: WorldModel, params, folder: Path,
                  n: int) -> list[float]:
    """The returns of n noise-free real episodes of C recorded in `folder` (resumable), on the
    training seeds of master crc32("<seed>/more-gens/check"), never the evaluation seeds."""
    _record(cfg, DOOM, wm, params, folder, n, zlib.crc32(f"{cfg.seed}/more-gens/check".encode()),
            0.0)
    return [float(load_episode(f)["rewards"].sum()) for f in list_episodes(folder)]


def more_gens(run_dir: str, r: int, chunks: int, gens: int, checks: int, out: Path) -> None:
    """The module docstring's run; rows to OUT/rows.json after every chunk."""
    cfg, run, wm = open_round(run_dir, r)
    tau = cfg.dream.temperature
    dp = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
    params, _ = artifacts.load_controller_params(round_dir(run, r) / "dream" / "best.npz",
                                                 wm.spec)
    rows = []

    def check(name, p):
        rets = check_returns(cfg, wm, p, out / name / "check", checks)
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


def main() -> None:
    run_dir, r, chunks, gens, checks, out = sys.argv[1:7]
    more_gens(run_dir, int(r), int(chunks), int(gens), int(checks), Path(out))


if __name__ == "__main__":
    main()
