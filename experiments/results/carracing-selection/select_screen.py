"""Every round's C of finished iterative CarRacing runs on N more training-seed episodes
(the same tracks for every round: a paired comparison), to see what a larger selection buys."""
import dataclasses
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from dreamjax.config import PROFILES
from dreamjax.data.episodes import list_episodes
from dreamjax.pipeline import artifacts, iterate
from dreamjax.pipeline.carracing import CARRACING
from dreamjax.pipeline.run import RunFolder


def main():
    out_root, n = Path(sys.argv[1]), int(sys.argv[2])
    rows = {}
    for arg in sys.argv[3:]:
        path, seed = arg.split(":")
        seed = int(seed)
        cfg = dataclasses.replace(PROFILES["laptop"](), seed=seed, run_dir=path)
        run = RunFolder(path)
        vae = artifacts.load_vae(run)
        done = json.loads((Path(path) / "controller/iterative/DONE.json").read_text())
        res = []
        for row in done["rounds"]:
            r = row["round"]
            wm = artifacts.load_world_model(run, cfg.controller, run.root / row["mdnrnn"], vae)
            params, _ = artifacts.load_controller_params(
                iterate.round_dir(run, r) / "dream" / "best.npz", wm.spec)
            folder = out_root / f"s{seed}" / f"r{r}"
            iterate._record(cfg, CARRACING, wm, params, folder, n,
                            zlib.crc32(f"{seed}/select".encode()), 0.0)
            ret = [float(np.load(f)["rewards"].sum()) for f in list_episodes(folder)]
            res.append({"round": r, "check": row["real_return"], "select_mean": float(np.mean(ret)),
                        "select_std": float(np.std(ret)), "returns": ret})
            print(f"seed {seed} round {r}: check {row['real_return']:.1f}, {n} more "
                  f"{np.mean(ret):.1f} ± {np.std(ret):.1f}", flush=True)
        rows[seed] = res
        (out_root / "select.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
