"""Redo an iterative round's dream CMA-ES with another dream dropout or ES key; check in the game.

usage: python redo_round.py RUN_DIR ROUND DROPOUT KEY CHECKS OUT
Trains C in round ROUND's dream (the run's config from its run.json, the round's M and τ:
`../doom-more-gens-m2400/more_gens2.py`'s `open_round`) from the C the round started from
(zeros for round 0), for the round's own number of generations, with `--dream.dropout DROPOUT`
and ES key `jax.random.key(KEY)`; then plays CHECKS noise-free real episodes on that script's
training seeds (never the evaluation seeds) and appends a row to OUT/rows.jsonl.
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax import io
from dreamjax.es import train_controller_dream
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.iterate import _series_dirs, round_dir

_spec = importlib.util.spec_from_file_location(
    "more_gens2", Path(__file__).parent.parent / "doom-more-gens-m2400" / "more_gens2.py")
_mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mg)


def main() -> None:
    run_dir, r, p, k, checks, out = sys.argv[1:7]
    r, p, k, checks, out = int(r), float(p), int(k), int(checks), Path(out)
    cfg, run, wm = _mg.open_round(run_dir, r)
    cfg = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, dropout=p))
    row = io.read_json(round_dir(run, r) / "round.json")
    init = None
    if row["started_from"] is not None:
        init, _ = artifacts.load_controller_params(
            round_dir(run, row["started_from"]) / "dream" / "best.npz", wm.spec)
    name = f"r{r}_p{p}_k{k}"
    dp = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
    res = train_controller_dream(jax.random.key(k), dp, out / name / "dream", cfg.es,
                                 cfg.controller, generations=row["dream_generations"],
                                 init_params=init, progress=False)
    rets = _mg.check_returns(cfg, wm, res.params, out / name / "check", checks)
    rec = {"round": r, "dropout": p, "key": k, "tau": cfg.dream.temperature,
           "dream": res.best_return, "real_mean": float(np.mean(rets)),
           "real_std": float(np.std(rets)), "episodes": len(rets), "returns": rets}
    with open(out / "rows.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({key: v for key, v in rec.items() if key != "returns"}), flush=True)


if __name__ == "__main__":
    main()
