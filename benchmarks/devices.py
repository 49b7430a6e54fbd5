"""Device scaling: one dream CMA-ES generation with its population sharded over 1, 2, 4, 8
devices (`DreamFitness.build(..., mesh=)`, what `--devices` gives the pipeline).

Each device count runs in its own process (JAX fixes the device count when it starts); on a
CPU host the devices are forced with `XLA_FLAGS=--xla_force_host_platform_device_count=N`,
which splits the same cores into N devices, so the table shows the sharding's overhead there,
not a speed-up (the cores are the same). On a GPU/TPU host pass `--real` to use the host's own
devices (the first N). Every row reports the best of `--reps` timed generations after one
warm-up (compile) call, and the fitness of the timed generation, which is the same for every N.

    python benchmarks/devices.py                       # forced CPU devices, small sizes
    python benchmarks/devices.py --real --popsize 64 --rollouts 16 --steps 1000 --hidden 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax

from dreamjax.config import ESConfig
from dreamjax.dream.env import random_dream_params
from dreamjax.es.dream import DreamFitness
from dreamjax.es.loop import INIT_KEY_TAG
from dreamjax.es.sharding import local_mesh
from dreamjax.models.controller import controller_spec
from dreamjax.models.mdnrnn import MDNRNN


def child(args: argparse.Namespace) -> dict:
    """One device count, in this process (started with that count): the timings of one
    generation."""
    model = MDNRNN(z_dim=32, action_dim=3, hidden=args.hidden, n_mix=5, reward_head=True,
                   done_head=True)
    dp = random_dream_params(jax.random.key(0), model, max_steps=args.steps)
    es = ESConfig(popsize=args.popsize, rollouts=args.rollouts, max_steps=args.steps, chunk=1)
    spec = controller_spec("zh", model.z_dim, model.hidden, action_dim=model.action_dim)
    mesh = local_mesh(1, args.child)
    fitness = DreamFitness.build(dp.replace(obs_mode=spec.obs_mode), es, spec, mesh=mesh)
    key = jax.random.key(1)
    state = fitness.strategy.init(jax.random.fold_in(key, INIT_KEY_TAG), spec.zeros(),
                                  fitness.es_params)
    t0 = time.perf_counter()
    fitness.run(key, state, 0, 1)
    first = time.perf_counter() - t0
    best, record = float("inf"), {}
    for _ in range(args.reps):
        t0 = time.perf_counter()
        _, records = fitness.run(key, state, 1, 2)
        best = min(best, time.perf_counter() - t0)
        record = records[0]
    return {"devices": args.child, "platform": jax.devices()[0].platform, "first_call_s": first,
            "s_per_generation": best,
            "dream_steps_per_s": args.popsize * args.rollouts * args.steps / best,
            "best_fitness": record["best_fitness"], "mean_fitness": record["mean_fitness"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--popsize", type=int, default=16)
    ap.add_argument("--rollouts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="the host's own devices (GPU/TPU)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for n in args.counts:
        env = dict(os.environ)
        if not args.real:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            env["JAX_PLATFORMS"] = "cpu"
        argv = [sys.executable, __file__, "--child", str(n), "--hidden", str(args.hidden),
                "--popsize", str(args.popsize), "--rollouts", str(args.rollouts),
                "--steps", str(args.steps), "--reps", str(args.reps)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"one generation of {args.popsize} x {args.rollouts} x {args.steps} dream steps "
          f"(LSTM {args.hidden}), population sharded over N {rows[0]['platform']} devices")
    print(f"{'N':>3} {'s/generation':>13} {'dream steps/s':>14} {'vs N=1':>7} "
          f"{'first call s':>13} {'best fitness':>13}")
    for r in rows:
        print(f"{r['devices']:>3} {r['s_per_generation']:>13.3f} {r['dream_steps_per_s']:>14.0f} "
              f"{rows[0]['s_per_generation'] / r['s_per_generation']:>6.2f}x "
              f"{r['first_call_s']:>13.1f} {r['best_fitness']:>13.5f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
