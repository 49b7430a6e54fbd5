"""Doom: ensemble disagreement on the data vs along dreams of a held button (usage: disdoom.py RUN
[TAU]); the ensemble run folder's members, each world in turn, every member stepped on its z."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import m_step
from dreamjax.data.episodes import load_series
from dreamjax.models.mdnrnn import sample_next_z
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder

run = RunFolder(sys.argv[1])
tau = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
model, members, _, K = artifacts.load_mdnrnn(run)
def mean(out):
    return jnp.sum(jnp.exp(out.logpi) * out.mu, axis=-1)


@jax.jit
def tf(mu, a):
    restart = jnp.zeros((mu.shape[0],)).at[0].set(1.0)

    def one(p):
        def body(s, xs):
            z, aa, rs = xs
            s, out = m_step(model, p, s, z, aa, rs)
            return s, (mean(out), out.done_logit)

        return jax.lax.scan(body, model.initial_state(()), (mu, a, restart))[1]

    zm, dl = jax.vmap(one)(members)
    return jnp.std(zm, 0).mean(-1), dl


D, DL = [], []
for f in sorted(Path(run.path("encode")).glob("ep_*.npz"))[:60]:
    s = load_series(f)
    d, dl = tf(jnp.asarray(s["mu"], jnp.float32), jnp.asarray(s["actions"], jnp.float32))
    D.append(np.asarray(d))
D = np.concatenate(D)
qs = {p: float(np.quantile(D, p)) for p in (0.5, 0.9, 0.99, 0.999)}
print("data z-dis quantiles", {k: round(v, 4) for k, v in qs.items()})
mu0, lv0 = artifacts.load_initial_latents(run)


@jax.jit
def dream(key, a_const, world):
    """world member's dream with a held action; all members stepped on the same z, a."""
    k0, key = jax.random.split(key)
    i = jax.random.randint(k0, (), 0, mu0.shape[0])
    z = jnp.asarray(mu0)[i] + jnp.exp(jnp.asarray(lv0)[i] / 2) * jax.random.normal(
        key, (mu0.shape[1],)
    )
    st = jax.vmap(lambda _: model.initial_state(()))(jnp.arange(K))
    a = jnp.array([a_const], jnp.float32)

    def body(c, k):
        st, z, rs, alive, t = c
        st, outs = jax.vmap(lambda p, s: m_step(model, p, s, z, a, rs))(members, st)
        dis = jnp.std(mean(outs), 0).mean()
        wo = jax.tree.map(lambda x: x[world], outs)
        z = sample_next_z(k, wo, tau)
        done = wo.done_logit > 0
        rec = (dis * alive, alive)
        alive = alive * (1 - done)
        return (st, z, jnp.float32(0), alive, t + 1), rec

    _, (dis, alive) = jax.lax.scan(
        body, (st, z, jnp.float32(1), jnp.float32(1), 0), jax.random.split(key, 2100)
    )
    return dis, alive


for a_const, name in ((-1.0, "LEFT"), (0.0, "none"), (1.0, "RIGHT")):
    for w in range(K):
        lives, over99, first = [], [], []
        for k in range(8):
            dis, alive = dream(jax.random.key(100 + k), a_const, w)
            dis, alive = np.asarray(dis), np.asarray(alive)
            L = int(alive.sum())
            lives.append(L)
            d = dis[:L]
            over99.append(np.mean(d > qs[0.99]))
            f = np.argmax(d > qs[0.99]) if (d > qs[0.99]).any() else L
            first.append(f)
        print(
            f"held {name} world {w}: life {np.mean(lives):.0f}, "
            f"frac steps > data q99 {np.mean(over99):.2f}, "
            f"first step > q99 median {np.median(first):.0f}"
        )
