"""Dream throughput: one paper-sized CMA-ES generation inside the world model.

One generation = 64 candidates x 16 rollouts x 1000 steps of the dream (PAPER.md §1.6, §2.5) with
M of the CarRacing shape (LSTM 256, z 32, 5 mixtures, reward and done heads), τ = 1.15, and the
paper's linear controller on [z, h]. Reported, all measured in this run:

- the dream rollouts alone (`population_rollouts`, jit + vmap + scan): s/generation, env-steps/s,
  matmul FLOPs per rollout-step and the achieved fraction of this CPU's float32 matmul rate
  (a 2048² x 2048² matmul through `jax.jit`);
- the fused generation (CMA-ES ask -> rollouts -> tell, one compiled function) and the ES
  overhead inside it; ask + tell alone for pycma-style lazy and evosax's every-generation
  eigendecomposition;
- a PyTorch batched-loop reference of the same dream (skipped when torch is not importable);
- real-env steps/s of `dreamjax.envs.pool.EnvPool` (fast CarRacing) with 1 and 2 workers.

    python benchmarks/dream.py                    # paper size
    python benchmarks/dream.py --steps 200        # shorter rollouts (numbers scaled to 1000)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.dream.env import DreamEnv, random_dream_params
from dreamjax.dream.rollout import population_rollouts
from dreamjax.envs.carracing import make_env
from dreamjax.envs.pool import EnvPool, EpisodeSpec
from dreamjax.es.dream import dream_evaluate
from dreamjax.es.generation import make_chunk_fn
from dreamjax.es.strategies import make_strategy, strategy_params
from dreamjax.models.controller import controller_spec


def best_time(fn, reps: int) -> float:
    """Best wall time of `reps` calls (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """Achieved float32 GFLOP/s of an n x n matmul through jax.jit."""
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t = best_time(lambda: f(x).block_until_ready(), reps)
    return 2 * n**3 / t / 1e9


def flops_per_step(Z: int, A: int, H: int, K: int, reward: bool, done: bool) -> int:
    """Matmul FLOPs of one rollout-step: LSTM [z, a, h] x (Z+A+H, 4H), head h x (H, out), C."""
    n_in = Z + A
    n_out = int(done) + Z * K * 3 + 3 * int(reward)
    return 2 * ((n_in + H) * 4 * H + H * n_out + (Z + H) * A)


def torch_dream(P: int, R: int, T: int, params, tau: float, sampler: str) -> float | None:
    """Seconds for the same dream as a PyTorch batched loop (no_grad, float32), or None.

    sampler: "multinomial" (torch's own categorical sampler) or "icdf" (one uniform per
    dimension and inverse CDF, the JAX dream's algorithm)."""
    try:
        import torch
    except ImportError:
        return None
    p = {k: torch.from_numpy(np.array(v)) for k, v in params.mdn_params["params"].items()}
    m = params.model
    Z, A, H, K = m.z_dim, m.action_dim, m.hidden, m.n_mix
    B = P * R
    W, b, Wo, bo = p["lstm_kernel"], p["lstm_bias"], p["output_w"], p["output_b"]
    gen = torch.Generator().manual_seed(0)
    Wc = torch.randn(P, Z + H, A, generator=gen) * 0.1
    bc = torch.randn(P, 1, A, generator=gen) * 0.1
    mu0 = torch.from_numpy(np.array(params.init_mu))
    n_mdn = Z * K * 3

    def run() -> None:
        with torch.no_grad():
            idx = torch.randint(0, mu0.shape[0], (B,), generator=gen)
            z = mu0[idx] + 0.1 * torch.randn(B, Z, generator=gen)
            c = torch.zeros(B, H)
            h = torch.zeros(B, H)
            ret = torch.zeros(B)
            alive = torch.ones(B, dtype=torch.bool)
            for _ in range(T):
                obs = torch.cat([z, h], 1).view(P, R, Z + H)
                a = torch.tanh(torch.baddbmm(bc, obs, Wc)).view(B, A)
                gates = torch.addmm(b, torch.cat([z, a, h], 1), W)
                i, j, f, o = gates.chunk(4, 1)
                c = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)
                h = torch.tanh(c) * torch.sigmoid(o)
                y = torch.addmm(bo, h, Wo)
                done = y[:, 0] > 0
                mdn = y[:, 1 : 1 + n_mdn].view(B, Z, 3 * K)
                logpi, mu, logsig = mdn.split(K, -1)
                probs = torch.softmax(torch.log_softmax(logpi, -1) / tau, -1)
                if sampler == "multinomial":
                    k = torch.multinomial(probs.view(B * Z, K), 1, generator=gen).view(B, Z, 1)
                else:
                    u = torch.rand(B, Z, 1, generator=gen)
                    k = (u >= probs.cumsum(-1)[..., :-1]).sum(-1, keepdim=True)
                eps = torch.randn(B, Z, generator=gen)
                z = mu.gather(-1, k)[..., 0] + torch.exp(logsig.gather(-1, k)[..., 0]) * eps * (
                    tau**0.5)
                rp = y[:, 1 + n_mdn :]
                pr = torch.sigmoid(rp[:, 0])
                ret += torch.where(alive, pr * rp[:, 1] + (1 - pr) * rp[:, 2], 0.0)
                alive &= ~done

    return best_time(run, 1)


def real_env_rate(workers: int, episodes: int, steps: int) -> float:
    """Env-steps/s of EnvPool (fast CarRacing) with `workers` processes and a random policy."""

    class RandomPolicy:
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)

        def reset(self, slot, spec) -> None:
            pass

        def act(self, frames, active):
            return self.rng.uniform(-1, 1, size=(frames.shape[0], 3)).astype(np.float32)

    specs = [EpisodeSpec(seed=i) for i in range(episodes)]
    env_fn = functools.partial(make_env, fast=True, max_episode_steps=steps)
    with EnvPool(env_fn, num_workers=workers) as pool:
        pool.run(specs[:workers], RandomPolicy())  # warm-up (spawn, imports, track build)
        t0 = time.perf_counter()
        res = pool.run(specs, RandomPolicy())
        dt = time.perf_counter() - t0
    return sum(r.length for r in res) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--popsize", type=int, default=64)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--temperature", type=float, default=1.15)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()
    P, R, T = args.popsize, args.rollouts, args.steps
    scale = 1000 / T

    env = DreamEnv()
    dp = random_dream_params(jax.random.key(0), temperature=args.temperature, max_steps=T)
    m = dp.model
    spec = controller_spec("zh", m.z_dim, m.hidden, action_dim=m.action_dim)
    ctrl = spec.controller
    solution = spec.zeros()
    pop = jax.tree.map(
        lambda x: 0.1 * jax.random.normal(jax.random.key(1), (P, *x.shape)), solution)

    rate = matmul_rate()
    flops = flops_per_step(m.z_dim, m.action_dim, m.hidden, m.n_mix, m.reward_head, m.done_head)

    roll = jax.jit(lambda k, pp, ep: population_rollouts(k, env, ep, ctrl.apply, pp, R, T,
                                                          unroll=args.unroll))
    t_roll = best_time(lambda: jax.block_until_ready(roll(jax.random.key(2), pop, dp)), args.reps)
    c0 = time.process_time()
    jax.block_until_ready(roll(jax.random.key(5), pop, dp))
    cpu_roll = (time.process_time() - c0) / (os.cpu_count() or 1)

    rows = []

    def row(name: str, seconds: float | None, note: str = "") -> None:
        if seconds is None:
            rows.append((name, "skipped", "", "", note))
            return
        s_gen = seconds * scale
        steps_s = P * R * T / seconds
        frac = steps_s * flops / (rate * 1e9)
        rows.append((name, f"{s_gen:8.2f}", f"{steps_s:10.0f}", f"{100 * frac:5.1f}%", note))

    row("dream rollouts (jit+vmap+scan)", t_roll)

    strategy = make_strategy("CMA_ES", P, solution)
    es_params = strategy_params(strategy, 0.1)
    state = strategy.init(jax.random.key(3), solution, es_params)
    evaluate = dream_evaluate(env, ctrl.apply, R, T)
    chunk = make_chunk_fn(strategy, evaluate, 1)
    gen = [0]

    def fused() -> None:
        nonlocal state
        state, metrics = chunk(jax.random.key(4), state, es_params, dp, gen[0], gen[0] + 1)
        jax.block_until_ready(metrics)
        gen[0] += 1

    # three generations per measurement so that the lazy eigendecomposition (every 3rd) counts
    t_fused = best_time(lambda: [fused() for _ in range(3)], 1) / 3
    es_over = t_fused - t_roll  # per generation, independent of the rollout length
    t_fused_1000 = t_roll + es_over / scale  # so that row() scales only the rollout part
    row("fused generation (ask+rollouts+tell)", t_fused_1000, "CMA_ES, lazy eigh")

    ask_tell = {}
    fitness = jnp.linspace(0.0, 1.0, P)
    for name in ("CMA_ES", "CMA_ES_evosax"):
        es = make_strategy(name, P, solution)
        ep = strategy_params(es, 0.1)
        st = es.init(jax.random.key(3), solution, ep)

        @jax.jit
        def step(st, key, es=es, ep=ep):
            popn, st = es.ask(key, st, ep)
            return es.tell(key, popn, fitness, st, ep)[0]

        def three(step=step) -> None:
            s = st
            for g in range(3):
                s = step(s, jax.random.key(g))
            jax.block_until_ready(s)

        ask_tell[name] = best_time(three, 2) / 3

    t_torch = None
    for sampler in ("multinomial", "icdf"):
        t = None if args.no_torch else torch_dream(P, R, T, dp, args.temperature, sampler)
        row(f"PyTorch batched loop, {sampler}", t, "same dream, torch no_grad")
        t_torch = t if t_torch is None or t is None else min(t_torch, t)

    print(f"\nDream generation: {P} candidates x {R} rollouts x 1000 steps "
          f"(measured with {T} steps), Z={m.z_dim} H={m.hidden} K={m.n_mix}, "
          f"tau={args.temperature}, unroll={args.unroll}")
    print(f"{jax.default_backend().upper()} float32 matmul rate (2048^2 via jax.jit): "
          f"{rate:.1f} GFLOP/s; "
          f"matmul FLOPs per rollout-step: {flops / 1e6:.3f} MFLOP; jax {jax.__version__}, "
          f"{jax.devices()[0].platform}")
    print(f"\n{'':40s} {'s/gen':>8s} {'env-steps/s':>10s} {'of matmul':>9s}  note")
    for name, s, st, fr, note in rows:
        print(f"{name:40s} {s:>8s} {st:>10s} {fr:>9s}  {note}")
    print(f"\nCPU time of the dream rollouts / {os.cpu_count()} cores: {cpu_roll * scale:.2f} "
          "s/gen (the wall time on an otherwise idle machine cannot be below this; on a loaded "
          "machine it is the steadier figure)")
    print(f"CMA-ES overhead inside the fused generation: {es_over:+.3f} s/gen "
          f"({100 * es_over / (t_roll * scale):+.1f}% of a 1000-step generation; noise-level "
          "when small)")
    print(f"ask+tell alone, N={strategy.num_dims}, P={P}: lazy eigh (pycma schedule, every "
          f"{math.floor(strategy.eigen_gap) + 1} gens) {ask_tell['CMA_ES'] * 1e3:.0f} ms/gen; "
          f"evosax every-gen eigh {ask_tell['CMA_ES_evosax'] * 1e3:.0f} ms/gen")
    if t_torch is not None:
        print(f"speed-up over the faster PyTorch loop: {t_torch / t_roll:.2f}x (rollouts), "
              f"{t_torch / t_fused_1000:.2f}x (fused generation incl. ES)")

    if not args.no_real:
        print("\nReal CarRacing-v3 through EnvPool (random policy, 4 episodes x 200 steps):")
        for w in (1, 2):
            print(f"  {w} worker(s): {real_env_rate(w, 4, 200):7.1f} env-steps/s")


if __name__ == "__main__":
    main()
