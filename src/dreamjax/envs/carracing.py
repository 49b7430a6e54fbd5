"""The real CarRacing-v3 environment (gymnasium), headless, and the paper's frame and action maps.

NumPy only: this module runs inside worker processes and never imports JAX.
"""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FRAME_SIZE = 64
"""V sees FRAME_SIZE x FRAME_SIZE x 3 uint8 frames."""
CROP_ROWS = 84
"""Rows kept from the top of the 96x96 frame; the rest is the dashboard (PAPER.md §1.1)."""
ACTION_DIM = 3


def preprocess(frame: np.ndarray) -> np.ndarray:
    """(96, 96, 3) uint8 env frame -> (64, 64, 3) uint8 frame for V (PAPER.md §1.1).

    Crop rows 0..83 (drops the dashboard), bilinear resize to 64x64 (squashing the aspect ratio,
    as the paper does). The reference code's min-max bytescale and `(1 - obs) * 255` uint8
    wrap-around (PAPER.md §1.1 "Quirk") are deliberately not reproduced: they are artefacts of
    `scipy.misc.imresize`, not part of the method.
    """
    if frame.shape != (96, 96, 3) or frame.dtype != np.uint8:
        raise ValueError(f"expected a (96, 96, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    img = Image.fromarray(frame[:CROP_ROWS])
    return np.asarray(img.resize((FRAME_SIZE, FRAME_SIZE), Image.BILINEAR), dtype=np.uint8)


def to_env_action(a: np.ndarray) -> np.ndarray:
    """C's raw output in [-1, 1]^3 -> CarRacing's (steer, gas, brake) (PAPER.md §1.5).

    steer = a0 in [-1, 1]; gas = (a1 + 1) / 2 in [0, 1]; brake = clip(a2, 0, 1).
    Works on (..., 3) arrays.
    """
    a = np.asarray(a, dtype=np.float32)
    if a.shape[-1] != ACTION_DIM:
        raise ValueError(f"expected actions of shape (..., 3), got {a.shape}")
    steer = np.clip(a[..., 0], -1.0, 1.0)
    gas = (np.clip(a[..., 1], -1.0, 1.0) + 1.0) / 2.0
    brake = np.clip(a[..., 2], 0.0, 1.0)
    return np.stack([steer, gas, brake], axis=-1).astype(np.float32)


def make_env(fast: bool = True, **kwargs) -> gym.Env:
    """A headless CarRacing-v3 (`FastCarRacing` when `fast`, else stock gymnasium).

    kwargs are gymnasium `CarRacing`'s constructor arguments (e.g. `max_episode_steps` is not one:
    pass it to `gym.make` semantics via `max_episode_steps=` here, default 1000).
    """
    max_steps = kwargs.pop("max_episode_steps", 1000)
    if fast and "FastCarRacing" in globals():
        env = FastCarRacing(**kwargs)  # noqa: F821
        return gym.wrappers.TimeLimit(env, max_episode_steps=max_steps)
    return gym.make("CarRacing-v3", max_episode_steps=max_steps, **kwargs)
