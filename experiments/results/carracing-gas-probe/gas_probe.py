"""Does the picked C drive too slowly for the real game? Its gas output's bias (pre-tanh)
shifted by each DELTA, N real episodes each on training seeds (the selection tracks, never the
evaluation seeds), the same tracks for every DELTA (a paired comparison).

usage: python gas_probe.py RUN SEED ROUND OUT N DELTA [DELTA ...]
"""
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax.config import PROFILES
from dreamjax.data.episodes import list_episodes
from dreamjax.envs.carracing import to_env_action
from dreamjax.pipeline import artifacts, iterate
from dreamjax.pipeline.carracing import CARRACING
from dreamjax.pipeline.run import RunFolder

GAS = 1


def main() -> None:
    path, seed, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out, n = Path(sys.argv[4]), int(sys.argv[5])
    deltas = [float(d) for d in sys.argv[6:]]
    cfg = dataclasses.replace(PROFILES["laptop"](), seed=seed, run_dir=path)
    run = RunFolder(path)
    vae = artifacts.load_vae(run)
    done = json.loads((Path(path) / "controller/iterative/DONE.json").read_text())
    row = next(x for x in done["rounds"] if x["round"] == r)
    wm = artifacts.load_world_model(run, cfg.controller, run.root / row["mdnrnn"], vae)
    params, _ = artifacts.load_controller_params(
        iterate.round_dir(run, r) / "dream" / "best.npz", wm.spec)
    rows = []
    for delta in deltas:
        shifted = jax.tree_util.tree_map_with_path(
            lambda p, x: x.at[..., GAS].add(delta) if "bias" in jax.tree_util.keystr(p) else x,
            params)
        folder = out / f"delta_{delta:+.2f}"
        iterate._record(cfg, CARRACING, wm, shifted, folder, n, iterate.select_master(seed), 0.0)
        eps = [np.load(f) for f in list_episodes(folder)]
        ret = [float(e["rewards"].sum()) for e in eps]
        gas = float(np.mean([to_env_action(e["actions"])[:, GAS].mean() for e in eps]))
        rows.append({"delta": delta, "mean": float(np.mean(ret)), "std": float(np.std(ret)),
                     "env_gas": gas, "returns": ret})
        print(f"delta {delta:+.2f}: {np.mean(ret):.1f} ± {np.std(ret):.1f}, env gas {gas:.2f}",
              flush=True)
        (out / "gas_probe.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
