"""Compacted dream rollouts against the fused scan: one dream CMA-ES generation of Doom's size.

One generation = 16 candidates x 16 dreams x at most 2100 steps (the Doom `laptop` profile's
ES; `--popsize 64` for the paper's 64 x 16) of a run's M at the profile's τ, the candidates
drawn around a controller trained in that dream (C + 0.1·N(0, 1), as CMA-ES samples them). The
fused program (`population_rollouts`) steps every dream to the cap; `compacted_rollouts`
(`--es.compact-every 64`) steps only the dreams still alive. Rows alternate between the two;
reported: seconds per generation (best and median), the mean dream length, the speedup and how
far apart the two methods' returns are.

    python benchmarks/compact.py --run-dir RUN --controller RUN/controller/.../best.npz
    python benchmarks/compact.py --run-dir RUN --controller C.npz --popsize 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from dreamjax.config import DOOM_PROFILES, with_temperature
from dreamjax.dream.env import DreamEnv
from dreamjax.dream.rollout import compacted_rollouts, population_rollouts
from dreamjax.models.controller import ravel_params
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="a finished Doom run folder (V, M, bank)")
    ap.add_argument("--controller", required=True, help="a controller .npz trained in its dream")
    ap.add_argument("--tau", type=float, default=None, help="τ (default: the laptop profile's)")
    ap.add_argument("--block", type=int, default=64, help="steps between compactions")
    ap.add_argument("--reps", type=int, default=3, help="timed generations per method")
    ap.add_argument("--popsize", type=int, default=None, help="candidates (default: laptop's 16)")
    ap.add_argument("--rollouts", type=int, default=None, help="dreams each (default: 16)")
    args = ap.parse_args()

    cfg = DOOM_PROFILES["laptop"]()
    if args.tau is not None:
        cfg = with_temperature(cfg, args.tau)
    run = RunFolder(args.run_dir)
    wm = artifacts.load_world_model(run, cfg.controller)
    dream = artifacts.config_dream_params(cfg, run, wm)
    params, _ = artifacts.load_controller_params(Path(args.controller), wm.spec)
    P, R, T = args.popsize or cfg.es.popsize, args.rollouts or cfg.es.rollouts, cfg.es.max_steps
    center = ravel_params(params)
    noise = 0.1 * jax.random.normal(jax.random.key(0), (P, center.size))
    pop = jax.vmap(wm.spec.unravel)(center[None] + noise)
    env, policy = DreamEnv(), wm.spec.controller.apply
    fused = jax.jit(lambda k, p, d: population_rollouts(k, env, d, policy, p, R, T))

    def run_fused(key):
        return jax.block_until_ready(fused(key, pop, dream))

    def run_compact(key):
        return jax.block_until_ready(
            compacted_rollouts(key, env, dream, policy, pop, R, T, block=args.block))

    methods = {"fused scan": run_fused, f"compacted every {args.block}": run_compact}
    for fn in methods.values():
        fn(jax.random.key(99))  # compile
    times: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, list] = {name: [] for name in methods}
    for rep in range(args.reps):
        for name, fn in methods.items():  # alternating rows
            t0 = time.perf_counter()
            res = fn(jax.random.key(rep))
            times[name].append(time.perf_counter() - t0)
            results[name].append(res)
    print(f"run {args.run_dir}, C {args.controller}, τ {float(dream.temperature)}, "
          f"{P} x {R} dreams x {T} steps, {os.cpu_count()} CPUs, {jax.default_backend()}")
    lengths = np.concatenate([np.asarray(r.lengths).ravel() for r in results["fused scan"]])
    print(f"mean dream length {lengths.mean():.0f} of {T} (min {lengths.min()}, "
          f"max {lengths.max()}); a fused scan steps all {T}")
    for name, ts in times.items():
        print(f"{name:>22}: best {min(ts):.2f} s, median {statistics.median(ts):.2f} s per "
              f"generation; {[round(t, 2) for t in ts]}")
    names = list(methods)
    same = all(np.array_equal(np.asarray(a.returns), np.asarray(b.returns))
               and np.array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
               for a, b in zip(results[names[0]], results[names[1]], strict=True))
    speed = statistics.median(times[names[0]]) / statistics.median(times[names[1]])
    err = max(float(np.max(np.abs(np.asarray(a.returns) - np.asarray(b.returns))))
              for a, b in zip(results[names[0]], results[names[1]], strict=True))
    print(f"speedup (median) {speed:.2f}x; identical returns and lengths: {same} "
          f"(largest return difference {err:.3g})")


if __name__ == "__main__":
    main()
