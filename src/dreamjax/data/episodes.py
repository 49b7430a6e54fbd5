"""The episode and series file format: save, load, validate, list (PAPER.md §1.2).

Episodes on disk: one `ep_{index:06d}.npz` per episode in an episodes folder, written atomically
(`dreamjax.io`), holding

    frames      (T, 64, 64, 3) uint8    frames[t] is the observation at which actions[t] was taken
    actions     (T, A) float32          raw controller outputs in [-1, 1] (A: the game's action
                                        size, 3 for CarRacing, 1 for Doom)
    rewards     (T,) float32            reward that followed actions[t]
    terminated  (T,) bool               the env terminated after actions[t]
    truncated   (T,) bool               the time limit ended the episode after actions[t]
    seed        int                     env reset seed
    policy      str                     collection policy name
    attempt     int (optional, 0)       which try of this episode index it is: collection with a
                                        minimum length discards shorter tries (PAPER.md §2.2)

Series (the output of `dreamjax.data.series.encode_series`): one `ep_{index:06d}.npz` per episode
with `mu`, `logvar` (T, Z) float16, the same `actions`, `rewards`, `terminated`, `truncated`,
`seed`, and `vae_id`.

NumPy only: no JAX at import time.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dreamjax import io
from dreamjax.errors import ArtifactError

FRAME_SHAPE = (64, 64, 3)
STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
"""The per-step arrays episodes and series share."""
_EP_RE = re.compile(r"^ep_(\d{6})\.npz$")


class EpisodeError(ArtifactError):
    """A missing, truncated, corrupt or malformed episode/series file; message `<path>: <what>`."""


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
        raise EpisodeError(f"{folder}: no such episodes folder")
    return sorted((p for p in folder.iterdir() if _EP_RE.match(p.name)), key=episode_index)


def save_episode(path: str | os.PathLike, episode: dict) -> None:
    """Validate and atomically write one episode file (compressed npz)."""
    path = Path(path)
    ep = _validate_episode(path, {k: np.asarray(v) for k, v in episode.items()})
    io.save_npz(path, compressed=True, **ep)


def _open_npz(path: Path) -> dict:
    """All arrays of an npz file, or an `EpisodeError` for a missing/truncated/corrupt one."""
    if path.is_file() and not zipfile.is_zipfile(path):
        raise EpisodeError(f"{path}: not an npz (zip) file: corrupt or truncated")
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
    _check(path, a.ndim == 2 and a.shape[0] == T and a.shape[1] >= 1 and a.dtype == np.float32,
           f"actions must be ({T}, A) float32, got {a.shape} {a.dtype}")
    _check(path, r.shape == (T,) and r.dtype == np.float32,
           f"rewards must be ({T},) float32, got {r.shape} {r.dtype}")
    for k in ("terminated", "truncated"):
        _check(path, d[k].shape == (T,) and d[k].dtype == np.bool_,
               f"{k} must be ({T},) bool, got {d[k].shape} {d[k].dtype}")
    _check(path, bool(np.all(np.isfinite(a))) and bool(np.all(np.isfinite(r))),
           "non-finite actions or rewards")


def _validate_episode(path: Path, d: dict) -> dict:
    missing = sorted({"frames", *STEP_KEYS, "seed", "policy"} - set(d))
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
    attempt = d.get("attempt", np.asarray(0))
    _check(path, attempt.shape == () and np.issubdtype(attempt.dtype, np.integer)
           and int(attempt) >= 0, f"attempt must be an integer scalar >= 0, got {attempt}")
    out = {k: d[k] for k in ("frames", *STEP_KEYS)}
    out["seed"] = np.asarray(int(d["seed"]), np.int64)
    out["policy"] = np.asarray(str(d["policy"]))
    if "attempt" in d:
        out["attempt"] = np.asarray(int(attempt), np.int64)
    return out


def load_episode(path: str | os.PathLike) -> dict:
    """A validated episode: arrays as in the module docstring, `seed` int, `policy` str,
    `attempt` int (0 when the file has none).

    Raises `EpisodeError("<path>: <problem>")` for missing, truncated, corrupt or malformed files.
    """
    path = Path(path)
    d = _validate_episode(path, _open_npz(path))
    d["seed"], d["policy"] = int(d["seed"]), str(d["policy"])
    d["attempt"] = int(d.get("attempt", 0))
    return d


def load_series(path: str | os.PathLike) -> dict:
    """A validated series file: `mu`, `logvar` (T, Z) float16, step arrays, `seed`, `vae_id`."""
    path = Path(path)
    d = _open_npz(path)
    missing = sorted({"mu", "logvar", *STEP_KEYS, "seed", "vae_id"} - set(d))
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
