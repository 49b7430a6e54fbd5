"""Sweep throughput: K dream CMA-ES runs as one vmapped program vs the same K runs one by one.

Both sides run the same generations of the same K members (seeds x sigma_0 x τ) on one M: the
sweep with `dreamjax.es.sweep`'s program (K members per call), the sequential side with the
single run's program (`DreamFitness.build`, what `train_controller_dream` calls), K calls in a
row. Each is compiled and warmed up first; then the timed repetitions alternate (vmapped,
sequential, vmapped, ...) so that a change in the machine's load hits both alike, and each row
of the table is one repetition. Default sizes are the smoke world model's (M: LSTM 32, z 32,
5 mixtures; 8 candidates x 2 rollouts x 50 steps).

    python benchmarks/sweep.py                      # K = 8, smoke sizes
    python benchmarks/sweep.py --hidden 256 --popsize 64 --rollouts 16 --steps 1000  # paper
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp

from dreamjax.config import ESConfig
from dreamjax.dream.env import random_dream_params
from dreamjax.es.dream import DreamFitness
from dreamjax.es.loop import INIT_KEY_TAG
from dreamjax.es.sweep import _sweep_programs, es_grid, member_es_params
from dreamjax.models.controller import controller_spec
from dreamjax.models.mdnrnn import MDNRNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8, help="K (seeds x 2 sigmas x 2 taus)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--popsize", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--generations", type=int, default=4, help="generations per timed call")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--strategy", default="CMA_ES")
    args = ap.parse_args()
    K, G = args.members, args.generations
    if K % 4:
        ap.error("--members must be a multiple of 4 (seeds x 2 sigmas x 2 taus)")

    model = MDNRNN(z_dim=32, action_dim=3, hidden=args.hidden, n_mix=5, reward_head=True,
                   done_head=True)
    dp = random_dream_params(jax.random.key(0), model, max_steps=args.steps)
    es = ESConfig(strategy=args.strategy, popsize=args.popsize, rollouts=args.rollouts,
                  max_steps=args.steps, chunk=G)
    spec = controller_spec("zh", model.z_dim, model.hidden, action_dim=model.action_dim)
    members = es_grid(range(K // 4), [0.1, 0.3], [1.0, 1.15])

    # the sweep: one call runs G generations of all K members
    single = DreamFitness.build(dp, es, spec)
    init, program = _sweep_programs(single.strategy, spec, es.rollouts, args.steps, G, None)
    keys = jnp.stack([jax.random.key(m.seed) for m in members])
    es_params = jax.tree.map(lambda *xs: jnp.stack(xs),
                             *[member_es_params(single.strategy, m) for m in members])
    taus = jnp.asarray([m.temperature for m in members], jnp.float32)
    states = init(keys, es_params)

    def vmapped(start: int) -> None:
        out = program(keys, states, es_params, taus, dp, start, start + G)
        jax.block_until_ready(out)

    # sequential: K single runs, each G generations per call of the single run's program
    singles = []
    for m in members:
        cfg = dataclasses.replace(es, sigma_init=m.sigma_init)
        fit = DreamFitness.build(dp.replace(temperature=jnp.float32(m.temperature)), cfg, spec)
        key = jax.random.key(m.seed)
        state = fit.strategy.init(jax.random.fold_in(key, INIT_KEY_TAG), spec.zeros(),
                                  fit.es_params)
        singles.append((fit, key, state))

    def sequential(start: int) -> None:
        for fit, key, state in singles:
            jax.block_until_ready(fit.chunk_fn(key, state, fit.es_params, fit.dream_params,
                                               start, start + G))

    compile_s = {}
    for name, fn in (("vmapped", vmapped), ("sequential", sequential)):
        t0 = time.perf_counter()
        fn(0)
        compile_s[name] = time.perf_counter() - t0
    steps = K * G * args.popsize * args.rollouts * args.steps
    print(f"K={K} members x {G} generations of {args.popsize} x {args.rollouts} x "
          f"{args.steps} dream steps ({args.strategy}, LSTM {args.hidden}); "
          f"first call (compile + run): vmapped {compile_s['vmapped']:.1f} s, sequential "
          f"{compile_s['sequential']:.1f} s")
    print(f"{'rep':>3} {'form':>10} {'s/generation (all K)':>21} {'dream steps/s':>14}")
    times: dict[str, list[float]] = {"vmapped": [], "sequential": []}
    for rep in range(args.reps):
        for name, fn in (("vmapped", vmapped), ("sequential", sequential)):
            t0 = time.perf_counter()
            fn(G * (rep + 1))
            dt = time.perf_counter() - t0
            times[name].append(dt)
            print(f"{rep:>3} {name:>10} {dt / G:>21.3f} {steps / dt:>14.0f}")
    best = {k: min(v) for k, v in times.items()}
    summary = {"members": K, "generations": G, "popsize": args.popsize,
               "rollouts": args.rollouts, "steps": args.steps, "hidden": args.hidden,
               "strategy": args.strategy, "vmapped_s_per_gen": best["vmapped"] / G,
               "sequential_s_per_gen": best["sequential"] / G,
               "speedup": best["sequential"] / best["vmapped"],
               "first_call_s": compile_s, "devices": jax.device_count(),
               "backend": jax.default_backend()}
    print(f"best: vmapped {summary['vmapped_s_per_gen']:.3f} s/gen, sequential "
          f"{summary['sequential_s_per_gen']:.3f} s/gen: {summary['speedup']:.1f}x")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                      for k, v in summary.items()}))


if __name__ == "__main__":
    main()
