"""Does M know what steering does? From real states along recorded road-follower episodes,
hold steer -1 / 0 / +1 (env gas 0.2, no brake) for k steps, in the real game (the episode is
replayed from its seed to the branch step) and in M (teacher-forced to the branch step, then
open loop). Prints, per k, the road offset difference (+1 minus -1, pixels of the 64-px frame,
`dreamjax.data.policies.road_offset`) of the real frame, of V's reconstruction of it and of V's
decoding of M's prediction, and M's z difference projected on V's real one (slope, cosine).

    python actsens.py M_RUN EPISODE_RUN [M_DIR]   # M_DIR: e.g. an iterative round's mdnrnn/
                                                  # TAU=1.15: 32 sampled dreams averaged in z
                                                  # STEER=0.8: hold ±0.8 instead of ±1
                                                  # REPEAT=4: a run made with --action-repeat 4
                                                  #   (steps and K count agent steps; the
                                                  #   branch steps are 120/300/500 frames)
                                                  # K=1,2,5: the hold lengths
"""

import glob
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.agent import encode_frames, m_step, render
from dreamjax.config import PROFILES
from dreamjax.data.policies import road_offset
from dreamjax.envs.carracing import make_env
from dreamjax.models.mdnrnn import mixture_mean, sample_next_z
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder

TAU = float(os.environ.get("TAU", "0"))
STEER = float(os.environ.get("STEER", "1"))
REPEAT = int(os.environ.get("REPEAT", "1"))
K = tuple(int(k) for k in os.environ.get("K", "5,10,20").split(","))
STARTS = tuple(t // REPEAT for t in (120, 300, 500))
SAMPLES = 32


def real_frames(env, seed, actions, t, a_b):
    """The real frames k in K steps after holding a_b from step t of the replayed episode."""
    obs, _ = env.reset(seed=seed)
    for i in range(t):
        obs, *_ = env.step(actions[i])
    start = obs
    out = {}
    for k in range(1, max(K) + 1):
        obs, *_ = env.step(a_b)
        if k in K:
            out[k] = obs
    return start, out


def dream_z(wm, step, mu, actions, t, a_b):
    """M's z k in K steps after holding a_b from step t (teacher-forced before)."""
    lstm = wm.mdn.initial_state(())
    for i in range(t):
        lstm, _ = step(lstm, mu[i], jnp.asarray(actions[i]), jnp.float32(i == 0))
    z, n = mu[t], SAMPLES if TAU > 0 else 1
    lstm = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), lstm)
    z = jnp.broadcast_to(z, (n, *z.shape))
    a = jnp.broadcast_to(jnp.asarray(a_b), (n, 3))
    out_z = {}
    for k in range(1, max(K) + 1):
        lstm, out = step(lstm, z, a, jnp.float32(0.0))
        if TAU > 0:
            keys = jax.random.split(jax.random.key(1000 * t + k), n)
            z = jax.vmap(lambda kk, o: sample_next_z(kk, o, TAU))(keys, out)
        else:
            z = mixture_mean(out)
        if k in K:
            out_z[k] = z.mean(0)
    return out_z


def main():
    run = RunFolder(sys.argv[1])
    m_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    wm = artifacts.load_world_model(run, PROFILES["laptop"]().controller, m_dir)
    files = sorted(glob.glob(f"{sys.argv[2]}/episodes/ep_*.npz"))[1:40:2]  # the follower's
    env = make_env(fast=True, action_repeat=REPEAT)
    step = jax.jit(lambda lstm, z, a, r: m_step(wm.mdn, wm.mdn_params, lstm, z, a, r))
    rows, zrows = [], []
    for f in files:
        d = np.load(f)
        acts, seed = d["actions"], int(d["seed"])
        mu, _ = encode_frames(wm.vae, wm.vae_params, jnp.asarray(d["frames"]))
        for t in STARTS:
            if t + max(K) >= len(acts):
                continue
            zr, zm = {}, {}
            for s in (-1.0, 0.0, 1.0):
                a_b = np.array([s * STEER, -0.6, -1.0], np.float32)
                start, real = real_frames(env, seed, acts, t, a_b)
                assert np.array_equal(start, d["frames"][t]), f"{f}: replay diverged"
                dz = dream_z(wm, step, mu, acts, t, a_b)
                for k in K:
                    zr[s, k] = np.asarray(encode_frames(wm.vae, wm.vae_params,
                                                        jnp.asarray(real[k][None]))[0][0])
                    rec = render(wm.vae, wm.vae_params, zr[s, k][None])[0]
                    dec = render(wm.vae, wm.vae_params, dz[k][None])[0]
                    zm[s, k] = np.asarray(dz[k])
                    rows.append((s, k, road_offset(real[k]), road_offset(rec), road_offset(dec)))
            for k in K:
                dr, dm = zr[1.0, k] - zr[-1.0, k], zm[1.0, k] - zm[-1.0, k]
                zrows.append((k, dr @ dm / (dr @ dr),
                              dr @ dm / np.linalg.norm(dr) / np.linalg.norm(dm)))
    rows, zrows = np.array(rows), np.array(zrows)
    print(f"M {m_dir or sys.argv[1]}, tau {TAU}, steer ±{STEER}, repeat {REPEAT}, "
          f"{len(zrows) // len(K)} branch states")
    for k in K:
        diff = {}
        for col, name in ((2, "real"), (3, "V recon"), (4, "M")):
            lo = rows[(rows[:, 0] == -1) & (rows[:, 1] == k), col]
            hi = rows[(rows[:, 0] == 1) & (rows[:, 1] == k), col]
            diff[name] = np.mean(hi - lo)
        z = zrows[zrows[:, 0] == k]
        print(f"k={k:2d}: offset(+1) - offset(-1): real {diff['real']:+.1f}, V recon "
              f"{diff['V recon']:+.1f}, M {diff['M']:+.1f}; M's z response on the real one: "
              f"slope {z[:, 1].mean():+.2f}, cosine {z[:, 2].mean():+.2f}")


if __name__ == "__main__":
    main()
