"""Real-env steps/s: CarRacing-v3 (stock gymnasium vs dreamjax's byte-identical FastCarRacing) and
Doom TakeCover (ViZDoom, `dreamjax.envs.doom`).

Run: python benchmarks/envs.py [--steps 2000] [--repeats 3] [--pool-steps 2000] [--doom-steps 2000]
     [--repeat-frames 4000]

Single process: the envs of a game step the same actions (resetting on episode end), measured in
the same run, interleaved in chunks so machine load affects them alike. The best of `--repeats`
rounds is reported. The worker-pool rows (2 workers, `dreamjax.envs.pool`, the agent's view of
the env: `make_env`) are separate; `--pool-steps 0` skips CarRacing's. Doom's game engine is a
child process, so only wall-clock rates are meaningful for it; its actions come from the Doom
random data policy (`DoomRandomPolicy`, PAPER.md §2.2); `--doom-steps 0` skips Doom.
The action-repeat rows compare, in game frames/s, `FastCarRacing` stepped frame by frame (every
frame drawn) with `ActionRepeat(FastCarRacing, 4)` (only the frame each step returns is drawn),
interleaved; `--repeat-frames 0` skips them.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dreamjax.data.policies import DoomRandomPolicy, episode_seed
from dreamjax.envs import doom
from dreamjax.envs.carracing import make_env, make_raw_env
from dreamjax.envs.pool import BatchPolicy, EnvPool, EpisodeSpec
from dreamjax.envs.view import ActionRepeat


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


def interleaved_rates(envs: dict[str, Any], actions: Callable[[str, int], np.ndarray],
                      steps: int, repeats: int, chunk: int = 250
                      ) -> dict[str, tuple[float, float]]:
    """Best-of-`repeats` (wall, CPU) steps/s of each env in `envs` (already reset), stepped in
    chunks of `chunk` in turn; `actions(name, round)` is env `name`'s (steps, ...) actions of a
    round. Episodes run back to back, so episode starts weigh as in real use."""
    seeds = {k: iter(range(1, 10**6)) for k in envs}
    best = {k: (0.0, 0.0) for k in envs}
    for r in range(repeats):
        total = {k: np.zeros(2) for k in envs}
        acts = {k: actions(k, r) for k in envs}
        for c in range(0, steps, chunk):
            for name, env in envs.items():
                total[name] += time_steps(env, acts[name][c : c + chunk], seeds[name].__next__)
        for name in envs:
            wall, cpu = steps / total[name]
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    return best


def single_process(
    steps: int, repeats: int
) -> tuple[dict[str, tuple[float, float]], tuple[int, int]]:
    """Best-of-`repeats` (wall, CPU) steps/s of stock and fast CarRacing (TimeLimit 1000, whose
    zoom-in frames at episode starts show the whole track and render slower) and the fast env's
    (fast-path, stock-fallback) frame counts."""
    envs = {"stock": make_raw_env(fast=False), "fast": make_raw_env(fast=True)}
    for env in envs.values():
        env.reset(seed=0)
    best = interleaved_rates(envs, lambda name, r: smooth_actions(r, steps), steps, repeats)
    fast = envs["fast"].unwrapped
    frames = (fast.fast_frames, fast.stock_frames)
    for env in envs.values():
        env.close()
    return best, frames


def repeat_rates(frames: int, repeats: int, k: int = 4, chunk: int = 200) -> dict[str, float]:
    """Best-of-`repeats` wall game frames/s of the fast env played k frames per action, stepped
    frame by frame (`every frame`) and through `ActionRepeat` (`last frame`), in alternating
    chunks of `chunk` frames, the same actions (each held k frames) for both."""
    envs = {"every frame": make_raw_env(fast=True), "last frame": ActionRepeat(
        make_raw_env(fast=True, max_episode_steps=1000), k)}
    best = dict.fromkeys(envs, 0.0)
    for r in range(repeats):
        held = smooth_actions(r, frames // k)
        acts = {"every frame": np.repeat(held, k, axis=0), "last frame": held}
        seeds = {name: iter(range(1, 10**6)) for name in envs}
        wall = dict.fromkeys(envs, 0.0)
        for env in envs.values():
            env.reset(seed=0)
        for c in range(0, frames, chunk):
            for name, env in envs.items():
                per = 1 if name == "every frame" else k
                part = acts[name][c // per : (c + chunk) // per]
                wall[name] += time_steps(env, part, seeds[name].__next__)[0]
        for name in envs:
            best[name] = max(best[name], frames / wall[name])
    for env in envs.values():
        env.close()
    return best


def doom_actions(round_: int, steps: int) -> np.ndarray:
    """(steps, 1) actions of the Doom random data policy, one episode stream per round."""
    policy = DoomRandomPolicy(0, 1)
    policy.reset(0, EpisodeSpec(seed=0, tag=round_))
    frame, active = np.zeros((1, 64, 64, 3), np.uint8), np.ones(1, bool)
    return np.stack([policy.act(frame, active)[0] for _ in range(steps)])


def doom_single(steps: int, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` wall steps/s of the raw game (`doom.make_raw_env`: 640x480 frames) and
    of the agent's view (`doom.make_env`: plus the crop and resize to 64x64), 2100-step limit."""
    envs = {"raw": doom.make_raw_env(), "agent": doom.make_env()}
    for env in envs.values():
        env.reset(seed=0)

    def actions(name: str, r: int) -> np.ndarray:
        acts = doom_actions(r, steps)
        return doom.to_env_action(acts) if name == "raw" else acts

    best = interleaved_rates(envs, actions, steps, repeats)
    for env in envs.values():
        env.close()
    return {name: wall for name, (wall, _) in best.items()}


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


def pool_rate(env_fn: Callable[[], Any], specs: list[EpisodeSpec],
              policy_fn: Callable[[int], BatchPolicy], workers: int) -> float:
    """Steps/s of `specs` through an `EnvPool` of `workers` workers with the policy
    `policy_fn(num_slots)`, after a warm-up run of the first `workers` specs (workers started,
    imports done) that is not counted."""
    with EnvPool(env_fn, num_workers=workers) as pool:
        policy = policy_fn(pool.num_slots)
        pool.run(specs[:workers], policy)
        start = time.perf_counter()
        results = pool.run(specs[workers:], policy)
        seconds = time.perf_counter() - start
    return sum(r.length for r in results) / seconds


def worker_pool(steps: int, workers: int = 2) -> dict[str, float]:
    """CarRacing steps/s through `EnvPool` with `workers` workers, stock and fast."""
    episode_len = 500
    n_episodes = max(workers, steps // episode_len)
    specs = [EpisodeSpec(seed=i) for i in range(workers + n_episodes)]
    return {name: pool_rate(functools.partial(make_env, fast=fast, max_episode_steps=episode_len),
                            specs, functools.partial(_ReplayPolicy, max_steps=episode_len),
                            workers)
            for name, fast in (("stock", False), ("fast", True))}


def doom_pool(steps: int, workers: int = 2) -> float:
    """Doom steps/s through `EnvPool` with `workers` workers and the random data policy; about
    `steps` steps (random-policy episodes last about 300 steps)."""
    n_episodes = max(workers, steps // 300)
    specs = [EpisodeSpec(seed=episode_seed(0, i), tag=i) for i in range(workers + n_episodes)]
    return pool_rate(doom.make_env, specs, functools.partial(DoomRandomPolicy, 0), workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool-steps", type=int, default=2000)
    parser.add_argument("--doom-steps", type=int, default=2000)
    parser.add_argument("--repeat-frames", type=int, default=4000)
    args = parser.parse_args()

    res, (fast_frames, stock_frames) = single_process(args.steps, args.repeats)
    print(f"CarRacing-v3, single process, {args.steps} steps x best of {args.repeats}")
    print("(wall: elapsed time; cpu: this process's CPU time, less sensitive to machine load)")
    print(f"{'env':<8}{'wall steps/s':>14}{'speedup':>9}{'cpu steps/s':>14}{'speedup':>9}")
    for name in ("stock", "fast"):
        (wall, cpu), (wall0, cpu0) = res[name], res["stock"]
        print(f"{name:<8}{wall:>14.1f}{wall / wall0:>8.2f}x{cpu:>14.1f}{cpu / cpu0:>8.2f}x")
    print(f"fast env frames: {fast_frames} fast path, {stock_frames} stock-renderer fallback")

    if args.pool_steps > 0:
        pool = worker_pool(args.pool_steps)
        print(f"\nthrough EnvPool, 2 workers, ~{args.pool_steps} steps")
        print(f"{'env':<8}{'steps/s':>10}{'speedup':>10}")
        for name in ("stock", "fast"):
            print(f"{name:<8}{pool[name]:>10.1f}{pool[name] / pool['stock']:>9.2f}x")

    if args.repeat_frames > 0:
        rep = repeat_rates(args.repeat_frames, args.repeats)
        print(f"\nCarRacing with each action held 4 frames (`--action-repeat 4`), single process, "
              f"{args.repeat_frames} frames x best of {args.repeats}")
        print(f"{'frames drawn':<14}{'game frames/s':>15}{'speedup':>9}")
        for name in ("every frame", "last frame"):
            print(f"{name:<14}{rep[name]:>15.1f}{rep[name] / rep['every frame']:>8.2f}x")

    if args.doom_steps <= 0:
        return
    rates = doom_single(args.doom_steps, args.repeats)
    print(f"\nDoom TakeCover (ViZDoom 640x480), single process, {args.doom_steps} steps x best of "
          f"{args.repeats}, random data policy")
    print(f"{'env':<20}{'wall steps/s':>14}")
    print(f"{'raw game':<20}{rates['raw']:>14.1f}")
    print(f"{'agent view (64x64)':<20}{rates['agent']:>14.1f}")
    print(f"{'EnvPool, 2 workers':<20}{doom_pool(args.doom_steps):>14.1f}")


if __name__ == "__main__":
    main()
