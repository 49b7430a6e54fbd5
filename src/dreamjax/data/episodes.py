"""Episode store, random-policy collection, streaming frame batches, latent series (PAPER.md §1.2).

Episodes on disk: one `ep_{index:06d}.npz` per episode in an episodes folder, written atomically
(temporary file in the same folder, then `os.replace`), holding

    frames      (T, 64, 64, 3) uint8    frames[t] is the observation at which actions[t] was taken
    actions     (T, 3) float32          raw controller outputs in [-1, 1]
    rewards     (T,) float32            reward that followed actions[t]
    terminated  (T,) bool               the env terminated after actions[t]
    truncated   (T,) bool               the time limit ended the episode after actions[t]
    seed        int                     env reset seed
    policy      str                     collection policy name

Series (the output of `encode_series`): one `ep_{index:06d}.npz` per episode with `mu`, `logvar`
(T, Z) float16, the same `actions`, `rewards`, `terminated`, `truncated`, `seed`, and `vae_id`.

This module is NumPy only at import time (no model code): `encode_series` takes the encoder as a
function.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dreamjax import io
from dreamjax.errors import ArtifactError
from dreamjax.config import CollectConfig
from dreamjax.envs.pool import EnvPool, EpisodeResult, EpisodeSpec

FRAME_SHAPE = (64, 64, 3)
ACTION_DIM = 3
_EP_RE = re.compile(r"^ep_(\d{6})\.npz$")
_STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
COLLECT_MANIFEST = "collect.json"
SERIES_MANIFEST = "series.json"


class EpisodeError(ArtifactError):
    """A missing, truncated, corrupt or malformed episode/series file; message `<path>: <what>`."""


# ----------------------------------------------------------------------------- files


def episode_path(folder: str | os.PathLike, index: int) -> Path:
    """`folder/ep_{index:06d}.npz`."""
    return Path(folder) / f"ep_{index:06d}.npz"


def episode_index(path: str | os.PathLike) -> int:
    """The index in an `ep_{index:06d}.npz` file name."""
    m = _EP_RE.match(Path(path).name)
    if m is None:
        raise EpisodeError(f"{path}: not an ep_XXXXXX.npz file name")
    return int(m.group(1))


def list_episodes(folder: str | os.PathLike) -> list[Path]:
    """Episode (or series) files `ep_XXXXXX.npz` in `folder`, sorted by index."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such episodes folder")
    return sorted((p for p in folder.iterdir() if _EP_RE.match(p.name)), key=episode_index)


def save_episode(path: str | os.PathLike, episode: dict) -> None:
    """Validate and atomically write one episode file (compressed npz)."""
    path = Path(path)
    ep = _validate_episode(path, {k: np.asarray(v) for k, v in episode.items()})
    io.save_npz(path, compressed=True, **ep)


def _open_npz(path: Path) -> dict:
    """All arrays of an npz file, or an `EpisodeError` for a missing/truncated/corrupt one."""
    try:
        return io.load_npz(path)
    except io.ArtifactError as e:
        raise EpisodeError(str(e)) from None


def _check(path: Path, ok: bool, what: str) -> None:
    if not ok:
        raise EpisodeError(f"{path}: {what}")


def _check_steps(path: Path, d: dict, T: int) -> None:
    """Validate actions/rewards/terminated/truncated for T steps."""
    a, r = d["actions"], d["rewards"]
    _check(path, a.shape == (T, ACTION_DIM) and a.dtype == np.float32,
           f"actions must be ({T}, 3) float32, got {a.shape} {a.dtype}")
    _check(path, r.shape == (T,) and r.dtype == np.float32,
           f"rewards must be ({T},) float32, got {r.shape} {r.dtype}")
    for k in ("terminated", "truncated"):
        _check(path, d[k].shape == (T,) and d[k].dtype == np.bool_,
               f"{k} must be ({T},) bool, got {d[k].shape} {d[k].dtype}")
    _check(path, bool(np.all(np.isfinite(a))) and bool(np.all(np.isfinite(r))),
           "non-finite actions or rewards")


def _validate_episode(path: Path, d: dict) -> dict:
    missing = sorted({"frames", *_STEP_KEYS, "seed", "policy"} - set(d))
    _check(path, not missing, f"missing keys {missing}")
    f = d["frames"]
    _check(path, f.ndim == 4 and f.shape[1:] == FRAME_SHAPE and f.dtype == np.uint8,
           f"frames must be (T, 64, 64, 3) uint8, got {f.shape} {f.dtype}")
    T = f.shape[0]
    _check(path, T >= 1, "empty episode (T = 0)")
    _check_steps(path, d, T)
    _check(path, d["seed"].shape == () and np.issubdtype(d["seed"].dtype, np.integer),
           f"seed must be an integer scalar, got {d['seed'].shape} {d['seed'].dtype}")
    _check(path, d["policy"].shape == () and d["policy"].dtype.kind == "U",
           "policy must be a string")
    out = {k: d[k] for k in ("frames", *_STEP_KEYS)}
    out["seed"] = np.asarray(int(d["seed"]), np.int64)
    out["policy"] = np.asarray(str(d["policy"]))
    return out


def load_episode(path: str | os.PathLike) -> dict:
    """A validated episode: arrays as in the module docstring, `seed` int, `policy` str.

    Raises `EpisodeError("<path>: <problem>")` for missing, truncated, corrupt or malformed files.
    """
    path = Path(path)
    d = _validate_episode(path, _open_npz(path))
    d["seed"], d["policy"] = int(d["seed"]), str(d["policy"])
    return d


def load_series(path: str | os.PathLike) -> dict:
    """A validated series file: `mu`, `logvar` (T, Z) float16, step arrays, `seed`, `vae_id`."""
    path = Path(path)
    d = _open_npz(path)
    missing = sorted({"mu", "logvar", *_STEP_KEYS, "seed", "vae_id"} - set(d))
    _check(path, not missing, f"missing keys {missing}")
    mu, lv = d["mu"], d["logvar"]
    _check(path, mu.ndim == 2 and mu.dtype == np.float16 and lv.shape == mu.shape
           and lv.dtype == np.float16,
           f"mu/logvar must be (T, Z) float16, got {mu.shape} {mu.dtype} / {lv.shape} {lv.dtype}")
    _check(path, mu.shape[0] >= 1, "empty series (T = 0)")
    _check_steps(path, d, mu.shape[0])
    d["seed"], d["vae_id"] = int(d["seed"]), str(d["vae_id"])
    return d


def episode_length(path: Path) -> int:
    """T of an episode or series file, reading only its `rewards` member; `EpisodeError` if
    unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(z["rewards"].shape[0])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as e:
        raise EpisodeError(f"{path}: unreadable npz ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- policies


def episode_seed(master_seed: int, index: int) -> int:
    """Env reset seed of collection episode `index`: a hash of (master seed, index) in [0, 2^31).

    Distinct indices give independent seeds, so a rerun that adds episodes never repeats one.
    """
    ss = np.random.SeedSequence(entropy=int(master_seed), spawn_key=(int(index), 0))
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def _episode_rng(master_seed: int, index: int) -> np.random.Generator:
    """The collection policy's per-episode random stream (independent of the env seed)."""
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(master_seed), spawn_key=(int(index), 1)))


class RandomModelPolicy:
    """The reference code's data-collection policy (PAPER.md §0 "random policy", §1.2).

    As in `carracing/extract.py:27-36` and `model.py:142-152`: for every episode draw
    s ~ U(0, 0.01) and set every parameter of a randomly initialised V encoder, M's LSTM and the
    controller to Cauchy x s; then at each step z = mu + exp(logvar / 2) * eps from V's encoder
    on frame/255, a = tanh(W [z, h] + b) (PAPER.md §1.5), and the LSTM (forget bias 1.0, input
    [z, env action], PAPER.md §1.4) consumes (z_t, a_t) after acting, starting from zeros.

    Why the real random network and not a cheap stand-in: measured on real frames, the random
    encoder's logvar explodes for most s (|z| ~ 1e2..1e10 once s > ~0.0015), so in most episodes
    the actions are saturated, step-to-step random +-1 noise, and only small-s episodes give
    small, frame-dependent actions. A random projection of the frame does not reproduce that
    mixture. The real encoder (JAX, jitted, batch 1) costs 0.6-1.7 ms per frame on a busy 2-core
    CPU next to 3-5 ms per env step, so it is affordable; it runs in the main process, so with
    many workers the policy, not the envs, bounds collection (`brownian` costs ~0.03 ms).

    Differences from the reference: V's decoder and M's MDN head are not drawn (they do not
    influence actions); the encoder runs in float32 and its outputs are made finite (logvar
    clipped to +-200, infinities to +-1e30) and the rest runs in float64, so the reference's
    float32 inf - inf NaN actions cannot occur. Each slot is computed on its own (batch 1), so
    an episode's actions do not depend on how many slots run beside it (resume reproduces it).
    The random streams are NumPy generators seeded from (master seed, episode index).
    """

    name = "paper"
    Z, H = 32, 256
    CONVS = ((3, 32), (32, 64), (64, 128), (128, 256))  # 4x4 stride 2 valid (PAPER.md §1.3)

    def __init__(self, master_seed: int, num_slots: int):
        import jax

        self.master_seed = int(master_seed)
        self.enc = jax.jit(_random_encoder)
        self.params: list = [None] * num_slots
        self.lstm: list = [None] * num_slots
        self.rngs: list = [None] * num_slots
        self.h = np.zeros((num_slots, self.H))
        self.c = np.zeros((num_slots, self.H))

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        import jax.numpy as jnp

        rng = _episode_rng(self.master_seed, spec.tag)
        s = rng.uniform(0.0, 0.01)

        def cauchy(*shape):
            return rng.standard_cauchy(shape) * s

        ctrl_b, ctrl_w = cauchy(ACTION_DIM), cauchy(self.Z + self.H, ACTION_DIM)
        convs = [(jnp.asarray(cauchy(4, 4, ci, co), jnp.float32),
                  jnp.asarray(cauchy(co), jnp.float32)) for ci, co in self.CONVS]
        dense = [(jnp.asarray(cauchy(1024, self.Z), jnp.float32),
                  jnp.asarray(cauchy(self.Z), jnp.float32)) for _ in range(2)]
        self.params[slot] = (convs, dense)
        self.lstm[slot] = (ctrl_w, ctrl_b, cauchy(self.Z + ACTION_DIM + self.H, 4 * self.H),
                           cauchy(4 * self.H))
        self.rngs[slot] = rng
        self.h[slot] = 0.0
        self.c[slot] = 0.0

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), ACTION_DIM), np.float32)
        for s in np.flatnonzero(active):
            mu, logvar = (np.asarray(v, np.float64) for v in
                          self.enc(self.params[s], frames[s].astype(np.float32) / 255.0))
            mu = np.nan_to_num(mu, nan=0.0, posinf=1e30, neginf=-1e30)
            logvar = np.clip(np.nan_to_num(logvar, nan=0.0), -200.0, 200.0)
            z = mu + np.exp(logvar / 2.0) * self.rngs[s].standard_normal(self.Z)  # (Z,)
            w, b, k, kb = self.lstm[s]
            a = np.tanh(np.concatenate([z, self.h[s]]) @ w + b)  # (3,)
            env_a = np.array([a[0], (a[1] + 1.0) / 2.0, np.clip(a[2], 0.0, 1.0)])
            i, j, f, o = np.split(np.concatenate([z, env_a, self.h[s]]) @ k + kb, 4)
            self.c[s] = self.c[s] * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
            self.h[s] = np.tanh(self.c[s]) * _sigmoid(o)
            out[s] = a
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _random_encoder(params, frame):
    """V's encoder (PAPER.md §1.3) on one (64, 64, 3) float frame -> (mu (Z,), logvar (Z,))."""
    import jax

    convs, ((wm, bm), (wl, bl)) = params
    x = frame[None]  # (1, 64, 64, 3)
    for k, b in convs:
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    x = x.reshape(-1)  # (1024,)
    return x @ wm + bm, x @ wl + bl


class BrownianPolicy:
    """Actions follow a clipped random walk in [-1, 1]^3: a_0 ~ U(-1, 1)^3,
    a_{t+1} = clip(a_t + N(0, 0.1^2 I), -1, 1); seeded per episode from (master seed, index)."""

    name = "brownian"
    step_std = 0.1

    def __init__(self, master_seed: int, num_slots: int):
        self.master_seed = int(master_seed)
        self.rngs: list[np.random.Generator | None] = [None] * num_slots
        self.a = np.zeros((num_slots, ACTION_DIM), np.float32)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.rngs[slot] = _episode_rng(self.master_seed, spec.tag)
        self.a[slot] = self.rngs[slot].uniform(-1.0, 1.0, ACTION_DIM)

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        out = self.a.copy()
        for s in np.flatnonzero(active):
            step = self.rngs[s].normal(0.0, self.step_std, ACTION_DIM)
            self.a[s] = np.clip(self.a[s] + step, -1.0, 1.0)
        return out


POLICIES = {"paper": RandomModelPolicy, "brownian": BrownianPolicy}


# ----------------------------------------------------------------------------- collect


def _master_seed(key_or_seed) -> int:
    """An int seed from an int or a JAX PRNG key (typed or raw uint32)."""
    if isinstance(key_or_seed, int | np.integer):
        return int(key_or_seed)
    import jax

    data = key_or_seed
    if jax.dtypes.issubdtype(getattr(data, "dtype", None), jax.dtypes.prng_key):
        data = jax.random.key_data(data)
    words = np.asarray(data, dtype=np.uint32).ravel()
    return int(np.random.SeedSequence(words.tolist()).generate_state(1)[0])


def collect(key_or_seed, episodes_dir: str | os.PathLike, cfg: CollectConfig, *,
            workers: int = 0, fast_env: bool = True, step_timeout: float = 60.0,
            progress: bool = True) -> dict:
    """Record `cfg.episodes` random-policy episodes in the real env (PAPER.md §1.2); resumable.

    Episode i uses env seed `episode_seed(master, i)` and policy parameters drawn from
    (master, i), so content depends only on (master seed, i, policy, max_steps, env). Each episode
    is written atomically as `ep_{i:06d}.npz` when it finishes; a rerun (after a kill, or with a
    larger `cfg.episodes`) records only the missing indices. `collect.json` pins the master seed,
    policy, max_steps and env; a rerun with different ones is refused.

    Episodes run for `cfg.max_steps` steps unless the env terminates first (leaving the track or
    finishing the lap); unlike the reference code, which forces `done = False` so every episode is
    exactly 1000 frames (PAPER.md §1.1), termination is recorded honestly in `terminated`.

    Returns {"episodes", "new_episodes", "new_frames", "seconds", "episodes_per_s",
    "frames_per_s"}.
    """
    if cfg.policy not in POLICIES:
        raise ValueError(f"--collect.policy: unknown policy {cfg.policy!r}; "
                         f"choose one of {sorted(POLICIES)}")
    if cfg.episodes < 0 or cfg.max_steps < 1:
        raise ValueError(f"--collect: need episodes >= 0 and max_steps >= 1, got "
                         f"{cfg.episodes} and {cfg.max_steps}")
    master = _master_seed(key_or_seed)
    folder = Path(episodes_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"master_seed": master, "policy": cfg.policy, "max_steps": cfg.max_steps,
                "fast_env": fast_env}
    mpath = folder / COLLECT_MANIFEST
    if mpath.exists():
        old = io.read_json(mpath)
        if old != manifest:
            raise ValueError(f"{mpath}: folder was collected with {old}, not {manifest}; "
                             "use another folder")
    else:
        io.write_json(mpath, manifest, indent=1)
    io.remove_stale_tmp(folder)
    have = {episode_index(p) for p in list_episodes(folder)}
    missing = [i for i in range(cfg.episodes) if i not in have]
    done_before = cfg.episodes - len(missing)
    t0 = time.monotonic()
    frames = 0
    if missing:
        specs = [EpisodeSpec(seed=episode_seed(master, i), tag=i) for i in missing]
        n_workers = min(workers or (os.cpu_count() or 1), len(specs))
        bar = tqdm(total=cfg.episodes, initial=done_before, unit="ep", desc="collect",
                   disable=not progress, dynamic_ncols=True)

        def write(res: EpisodeResult) -> None:
            nonlocal frames
            save_episode(episode_path(folder, res.spec.tag), {
                "frames": res.obs, "actions": res.actions, "rewards": res.rewards,
                "terminated": res.terminated, "truncated": res.truncated,
                "seed": res.spec.seed, "policy": cfg.policy})
            frames += res.length
            res.obs = res.actions = res.rewards = res.terminated = res.truncated = None
            dt = max(time.monotonic() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{frames / dt:.0f}")

        try:
            with EnvPool(num_workers=n_workers, envs_per_worker=1, fast=fast_env,
                         max_steps=cfg.max_steps, step_timeout=step_timeout) as pool:
                policy = POLICIES[cfg.policy](master, pool.num_slots)
                pool.run(specs, policy, steps=True, progress=write)
        finally:
            bar.close()
    dt = time.monotonic() - t0
    return {"episodes": cfg.episodes, "new_episodes": len(missing), "new_frames": frames,
            "seconds": dt, "episodes_per_s": len(missing) / dt if dt > 0 else 0.0,
            "frames_per_s": frames / dt if dt > 0 else 0.0}


# ----------------------------------------------------------------------------- series


def encode_series(encode_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                  episodes_dir: str | os.PathLike, series_dir: str | os.PathLike, *,
                  batch_size: int, vae_id: str, progress: bool = True) -> dict:
    """Encode every episode's frames to per-frame (mu, logvar) series files; resumable.

    `encode_fn(frames (N, 64, 64, 3) uint8) -> (mu (N, Z), logvar (N, Z))`, always called with
    N = batch_size (the last batch of an episode is zero-padded, so a jitted encoder compiles
    once). Existing series files are skipped; `series.json` records `vae_id`, and a folder made
    with a different `vae_id` is refused. Returns {"episodes", "encoded", "skipped", "frames",
    "seconds"}.
    """
    if batch_size < 1:
        raise ValueError(f"--encode.batch_size must be >= 1, got {batch_size}")
    files = list_episodes(episodes_dir)
    if not files:
        raise FileNotFoundError(f"{episodes_dir}: no ep_XXXXXX.npz episodes to encode")
    out = Path(series_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / SERIES_MANIFEST
    if mpath.exists():
        old = io.read_json(mpath).get("vae_id")
        if old != vae_id:
            raise ValueError(f"{mpath}: series were encoded with vae_id={old!r}, not "
                             f"{vae_id!r}; delete {out} or use another folder")
    else:
        io.write_json(mpath, {"vae_id": vae_id})
    io.remove_stale_tmp(out)
    t0 = time.monotonic()
    encoded = frames_done = 0
    todo = [f for f in files if not (out / f.name).exists()]
    for f in tqdm(todo, desc="encode", unit="ep", disable=not progress, dynamic_ncols=True):
        ep = load_episode(f)
        fr = ep["frames"]  # (T, 64, 64, 3)
        T = len(fr)
        mus, lvs = [], []
        for s in range(0, T, batch_size):
            chunk = fr[s:s + batch_size]
            n = len(chunk)
            if n < batch_size:
                chunk = np.concatenate([chunk, np.zeros((batch_size - n, *FRAME_SHAPE),
                                                        np.uint8)])
            mu, lv = (np.asarray(x) for x in encode_fn(chunk))
            if mu.ndim != 2 or mu.shape[0] != batch_size or lv.shape != mu.shape:
                raise ValueError(f"encode_fn returned mu {mu.shape} logvar {lv.shape} for "
                                 f"{batch_size} frames; expected ({batch_size}, Z) each")
            mus.append(mu[:n])
            lvs.append(lv[:n])
        mu, lv = np.concatenate(mus), np.concatenate(lvs)
        io.save_npz(out / f.name, mu=mu.astype(np.float16), logvar=lv.astype(np.float16),
                      **{k: ep[k] for k in _STEP_KEYS}, seed=np.asarray(ep["seed"], np.int64),
                      vae_id=np.asarray(vae_id))
        encoded += 1
        frames_done += T
    return {"episodes": len(files), "encoded": encoded, "skipped": len(files) - encoded,
            "frames": frames_done, "seconds": time.monotonic() - t0}


def initial_latents(series_files: Sequence[str | os.PathLike],
                    n: int) -> tuple[np.ndarray, np.ndarray]:
    """First-frame (mu (n, Z), logvar (n, Z)) float32 of the first n series files (all of them
    when fewer): the dream's bank of initial latents (PAPER.md §1.4 `initial_z`)."""
    files = [Path(f) for f in series_files][:n]
    if not files or n < 1:
        raise ValueError(f"initial_latents: need n >= 1 and series files, got n={n}, "
                         f"{len(files)} files")
    firsts = [load_series(f) for f in files]
    mu = np.stack([d["mu"][0] for d in firsts]).astype(np.float32)
    lv = np.stack([d["logvar"][0] for d in firsts]).astype(np.float32)
    return mu, lv
