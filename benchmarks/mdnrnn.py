"""M training throughput: sequence-steps per second (B·T/s) of one full Adam step.

One step = loss (z resampling, MDN-RNN over T steps, mixture NLL) + gradient + clip by value ±1
+ Adam (PAPER.md §1.4), jitted. Compared, in the same run, against PyTorch `nn.LSTM` of the same
shape with the same output layer and loss (skipped when torch is not importable).

    python benchmarks/mdnrnn.py                      # 100x999 and 100x100, CarRacing shape
    python benchmarks/mdnrnn.py --lengths 100 --reps 3
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax.mdnrnn import MDNRNN, init_mdnrnn, mdnrnn_loss_fn


def make_batch(rng: np.random.Generator, B: int, T: int, Z: int, A: int) -> dict:
    """Random (B, T+1, ...) arrays in the shapes `mdnrnn_loss_fn` reads."""
    return {
        "mu": rng.normal(size=(B, T + 1, Z)).astype(np.float32),
        "logvar": rng.normal(-2.0, 0.5, size=(B, T + 1, Z)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(B, T + 1, A)).astype(np.float32),
        "rewards": rng.normal(size=(B, T + 1)).astype(np.float32),
        "dones": np.zeros((B, T + 1), bool),
    }


def time_fn(fn, reps: int) -> float:
    """Best wall time of `reps` calls (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_jax(batch: dict, model: MDNRNN, reps: int, unroll: int) -> float:
    """Seconds per jitted train step of dreamjax's MDN-RNN."""
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    tx = optax.chain(optax.clip(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)
    batch = jax.tree.map(jnp.asarray, batch)

    @jax.jit
    def train_step(params, opt_state, batch, key):
        grads, metrics = jax.grad(
            lambda p: mdnrnn_loss_fn(p, batch, key, model=model, unroll=unroll), has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    state = {"p": params, "o": opt_state, "k": jax.random.PRNGKey(1)}

    def run():
        key, sub = jax.random.split(state["k"])
        state["p"], state["o"], m = train_step(state["p"], state["o"], batch, sub)
        state["k"] = key
        jax.block_until_ready(m)

    return time_fn(run, reps)


def bench_torch(batch: dict, model: MDNRNN, reps: int) -> float | None:
    """Seconds per train step of the same network in PyTorch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    Z, A, H, K = model.z_dim, model.action_dim, model.hidden, model.n_mix
    lstm = torch.nn.LSTM(Z + A, H, batch_first=True)
    head = torch.nn.Linear(H, Z * K * 3)
    ps = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(ps, lr=1e-3)
    mu, logvar, actions = (torch.from_numpy(batch[k]) for k in ("mu", "logvar", "actions"))
    log_sqrt_2pi = 0.5 * math.log(2 * math.pi)

    def run():
        z = mu + torch.exp(logvar / 2) * torch.randn_like(mu)
        x = torch.cat([z[:, :-1], actions[:, :-1]], dim=-1)
        hs, _ = lstm(x)
        y = head(hs).reshape(*hs.shape[:2], Z, 3 * K)
        logpi, m, logs = y.split(K, dim=-1)
        logpi = torch.log_softmax(logpi, -1)
        zt = z[:, 1:, :, None]
        log_n = -0.5 * ((zt - m) * torch.exp(-logs)) ** 2 - logs - log_sqrt_2pi
        loss = -torch.logsumexp(logpi + log_n, -1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(ps, 1.0)
        opt.step()

    return time_fn(run, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lengths", type=int, nargs="+", default=[999, 100])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--unroll", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    model = MDNRNN()
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; MDNRNN z=32 a=3 H=256 K=5")
    print(f"{'impl':<22}{'B x T':>12}{'s/step':>10}{'seq-steps/s':>14}{'vs torch':>10}")
    for T in args.lengths:
        batch = make_batch(rng, args.batch, T, model.z_dim, model.action_dim)
        n = args.batch * T
        t_torch = None if args.no_torch else bench_torch(batch, model, args.reps)
        rows = [
            (f"dreamjax unroll={u}", bench_jax(batch, model, args.reps, u)) for u in args.unroll
        ]
        if t_torch is not None:
            rows.append(("torch nn.LSTM", t_torch))
        for name, t in rows:
            ratio = f"{t_torch / t:.2f}x" if t_torch is not None else "n/a"
            print(f"{name:<22}{f'{args.batch}x{T}':>12}{t:>10.3f}{n / t:>14,.0f}{ratio:>10}")


if __name__ == "__main__":
    main()
