"""Real-environment evaluation of a controller: fixed seeds, `results.json`, videos (PAPER.md §1.7).

The paper reports the mean and `np.std` of 100 episodes with the real env's own termination and
at most 1000 steps.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from dreamjax import io
from dreamjax.config import EvalConfig
from dreamjax.envs.pool import BatchPolicy, EnvPool, EpisodeResult, EpisodeSpec
from dreamjax.pipeline.viz import write_video

PACKAGES = (
    "dreamjax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "evosax",
    "gymnax",
    "gymnasium",
    "orbax-checkpoint",
    "numpy",
)


def environment_info() -> dict:
    """Package versions and machine description for provenance records."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
        },
    }


def eval_specs(cfg: EvalConfig) -> list[EpisodeSpec]:
    """The fixed evaluation episodes: env seed `seed_start + i` for i < episodes."""
    return [EpisodeSpec(seed=cfg.seed_start + i, tag=0) for i in range(cfg.episodes)]


def evaluate(
    pool: EnvPool,
    policy: BatchPolicy,
    cfg: EvalConfig,
    out_dir: str | Path,
    meta: dict | None = None,
) -> dict:
    """Run `cfg.episodes` real episodes, write `results.json` and best/worst MP4s in `out_dir`.

    `meta` (controller variant, checkpoint hashes, ...) is copied into the results.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = eval_specs(cfg)
    t0 = time.time()
    with tqdm(total=len(specs), desc="evaluate", unit="ep") as bar:

        def progress(r: EpisodeResult) -> None:
            bar.update(1)
            bar.set_postfix(last=f"{r.total_reward:.0f}")

        results = pool.run(specs, policy, progress=progress)
    wall = time.time() - t0
    returns = np.array([r.total_reward for r in results], dtype=np.float64)
    lengths = np.array([r.length for r in results], dtype=np.int64)
    out = {
        "episodes": len(results),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "median": float(np.median(returns)),
        "returns": returns.round(3).tolist(),
        "lengths": lengths.tolist(),
        "seeds": [r.spec.seed for r in results],
        "env_steps": int(lengths.sum()),
        "wall_s": round(wall, 1),
        "env_steps_per_s": round(float(lengths.sum()) / max(wall, 1e-9), 1),
        **(meta or {}),
        **environment_info(),
    }
    if cfg.videos:
        picks = {"best": int(returns.argmax()), "worst": int(returns.argmin())}
        replays = pool.run([specs[i] for i in picks.values()], policy, record=True)
        out["videos"] = {}
        for (name, i), rep in zip(picks.items(), replays, strict=True):
            path = write_video(rep.frames, out_dir / f"{name}.mp4")
            out["videos"][name] = {
                "file": path.name,
                "seed": specs[i].seed,
                "return": float(returns[i]),
                "replayed_return": float(rep.total_reward),
            }
    io.write_json(out_dir / "results.json", out)
    return out
