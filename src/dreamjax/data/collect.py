"""Episode collection in the real env (PAPER.md §1.2): resumable, self-repairing, and independent
of the number of workers.

Episode i of a master seed always has env seed `episode_seed(master, i)` and policy stream
(master, i) (`dreamjax.data.policies`), so its content depends only on (master seed, i, policy,
max_steps, env), never on which worker or slot ran it or on what ran beside it. With a minimum
length (`min_frames`, Doom's "more than 100 frames", PAPER.md §2.2), episode i is the first of
its tries k = 0, 1, ... (env seed `episode_seed(master, i, k)`, tag `collection_tag(i, k)`) that
lasts more than `min_frames` steps: still a function of (master seed, i), whatever ran where.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from dreamjax import io
from dreamjax.config import CollectConfig
from dreamjax.data.episodes import (
    FRAME_SHAPE,
    EpisodeError,
    episode_index,
    episode_path,
    list_episodes,
    load_episode,
    save_episode,
)
from dreamjax.data.policies import POLICIES, collection_tag, episode_seed, split_tag
from dreamjax.envs.pool import EnvPool
from dreamjax.envs.protocol import BatchPolicy, EnvInfo, EpisodeResult, EpisodeSpec, probe_env
from dreamjax.errors import ConfigError

COLLECT_MANIFEST = "collect.json"
MAX_ATTEMPTS = 100
"""Tries of one episode index before collection gives up on `min_frames` (one-line error)."""


def _master_seed(key_or_seed) -> int:
    """An int seed from an int or a JAX PRNG key (typed or raw uint32)."""
    if isinstance(key_or_seed, int | np.integer):
        return int(key_or_seed)
    data = key_or_seed
    if jax.dtypes.issubdtype(getattr(data, "dtype", None), jax.dtypes.prng_key):
        data = jax.random.key_data(data)
    words = np.asarray(data, dtype=np.uint32).ravel()
    return int(np.random.SeedSequence(words.tolist()).generate_state(1)[0])


def _check_env(info: EnvInfo, cfg: CollectConfig, action_dim: int | None) -> None:
    """Refuse an env whose spaces the episode format cannot store, whose action size is not the
    policy's `action_dim` (None: not known) or whose time limit is not `cfg.max_steps`."""
    if (info.observation_shape, info.observation_dtype) != (FRAME_SHAPE, "|u1") or \
            len(info.action_shape) != 1 or info.action_dtype != "<f4":
        raise ConfigError(
            f"collect: env {info.env_id} has observations {info.observation_shape} "
            f"{info.observation_dtype} and actions {info.action_shape} {info.action_dtype}; "
            f"episodes store {FRAME_SHAPE} uint8 frames and (A,) float32 actions")
    if action_dim is not None and info.action_shape != (action_dim,):
        raise ConfigError(
            f"--collect.policy {cfg.policy} acts with {action_dim} actions, but env "
            f"{info.env_id} takes {info.action_shape[0]}; choose a policy of this game")
    if info.max_episode_steps != cfg.max_steps:
        raise ConfigError(
            f"--collect.max_steps={cfg.max_steps}, but env_fn's {info.env_id} ends episodes at "
            f"{info.max_episode_steps} steps; build it with max_episode_steps={cfg.max_steps}")


def _problem(path: Path, i: int, master: int, cfg: CollectConfig, min_frames: int) -> str | None:
    """Why the existing file `path` of episode `i` is not what collect writes there, or None."""
    try:
        ep = load_episode(path)
    except EpisodeError as e:
        return str(e)
    k = ep["attempt"]
    if ep["seed"] != episode_seed(master, i, k):
        return (f"{path}: seed {ep['seed']} is not try {k} of episode {i} (seed "
                f"{episode_seed(master, i, k)})")
    if ep["policy"] != cfg.policy:
        return f"{path}: policy {ep['policy']!r} is not {cfg.policy!r}"
    ended = ep["terminated"] | ep["truncated"]  # (T,)
    if not ended[-1] or ended[:-1].any() or len(ended) > cfg.max_steps:
        return (f"{path}: cut short or overlong ({len(ended)} steps, no end flag exactly at the "
                "last one)")
    if len(ended) <= min_frames:
        return f"{path}: {len(ended)} steps, not more than min_frames={min_frames}"
    return None


def damaged_episodes(key_or_seed, episodes_dir: str | os.PathLike,
                     cfg: CollectConfig, *, min_frames: int = 0) -> dict[int, str]:
    """The episodes `collect` would (re)record in `episodes_dir`, by index, each with a one-line
    reason: every index < `cfg.episodes` without a file, and every file (any index) that is
    corrupt, truncated, cut short, not longer than `min_frames` steps or not episode i of this
    master seed and policy. Reads every file (about 0.15 ms a frame on a 2-core CPU)."""
    master = _master_seed(key_or_seed)
    folder = Path(episodes_dir)
    files = list_episodes(folder) if folder.is_dir() else []
    out = {i: f"{episode_path(folder, i)}: missing" for i in range(cfg.episodes)}
    for path in files:
        i = episode_index(path)
        out.pop(i, None)
        why = _problem(path, i, master, cfg, min_frames)
        if why is not None:
            out[i] = why
    return dict(sorted(out.items()))


def collect(key_or_seed, episodes_dir: str | os.PathLike, cfg: CollectConfig, *,
            env_fn: Callable[[], Any], workers: int = 0,
            policy_factory: Callable[[int, int], BatchPolicy] | None = None,
            step_timeout: float = 60.0, progress: bool = True, min_frames: int = 0,
            pool_factory: Callable[[Callable[[], Any], int], Any] | None = None) -> dict:
    """Record `cfg.episodes` episodes in the env `env_fn()` builds (PAPER.md §1.2); resumable.

    `env_fn` (picklable; e.g. `functools.partial(dreamjax.envs.carracing.make_env, fast=True,
    max_episode_steps=cfg.max_steps)`) must give (64, 64, 3) uint8 observations, (A,) float32
    actions (A: the policy's `action_dim`) and a time limit of `cfg.max_steps`.
    `policy_factory(master_seed, num_slots)` builds the `BatchPolicy` (default: the configured
    random policy `POLICIES[cfg.policy]`); it must act on each slot from the episode's (master
    seed, `spec.tag`) alone.

    `min_frames` > 0 keeps an episode only if it lasts more than `min_frames` steps (Doom's
    data, PAPER.md §2.2): a shorter try of index i is discarded and index i is tried again with
    the next try's seed and tag (module docstring), at most `MAX_ATTEMPTS` times.

    Each episode is written atomically as `ep_{i:06d}.npz` when it finishes. A rerun (after a
    kill, or with a larger `cfg.episodes`) first verifies every existing episode file and then
    records the missing indices and the corrupt, truncated or foreign files (one stderr line
    each), each with its own seed. `collect.json` pins the master seed, policy, max_steps, the
    env's id (and `min_frames` when > 0); a rerun with different ones is refused.

    Episodes run for `cfg.max_steps` steps unless the env terminates first (leaving the track or
    finishing the lap); unlike the reference code, which forces `done = False` so every episode is
    exactly 1000 frames (PAPER.md §1.1), termination is recorded honestly in `terminated`.

    `pool_factory(env_fn, num_workers)` builds the pool instead of the local one-env-per-worker
    `EnvPool` (e.g. a `dreamjax.envs.ray_pool.RayEnvPool`).

    Returns {"episodes", "new_episodes", "replaced", "new_frames", "discarded",
    "discarded_frames", "seconds", "episodes_per_s", "frames_per_s"} (frames_per_s counts the
    discarded tries' steps too: it is the env's throughput).
    """
    if policy_factory is None:
        if cfg.policy not in POLICIES:
            raise ConfigError(f"--collect.policy: unknown policy {cfg.policy!r}; "
                              f"choose one of {sorted(POLICIES)}")
        policy_factory = POLICIES[cfg.policy]
    if cfg.episodes < 0 or cfg.max_steps < 1 or min_frames < 0:
        raise ConfigError(f"--collect: need episodes >= 0, max_steps >= 1 and min_frames >= 0, "
                          f"got {cfg.episodes}, {cfg.max_steps} and {min_frames}")
    if min_frames >= cfg.max_steps:
        raise ConfigError(f"--collect.max-steps={cfg.max_steps} must exceed min_frames="
                          f"{min_frames}: no episode could be kept")
    master = _master_seed(key_or_seed)
    info = probe_env(env_fn)
    _check_env(info, cfg, getattr(policy_factory, "action_dim", None))
    folder = Path(episodes_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"master_seed": master, "policy": cfg.policy, "max_steps": cfg.max_steps,
                "env": info.env_id}
    if min_frames:
        manifest["min_frames"] = min_frames
    mpath = folder / COLLECT_MANIFEST
    if mpath.exists():
        old = io.read_json(mpath)
        if old != manifest:
            raise ConfigError(f"{mpath}: folder was collected with {old}, not {manifest}; "
                              "use another folder")
    else:
        io.write_json(mpath, manifest, indent=1)
    io.remove_stale_tmp(folder)
    damaged = damaged_episodes(master, folder, cfg, min_frames=min_frames)
    broken = [i for i in damaged if episode_path(folder, i).exists()]
    for i in broken:
        print(f"[dreamjax] collect: {damaged[i]}; re-collecting episode {i} with its seed "
              f"{episode_seed(master, i)}", file=sys.stderr)
    todo = list(damaged)
    intact = len(list_episodes(folder)) - len(broken)
    t0 = time.monotonic()
    frames = discarded = discarded_frames = 0
    if todo:
        pending = dict.fromkeys(todo, 0)  # index -> its next try
        n_workers = min(workers or (os.cpu_count() or 1), len(todo))
        bar = tqdm(total=intact + len(todo), initial=intact, unit="ep", desc="collect",
                   disable=not progress, dynamic_ncols=True)

        def write(res: EpisodeResult) -> None:
            nonlocal frames, discarded, discarded_frames
            i, k = split_tag(res.spec.tag)
            if res.length <= min_frames:
                discarded += 1
                discarded_frames += res.length
                pending[i] = k + 1
            else:
                save_episode(episode_path(folder, i), {
                    "frames": res.obs, "actions": res.actions, "rewards": res.rewards,
                    "terminated": res.terminated, "truncated": res.truncated,
                    "seed": res.spec.seed, "policy": cfg.policy, "attempt": k})
                frames += res.length
                del pending[i]
                bar.update(1)
            res.obs = res.actions = res.rewards = res.terminated = res.truncated = None
            dt = max(time.monotonic() - t0, 1e-9)
            bar.set_postfix(frames_per_s=f"{(frames + discarded_frames) / dt:.0f}")

        try:
            pool_cm = (EnvPool(env_fn, num_workers=n_workers, envs_per_worker=1,
                               step_timeout=step_timeout) if pool_factory is None
                       else pool_factory(env_fn, n_workers))
            with pool_cm as pool:
                policy = policy_factory(master, pool.num_slots)
                while pending:
                    over = [i for i, k in pending.items() if k >= MAX_ATTEMPTS]
                    if over:
                        raise ConfigError(
                            f"collect: episode {over[0]} lasted at most {min_frames} steps in "
                            f"{MAX_ATTEMPTS} tries; min_frames={min_frames} is out of reach "
                            f"for policy {cfg.policy!r} in {info.env_id}")
                    specs = [EpisodeSpec(seed=episode_seed(master, i, k),
                                         tag=collection_tag(i, k)) for i, k in pending.items()]
                    pool.run(specs, policy, steps=True, progress=write)
        finally:
            bar.close()
    dt = time.monotonic() - t0
    return {"episodes": cfg.episodes, "new_episodes": len(todo), "replaced": len(broken),
            "new_frames": frames, "discarded": discarded, "discarded_frames": discarded_frames,
            "seconds": dt,
            "episodes_per_s": len(todo) / dt if dt > 0 else 0.0,
            "frames_per_s": (frames + discarded_frames) / dt if dt > 0 else 0.0}
