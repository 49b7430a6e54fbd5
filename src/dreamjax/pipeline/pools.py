"""The real-env pool of `--backend`: local worker processes (`dreamjax.envs.pool.EnvPool`) or
Ray actors (`dreamjax.envs.ray_pool.RayEnvPool`, which imports Ray only when it is built)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dreamjax.config import ExperimentConfig
from dreamjax.envs.pool import EnvPool
from dreamjax.envs.ray_pool import RayEnvPool


def make_pool(cfg: ExperimentConfig, env_fn: Callable[[], Any], workers: int | None = None,
              envs_per_worker: int | None = None) -> EnvPool | RayEnvPool:
    """A pool of `--backend` over `env_fn`: local worker processes or Ray actors; `workers` and
    `envs_per_worker` override the config's."""
    per = cfg.envs_per_worker if envs_per_worker is None else envs_per_worker
    if cfg.backend == "ray":
        pool = RayEnvPool(env_fn, num_actors=cfg.workers if workers is None else workers,
                          envs_per_actor=per, address=cfg.ray_address)
        print(f"[dreamjax] Ray: {pool.num_actors} actors x {per} envs on "
              f"{len(set(pool.nodes()))} node(s)", flush=True)
        return pool
    return EnvPool(env_fn, num_workers=cfg.num_workers if workers is None else workers,
                   envs_per_worker=per)


def collect_pool_factory(cfg: ExperimentConfig) -> Callable[..., Any] | None:
    """`collect`'s pool for `--backend ray` (None: its local pool)."""
    if cfg.backend != "ray":
        return None
    return functools.partial(make_pool, cfg, envs_per_worker=1)
