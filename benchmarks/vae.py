"""V training throughput: Flax reference vs fast ConvVAE vs PyTorch, same machine, same run.

Train = one full jitted Adam step (loss, gradients, update) on a batch of uint8 frames;
frames/s after warm-up, best and median over timed steps; the train rows are timed in
alternation (one step of each per round) so that machine load hits them alike. Also encode
frames/s (batch 1000) for the fast impl.
Run: `python benchmarks/vae.py [--steps 10] [--batch 100] [--no-torch]`.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax.models.vae import ConvVAE, init_vae, vae_loss_fn


def _time(fn, steps: int) -> tuple[float, float]:
    """Seconds per call of fn() (already warmed up): (best, median)."""
    return _time_interleaved({"fn": (fn, steps)})["fn"]


def _time_interleaved(fns: dict) -> dict[str, tuple[float, float]]:
    """{name: (fn, steps)} -> {name: (best, median) seconds per call}, timing the (warmed up)
    fns in alternation, one call each per round, so that load changes hit all of them alike."""
    ts = {name: [] for name in fns}
    for r in range(max(steps for _, steps in fns.values())):
        for name, (fn, steps) in fns.items():
            if r < steps:
                t = time.perf_counter()
                fn()
                ts[name].append(time.perf_counter() - t)
    return {name: (float(np.min(t)), float(np.median(t))) for name, t in ts.items()}


def jax_train(impl: str, frames: np.ndarray):
    """A warmed-up callable: one Adam step of ConvVAE(impl) on frames (B, 64, 64, 3) uint8."""
    model = ConvVAE(z_dim=32, impl=impl)
    params = init_vae(jax.random.PRNGKey(0), 32, impl=impl)
    tx = optax.adam(1e-4)
    loss_fn = functools.partial(vae_loss_fn, model=model, kl_tolerance=0.5)

    @jax.jit
    def step(params, opt_state, batch, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, tx.init(params)]
    batch = jnp.asarray(frames)
    key = jax.random.PRNGKey(1)

    def run():
        state[0], state[1], loss = step(state[0], state[1], batch, key)
        loss.block_until_ready()

    for _ in range(3):
        run()
    return run


def jax_encode(frames: np.ndarray, steps: int) -> tuple[float, float]:
    """(best, median) seconds per fast-impl encode of frames (B, 64, 64, 3) uint8."""
    model = ConvVAE(z_dim=32, impl="fast")
    params = init_vae(jax.random.PRNGKey(0), 32, impl="fast")

    @jax.jit
    def encode(params, batch):
        return model.apply(params, batch.astype(jnp.float32) / 255.0, method=ConvVAE.encode)

    batch = jnp.asarray(frames)

    def run():
        jax.block_until_ready(encode(params, batch))

    for _ in range(2):
        run()
    return _time(run, steps)


def torch_train(frames: np.ndarray):
    """A warmed-up callable: one Adam step of the same VAE in PyTorch (on the GPU when JAX runs
    on one), or None without torch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.manual_seed(0)

    class TorchVAE(nn.Module):
        def __init__(self, z=32):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, 32, 4, 2),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, 2),
                nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2),
                nn.ReLU(),
                nn.Conv2d(128, 256, 4, 2),
                nn.ReLU(),
            )
            self.mu, self.logvar = nn.Linear(1024, z), nn.Linear(1024, z)
            self.fc = nn.Linear(z, 1024)
            self.dec = nn.Sequential(
                nn.ConvTranspose2d(1024, 128, 5, 2),
                nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 5, 2),
                nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 6, 2),
                nn.ReLU(),
                nn.ConvTranspose2d(32, 3, 6, 2),
                nn.Sigmoid(),
            )

        def forward(self, x):
            h = self.enc(x).flatten(1)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.dec(self.fc(z)[:, :, None, None]), mu, logvar

    dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    model = TorchVAE().to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_348_547, n_params
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_u8 = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().to(dev)  # NCHW

    def run():
        x = x_u8.float() / 255.0
        recon, mu, logvar = model(x)
        r = (x - recon).pow(2).sum(dim=(1, 2, 3)).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        loss = r + kl.clamp(min=16.0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        run()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--batch", type=int, default=100, help="train batch size")
    p.add_argument("--encode-batch", type=int, default=1000, help="encode batch size")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    p.add_argument("--no-reference", action="store_true", help="skip the slow reference row")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    enc_frames = rng.integers(0, 256, (args.encode_batch, 64, 64, 3), dtype=np.uint8)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    print(f"jax {jax.__version__} backend={jax.default_backend()}", end="")
    try:
        import torch

        print(f", torch {torch.__version__} threads={torch.get_num_threads()}")
    except ImportError:
        print(", torch not installed (row skipped)")

    train = {}
    if not args.no_torch and (run := torch_train(frames)) is not None:
        train["pytorch"] = (run, args.steps)
    train["flax fast"] = (jax_train("fast", frames), args.steps)
    if not args.no_reference:
        train["flax reference"] = (jax_train("reference", frames), max(2, args.steps // 3))
    rows = [("train", name, args.batch, t) for name, t in _time_interleaved(train).items()]
    rows.append(("encode", "flax fast", args.encode_batch, jax_encode(enc_frames, args.steps)))

    print(
        f"\n{'what':7s} {'impl':15s} {'batch':>6s} {'frames/s best':>14s} {'frames/s median':>16s}"
    )
    for what, impl, b, (best, med) in rows:
        print(f"{what:7s} {impl:15s} {b:6d} {b / best:14.1f} {b / med:16.1f}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
