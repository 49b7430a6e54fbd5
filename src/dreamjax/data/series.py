"""Latent series: every episode's frames encoded by V to per-frame (mu, logvar), and the dream's
bank of initial latents (PAPER.md §1.4). The file format is in `dreamjax.data.episodes`.

NumPy only at import time (no model code): `encode_series` and `encode_padded` take the encoder
as a function.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dreamjax import io
from dreamjax.data.episodes import (
    FRAME_SHAPE,
    STEP_KEYS,
    EpisodeError,
    list_episodes,
    load_episode,
    load_series,
)
from dreamjax.errors import ConfigError

SERIES_MANIFEST = "series.json"


def encode_padded(encode_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                  frames: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (N, 64, 64, 3) -> mu, logvar (N, Z) through `encode_fn`, always called
    with `batch_size` frames (the last batch zero-padded, so a jitted encoder compiles once)."""
    mus, lvs = [], []
    for s in range(0, len(frames), batch_size):
        chunk = frames[s:s + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *FRAME_SHAPE), np.uint8)])
        mu, lv = (np.asarray(x) for x in encode_fn(chunk))
        if mu.ndim != 2 or mu.shape[0] != batch_size or lv.shape != mu.shape:
            raise ValueError(f"encode_fn returned mu {mu.shape} logvar {lv.shape} for "
                             f"{batch_size} frames; expected ({batch_size}, Z) each")
        mus.append(mu[:n])
        lvs.append(lv[:n])
    return np.concatenate(mus), np.concatenate(lvs)


def encode_series(encode_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                  episodes_dir: str | os.PathLike, series_dir: str | os.PathLike, *,
                  batch_size: int, vae_id: str, progress: bool = True) -> dict:
    """Encode every episode's frames to per-frame (mu, logvar) series files; resumable.

    `encode_fn(frames (N, 64, 64, 3) uint8) -> (mu (N, Z), logvar (N, Z))`, always called with
    N = batch_size (`encode_padded`). Existing series files are skipped; `series.json` records
    `vae_id`, and a folder made with a different `vae_id` is refused. Returns {"episodes",
    "encoded", "skipped", "frames", "seconds"}.
    """
    if batch_size < 1:
        raise ConfigError(f"--encode.batch_size must be >= 1, got {batch_size}")
    files = list_episodes(episodes_dir)
    if not files:
        raise EpisodeError(f"{episodes_dir}: no ep_XXXXXX.npz episodes to encode (run the "
                           "collect stage)")
    out = Path(series_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / SERIES_MANIFEST
    if mpath.exists():
        old = io.read_json(mpath).get("vae_id")
        if old != vae_id:
            raise ConfigError(f"{mpath}: series were encoded with vae_id={old!r}, not "
                              f"{vae_id!r}; delete {out} or use another folder")
    else:
        io.write_json(mpath, {"vae_id": vae_id})
    io.remove_stale_tmp(out)
    t0 = time.monotonic()
    encoded = frames_done = 0
    todo = [f for f in files if not (out / f.name).exists()]
    for f in tqdm(todo, desc="encode", unit="ep", disable=not progress, dynamic_ncols=True):
        ep = load_episode(f)
        T = len(ep["frames"])
        mu, lv = encode_padded(encode_fn, ep["frames"], batch_size)  # (T, Z) each
        io.save_npz(out / f.name, mu=mu.astype(np.float16), logvar=lv.astype(np.float16),
                    **{k: ep[k] for k in STEP_KEYS}, seed=np.asarray(ep["seed"], np.int64),
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
