"""Ensemble disagreement on the data vs on a dream-trained C's own real episodes (CarRacing)."""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import WorldModelPolicy, encode_frames
from dreamjax.config import ExperimentConfig
from dreamjax.data.episodes import load_series
from dreamjax.dream.fidelity import teacher_forced
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import CARRACING, real_pool
from dreamjax.pipeline.run import RunFolder


def main():
    run = RunFolder(sys.argv[1])
    cfg = dataclasses.replace(ExperimentConfig(), train_in="dream", workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    model, members, _, K = artifacts.load_mdnrnn(run)
    tf = jax.jit(
        jax.vmap(lambda p, mu, a: teacher_forced(model, p, mu, a), in_axes=(0, None, None))
    )

    def dis(mu, a):
        r, logit, z = tf(members, jnp.asarray(mu, jnp.float32), jnp.asarray(a, jnp.float32))
        dz = np.asarray(jnp.std(z, axis=0).mean(-1))
        dp = np.asarray(jnp.std(jax.nn.sigmoid(logit), axis=0))
        return dz, dp, np.asarray(jax.nn.sigmoid(logit).mean(0))

    D, P = [], []
    for f in sorted(Path(run.path("encode")).glob("ep_*.npz"))[:30]:
        s = load_series(f)
        dz, dp, _ = dis(s["mu"], s["actions"])
        D.append(dz)
        P.append(dp)
    D, P = np.concatenate(D), np.concatenate(P)
    def q(x):
        return " ".join(f"{np.quantile(x, p):.3f}" for p in (0.5, 0.9, 0.99, 0.999))
    print("data  z-dis q50/90/99/99.9:", q(D), "| p(tile)-dis:", q(P))
    params, _ = artifacts.load_controller_params(
        artifacts.final_controller_path(cfg, run), wm.spec
    )
    policy = WorldModelPolicy(wm, jax.tree.map(lambda x: x[None], params), seed=0)
    with real_pool(cfg, 1000, CARRACING) as pool:
        res = pool.run(
            [EpisodeSpec(seed=3_000_000 + i, tag=0) for i in range(3)], policy, steps=True
        )
    thr = np.quantile(D, 0.99)
    for r in res:
        mu, _ = encode_frames(wm.vae, wm.vae_params, jnp.asarray(r.obs))
        dz, dp, pt = dis(mu, r.actions)
        first = int(np.argmax(dz > thr)) if (dz > thr).any() else -1
        print(
            f"real C ep: return {r.total_reward:.1f} z-dis q50/90/99: {q(dz)} "
            f"frac>data q99 {np.mean(dz > thr):.2f} first step {first}; "
            f"mean P(tile) {pt.mean():.2f} real tile frac {np.mean(np.asarray(r.rewards) > 0):.2f}"
        )


def dream_part():
    from dreamjax.dream.ensemble import member
    from dreamjax.dream.env import DreamEnv
    from dreamjax.dream.rollout import trajectory

    run = RunFolder(sys.argv[1])
    cfg = dataclasses.replace(ExperimentConfig(), train_in="dream", workers=2)
    wm = artifacts.load_world_model(run, cfg.controller)
    model, members, _, K = artifacts.load_mdnrnn(run)
    params, _ = artifacts.load_controller_params(
        artifacts.final_controller_path(cfg, run), wm.spec
    )
    dcfg = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=1.15))
    dp = member(artifacts.config_dream_params(dcfg, run, wm), 0)
    env, ctrl = DreamEnv(), wm.spec.controller
    tf = jax.jit(
        jax.vmap(lambda p, mu, a: teacher_forced(model, p, mu, a), in_axes=(0, None, None))
    )
    for k in range(3):
        states, rewards, _ = jax.jit(
            lambda key: trajectory(key, env, dp, ctrl.apply, params, 1000)
        )(jax.random.key(k))
        obs = jax.vmap(lambda s: env.get_obs(s, dp))(states)
        acts = jax.vmap(lambda o: ctrl.apply(params, o))(obs)
        r, logit, z = tf(members, states.z, acts)
        dz = np.asarray(jnp.std(z, axis=0).mean(-1))
        print(
            f"dream ep {k}: return {float(np.sum(rewards)):.1f} z-dis q10/50/90/99: "
            + " ".join(f"{np.quantile(dz, p):.3f}" for p in (0.1, 0.5, 0.9, 0.99))
            + f" P(tile) per member {np.asarray(jax.nn.sigmoid(logit).mean(1)).round(2)}"
        )


if __name__ == "__main__":
    dream_part() if len(sys.argv) > 2 else main()
