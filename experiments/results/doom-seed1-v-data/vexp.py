"""V screen: train ConvVAE on a run's episodes for a fixed wall time; report held-out losses.

usage: python vexp.py RUN BATCH LR SECONDS NAME (SECONDS 0: the run's own V); writes
/tmp/vexp/NAME.json and NAME.png (originals over reconstructions). The last 10 episodes are held
out; fire pixels are bright yellow ones (R > 0.75, G > 0.55, B < 0.6)."""

import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from dreamjax.data.batches import FrameBatches
from dreamjax.data.episodes import load_episode
from dreamjax.models.vae import ConvVAE, init_vae, vae_loss_fn

matplotlib.use("Agg")
import matplotlib.pyplot as plt

run, batch, lr, seconds, name = (
    sys.argv[1],
    int(sys.argv[2]),
    float(sys.argv[3]),
    float(sys.argv[4]),
    sys.argv[5],
)
files = sorted(Path(run, "episodes").glob("ep_*.npz"))
train, held = files[:-10], files[-10:]
hx = np.concatenate([load_episode(f)["frames"][::5] for f in held])[:600]
model = ConvVAE(z_dim=64)
params = jax.jit(init_vae, static_argnums=1)(jax.random.PRNGKey(0), 64)
tx = optax.adam(lr)
opt = tx.init(params)
loss_fn = functools.partial(vae_loss_fn, model=model, kl_tolerance=0.5)


@jax.jit
def step(params, opt, b, k):
    (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(params, b, k)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, m


@jax.jit
def recon(params, x):
    xf = x.astype(jnp.float32) / 255.0
    mu, logvar = model.apply(params, xf, method=model.encode)
    return model.apply(params, mu, method=model.decode)


it = iter(FrameBatches(train, batch, 0, 64))
if seconds == 0:
    from dreamjax import checkpoint

    params = checkpoint.restore_params(Path(run, "vae", "params"))
    m = {"r_loss": 0.0}
t0 = time.time()
n = 0
key = jax.random.PRNGKey(1)
while time.time() - t0 < seconds:
    key, k = jax.random.split(key)
    params, opt, m = step(params, opt, jnp.asarray(next(it)), k)
    n += 1
m = jax.tree.map(float, m)
rs = np.concatenate([np.asarray(recon(params, hx[i : i + 100])) for i in range(0, len(hx), 100)])
x = hx.astype(np.float32) / 255.0
err = ((rs - x) ** 2).sum(-1)
fire = (x[..., 0] > 0.75) & (x[..., 1] > 0.55) & (x[..., 2] < 0.6)
out = {
    "name": name,
    "batch": batch,
    "lr": lr,
    "steps": n,
    "frames": n * batch,
    "seconds": seconds,
    "train_r_loss": m["r_loss"],
    "held_r_loss": float(err.sum((1, 2)).mean()),
    "fire_px": int(fire.sum()),
    "fire_mse": float(err[fire].mean() / 3),
    "all_mse": float(err.mean() / 3),
}
fc = fire.sum((1, 2))
small = np.where((fc >= 4) & (fc <= 60))[0]
idx = np.concatenate([np.argsort(-fc)[:4], small[:: max(1, len(small) // 8)][:8]])
out["small_fire_mse"] = float(err[fire & ((fc >= 4) & (fc <= 60))[:, None, None]].mean() / 3)
print(json.dumps(out))
Path(f"/tmp/vexp/{name}.json").write_text(json.dumps(out))
fig, ax = plt.subplots(2, len(idx), figsize=(2 * len(idx), 4))
for j, i in enumerate(idx):
    ax[0, j].imshow(x[i])
    ax[1, j].imshow(np.clip(rs[i], 0, 1))
    ax[0, j].axis("off")
    ax[1, j].axis("off")
fig.savefig(f"/tmp/vexp/{name}.png", dpi=60)
