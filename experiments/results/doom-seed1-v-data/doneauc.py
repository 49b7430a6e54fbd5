"""Does M's done head know why the player dies? AUC of its teacher-forced done logit for
"the episode ends within k steps" on fresh §2.2 random-policy episodes (training-side seeds),
against the AUC of the step index alone (a clock).  usage: doneauc.py RUN [N]"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import encode_frames, m_step
from dreamjax.config import DOOM_PROFILES
from dreamjax.data.policies import DoomRandomPolicy
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import real_pool
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.run import RunFolder


def auc(score, y):
    r = np.argsort(np.argsort(score)) + 1.0
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


if __name__ == "__main__":
    run = RunFolder(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    cfg = dataclasses.replace(DOOM_PROFILES["laptop"](), workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    model, mp = wm.mdn, wm.mdn_params

    @jax.jit
    def logits(mu, a):
        rs = jnp.zeros((mu.shape[0],)).at[0].set(1.0)

        def body(s, xs):
            s, out = m_step(model, mp, s, *xs)
            return s, out.done_logit

        return jax.lax.scan(body, model.initial_state(()), (mu, a, rs))[1]

    with real_pool(cfg, 2100, DOOM) as pool:
        pol = DoomRandomPolicy(777, pool.num_slots)
        res = pool.run([EpisodeSpec(seed=3_200_000 + i, tag=i) for i in range(n)], pol, steps=True)
    L, T, Y1, Y10 = [], [], [], []
    for r in res:
        mu, _ = encode_frames(wm.vae, wm.vae_params, jnp.asarray(r.obs))
        lg = np.asarray(logits(mu, jnp.asarray(r.actions, jnp.float32)))
        t = np.arange(len(lg))
        end = len(lg) - 1
        L.append(lg)
        T.append(t)
        Y1.append(t == end)
        Y10.append(t >= end - 9)
    L, T, Y1, Y10 = map(np.concatenate, (L, T, Y1, Y10))
    lens = [len(r.actions) for r in res]
    print(
        f"{sys.argv[1]}: {n} episodes, life {np.mean(lens):.0f} ± {np.std(lens):.0f}; "
        f"AUC last step: M {auc(L, Y1):.3f} clock {auc(T, Y1):.3f}; "
        f"last 10 steps: M {auc(L, Y10):.3f} clock {auc(T, Y10):.3f}; "
        f"P(done logit > 0) on last step {np.mean(L[Y1] > 0):.2f}, "
        f"elsewhere {np.mean(L[~Y10] > 0):.4f}"
    )
