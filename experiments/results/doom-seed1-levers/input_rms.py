"""RMS of each of C's inputs [z, c, h] over a Doom run's data (M read teacher-forced, every 10th
step), and 1/rms saved as the initial CMA-ES steps of `balanced.patch`.

usage: python input_rms.py RUN_DIR OUT.npy
"""

import sys

import jax
import numpy as np

from dreamjax.config import DOOM_PROFILES
from dreamjax.data.episodes import list_episodes, load_series
from dreamjax.dream.starts import real_start_bank
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    run = RunFolder(sys.argv[1])
    wm = artifacts.load_world_model(run, DOOM_PROFILES["laptop"]().controller)
    series = [load_series(f) for f in list_episodes(run.path("encode"))]
    mu, lv, c, h = real_start_bank(jax.random.key(0), wm.mdn, wm.mdn_params, series)
    z = mu + np.exp(0.5 * lv) * np.random.default_rng(0).standard_normal(mu.shape)
    rms = []
    for name, x in (("z", z), ("c", c), ("h", h)):
        r = np.sqrt((x**2).mean(0))
        rms.append(r)
        print(f"{name}: mean norm {np.linalg.norm(x, axis=1).mean():.2f}, rms per coordinate "
              f"mean {r.mean():.3f} min {r.min():.3f} max {r.max():.3f}")
    np.save(sys.argv[2], (1.0 / np.concatenate(rms)).astype(np.float32))


if __name__ == "__main__":
    main()
