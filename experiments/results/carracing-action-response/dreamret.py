"""Dream returns of controller files in a run's dream (128 episodes of 1000 steps).

    python dreamret.py RUN KIND DROPOUT TAU CTRL.npz...
"""

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from dreamjax.config import PROFILES
from dreamjax.dream.env import DreamEnv
from dreamjax.es.dream import make_mean_eval_fn
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder


def main():
    run, kind = RunFolder(sys.argv[1]), sys.argv[2]
    ctrl = dataclasses.replace(PROFILES["laptop"]().controller, kind=kind)
    wm = artifacts.load_world_model(run, ctrl)
    dp = artifacts.load_dream_params(run, wm, temperature=float(sys.argv[4]), max_steps=1000,
                                     dropout=float(sys.argv[3]))
    fn = make_mean_eval_fn(DreamEnv(), wm.spec.controller.apply, 128, 1000)
    for f in sys.argv[5:]:
        params, _ = artifacts.load_controller_params(Path(f), wm.spec)
        returns, lengths = jax.device_get(fn(jax.random.key(7), params, dp))
        pct = np.percentile(returns, [10, 50, 90]).round(0)
        print(f"{f}: dream {returns.mean():.1f} ± {returns.std():.1f}, percentiles 10/50/90 "
              f"{pct}, length {lengths.mean():.0f}")


if __name__ == "__main__":
    main()
