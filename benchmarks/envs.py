"""CarRacing-v3 steps/s: stock gymnasium vs dreamjax's byte-identical FastCarRacing.

Run: python benchmarks/envs.py [--steps 2000] [--repeats 3] [--pool-steps 2000]

Single process: both envs step the same random-ish actions (resetting on episode end), measured
in the same run, interleaved in chunks so machine load affects both alike. The best of
`--repeats` rounds is reported. The worker-pool section (2 workers, `dreamjax.envs.pool`, the
agent's view of the env: `make_env`) is separate; `--pool-steps 0` skips it.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from dreamjax.envs.carracing import make_env, make_raw_env
from dreamjax.envs.pool import EnvPool, EpisodeSpec


def smooth_actions(seed: int, n: int) -> np.ndarray:
    """(n, 3) env actions: slowly varying steering and gas, occasional braking."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    steer = np.tanh(1.5 * np.sin(t / 37.0 + phase[0]) + 0.3 * rng.standard_normal(n))
    gas = 0.5 + 0.5 * np.sin(t / 53.0 + phase[1])
    brake = np.where(np.sin(t / 71.0 + phase[2]) > 0.9, 0.8, 0.0)
    return np.stack([steer, gas, brake], axis=-1).astype(np.float32)


def time_steps(env, actions: np.ndarray, next_seed) -> tuple[float, float]:
    """(wall, process CPU) seconds to step `env` through `actions`, resetting on episode end."""
    start, cpu = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset(seed=next_seed())
    return time.perf_counter() - start, time.process_time() - cpu


def single_process(
    steps: int, repeats: int, chunk: int = 250
) -> tuple[dict[str, tuple[float, float]], tuple[int, int]]:
    """Best-of-`repeats` (wall, CPU) steps/s of stock and fast envs, interleaved in chunks, and
    the fast env's (fast-path, stock-fallback) frame counts.

    Each env runs episodes back to back (TimeLimit 1000), so episode starts (whose zoom-in
    frames show the whole track and render slower) weigh as in real use.
    """
    envs = {"stock": make_raw_env(fast=False), "fast": make_raw_env(fast=True)}
    seeds = {k: iter(range(10**6)) for k in envs}
    for name, env in envs.items():
        env.reset(seed=next(seeds[name]))
    best = {k: (0.0, 0.0) for k in envs}
    for r in range(repeats):
        total = {k: np.zeros(2) for k in envs}
        all_acts = smooth_actions(r, steps)
        for c in range(0, steps, chunk):
            acts = all_acts[c : c + chunk]
            for name, env in envs.items():
                total[name] += time_steps(env, acts, seeds[name].__next__)
        for name in envs:
            wall, cpu = steps / total[name]
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    fast = envs["fast"].unwrapped
    frames = (fast.fast_frames, fast.stock_frames)
    for env in envs.values():
        env.close()
    return best, frames


class _ReplayPolicy:
    """BatchPolicy that replays smooth actions per slot (in [-1, 1] raw controller space)."""

    def __init__(self, num_slots: int, max_steps: int):
        self.acts = [np.zeros((max_steps, 3), np.float32) for _ in range(num_slots)]
        self.t = np.zeros(num_slots, dtype=np.int64)

    def reset(self, slot: int, spec) -> None:
        env_a = smooth_actions(spec.seed, len(self.acts[slot]))
        raw = env_a.copy()
        raw[:, 1] = 2.0 * env_a[:, 1] - 1.0  # inverse of to_env_action's gas map
        self.acts[slot] = raw
        self.t[slot] = 0

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        out = np.zeros((len(active), 3), np.float32)
        for s in np.flatnonzero(active):
            out[s] = self.acts[s][min(self.t[s], len(self.acts[s]) - 1)]
            self.t[s] += 1
        return out


def worker_pool(steps: int, workers: int = 2) -> dict[str, float]:
    """Steps/s through `dreamjax.envs.pool.EnvPool` with `workers` workers, stock and fast."""
    episode_len = 500
    n_episodes = max(workers, steps // episode_len)
    specs = [EpisodeSpec(seed=i) for i in range(n_episodes)]
    out = {}
    for name, fast in (("stock", False), ("fast", True)):
        env_fn = functools.partial(make_env, fast=fast, max_episode_steps=episode_len)
        with EnvPool(env_fn, num_workers=workers) as pool:
            policy = _ReplayPolicy(pool.num_slots, episode_len)
            pool.run(specs[:workers], policy)  # warm-up: workers started, imports done
            start = time.perf_counter()
            results = pool.run(specs, policy)
            seconds = time.perf_counter() - start
        out[name] = sum(r.length for r in results) / seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool-steps", type=int, default=2000)
    args = parser.parse_args()

    res, (fast_frames, stock_frames) = single_process(args.steps, args.repeats)
    print(f"CarRacing-v3, single process, {args.steps} steps x best of {args.repeats}")
    print("(wall: elapsed time; cpu: this process's CPU time, less sensitive to machine load)")
    print(f"{'env':<8}{'wall steps/s':>14}{'speedup':>9}{'cpu steps/s':>14}{'speedup':>9}")
    for name in ("stock", "fast"):
        (wall, cpu), (wall0, cpu0) = res[name], res["stock"]
        print(f"{name:<8}{wall:>14.1f}{wall / wall0:>8.2f}x{cpu:>14.1f}{cpu / cpu0:>8.2f}x")
    print(f"fast env frames: {fast_frames} fast path, {stock_frames} stock-renderer fallback")

    if args.pool_steps <= 0:
        return
    pool = worker_pool(args.pool_steps)
    print(f"\nthrough EnvPool, 2 workers, ~{args.pool_steps} steps")
    print(f"{'env':<8}{'steps/s':>10}{'speedup':>10}")
    for name in ("stock", "fast"):
        print(f"{name:<8}{pool[name]:>10.1f}{pool[name] / pool['stock']:>9.2f}x")


if __name__ == "__main__":
    main()
