"""M training throughput: sequence-steps per second (B·T/s) of one full Adam step.

One step = loss (z resampling, MDN-RNN over T steps, mixture NLL) + gradient + clip by value ±1
+ Adam (PAPER.md §1.4), jitted. Compared, in the same run, against PyTorch `nn.LSTM` of the same
shape with the same output layer and loss (skipped when torch is not importable), and a plain
Flax `nn.RNN(nn.LSTMCell)`. Implementations are timed round-robin (best of --reps).

    python benchmarks/mdnrnn.py                      # 100x999 and 100x100, CarRacing shape
    python benchmarks/mdnrnn.py --lengths 100 --reps 3
"""

from __future__ import annotations

import argparse
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax.models.mdnrnn import MDNRNN, MDNOutput, init_mdnrnn, mdn_nll, mdnrnn_loss_fn


def make_batch(rng: np.random.Generator, B: int, T: int, Z: int, A: int) -> dict:
    """Random (B, T+1, ...) arrays in the shapes `mdnrnn_loss_fn` reads."""
    return {
        "mu": rng.normal(size=(B, T + 1, Z)).astype(np.float32),
        "logvar": rng.normal(-2.0, 0.5, size=(B, T + 1, Z)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(B, T + 1, A)).astype(np.float32),
        "rewards": rng.normal(size=(B, T + 1)).astype(np.float32),
        "dones": np.zeros((B, T + 1), bool),
    }


def best_times(runners: dict, reps: int) -> dict:
    """Best wall time per runner over `reps` round-robin calls (after one warm-up call each).

    Round-robin so that load from other processes hits every implementation alike.
    """
    for fn in runners.values():
        fn()
    best = dict.fromkeys(runners, math.inf)
    for _ in range(reps):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def loss_from_head(y, z_next, Z: int, K: int):
    """Mixture NLL from raw head outputs y (B, T, Z·K·3) (same layout and loss as dreamjax)."""
    logpi, mu, logsigma = jnp.split(y.reshape(*y.shape[:2], Z, 3 * K), 3, axis=-1)
    out = MDNOutput(logpi=jax.nn.log_softmax(logpi, -1), mu=mu, logsigma=logsigma)
    return mdn_nll(out, z_next)


def jax_runner(loss, params, batch: dict):
    """A callable running one jitted Adam step (clip by value ±1) of `loss(params, batch, key)`."""
    tx = optax.chain(optax.clip(1.0), optax.adam(1e-3))
    batch = jax.tree.map(jnp.asarray, batch)

    @jax.jit
    def train_step(params, opt_state, batch, key):
        grads, metrics = jax.grad(loss, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    state = {"p": params, "o": tx.init(params), "k": jax.random.PRNGKey(1)}

    def run():
        key, sub = jax.random.split(state["k"])
        state["p"], state["o"], m = train_step(state["p"], state["o"], batch, sub)
        state["k"] = key
        jax.block_until_ready((state["p"], m))

    return run


def dreamjax_runner(batch: dict, model: MDNRNN, unroll: int):
    """dreamjax's MDN-RNN train step."""

    def loss(p, b, k):
        return mdnrnn_loss_fn(p, b, k, model=model, unroll=unroll)

    return jax_runner(loss, init_mdnrnn(jax.random.PRNGKey(0), model), batch)


class FlaxLSTM(nn.Module):
    """Reference: plain Flax `nn.RNN(nn.LSTMCell)` + Dense head, same shapes."""

    hidden: int
    n_out: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.n_out)(nn.RNN(nn.LSTMCell(self.hidden))(x))


def flax_runner(batch: dict, model: MDNRNN):
    """Same network, loss and optimizer step with a plain Flax nn.RNN."""
    Z, K = model.z_dim, model.n_mix
    ref = FlaxLSTM(model.hidden, Z * K * 3)
    params = ref.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, Z + model.action_dim)))

    def loss(p, b, k):
        z = b["mu"] + jnp.exp(b["logvar"] / 2) * jax.random.normal(k, b["mu"].shape)
        y = ref.apply(p, jnp.concatenate([z[:, :-1], b["actions"][:, :-1]], -1))
        return loss_from_head(y, z[:, 1:], Z, K), {}

    return jax_runner(loss, params, batch)


def torch_runner(batch: dict, model: MDNRNN):
    """The same network's train step in PyTorch, or None without torch."""
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

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lengths", type=int, nargs="+", default=[999, 100])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--unroll", type=int, nargs="+", default=[1])
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    model = MDNRNN()
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; MDNRNN z=32 a=3 H=256 K=5")
    print(f"{'impl':<24}{'B x T':>10}{'s/step':>10}{'seq-steps/s':>14}{'vs torch':>10}")
    for T in args.lengths:
        batch = make_batch(rng, args.batch, T, model.z_dim, model.action_dim)
        runners = {f"dreamjax unroll={u}": dreamjax_runner(batch, model, u) for u in args.unroll}
        runners["flax nn.RNN(LSTMCell)"] = flax_runner(batch, model)
        t_runner = None if args.no_torch else torch_runner(batch, model)
        if t_runner is not None:
            runners["torch nn.LSTM"] = t_runner
        best = best_times(runners, args.reps)
        t_torch = best.get("torch nn.LSTM")
        n = args.batch * T
        for name, t in best.items():
            ratio = f"{t_torch / t:.2f}x" if t_torch is not None else "n/a"
            print(f"{name:<24}{f'{args.batch}x{T}':>10}{t:>10.3f}{n / t:>14,.0f}{ratio:>10}")


if __name__ == "__main__":
    main()
