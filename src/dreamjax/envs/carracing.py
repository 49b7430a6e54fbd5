"""The real CarRacing-v3 environment (gymnasium), headless, as the agent sees it.

`make_env` is the env factory the worker pool and collection use: CarRacing-v3 (the fast,
byte-identical renderer `FastCarRacing` by default) wrapped in `AgentView`, whose observation is
the 64x64x3 uint8 frame V sees (`preprocess`) and whose action is C's raw output in [-1, 1]^3
(`to_env_action`); `info["raw_frame"]` holds the 96x96x3 frame for videos. `make_raw_env` is the
same env without `AgentView` (gymnasium's own observation and action spaces).

NumPy only: this module runs inside worker processes and never imports JAX.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from dreamjax.envs.fast_carracing import FastCarRacing
from dreamjax.envs.view import ActionRepeat, AgentView, crop_resize

__all__ = ["FastCarRacing", "ActionRepeat", "AgentView", "make_env", "make_raw_env", "preprocess",
           "to_env_action"]

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
    return crop_resize(frame, CROP_ROWS)


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


def make_raw_env(fast: bool = True, max_episode_steps: int = 1000, **kwargs) -> gym.Env:
    """A headless CarRacing-v3 with gymnasium's spaces: `FastCarRacing` when `fast`, else stock.

    kwargs are gymnasium `CarRacing`'s constructor arguments; `max_episode_steps` is gymnasium's
    TimeLimit. Both variants get the wrapper stack `gym.make` builds for CarRacing-v3
    (TimeLimit, OrderEnforcing, PassiveEnvChecker); the fast one has the id `FastCarRacing-v3`.
    """
    spec = gym.spec("CarRacing-v3")
    if fast:
        spec = dataclasses.replace(spec, id="FastCarRacing-v3", entry_point=FastCarRacing)
    return gym.make(spec, max_episode_steps=max_episode_steps, **kwargs)


def make_env(fast: bool = True, max_episode_steps: int = 1000, action_repeat: int = 1,
             **kwargs) -> gym.Env:
    """`make_raw_env(...)` wrapped in `AgentView`: the env C acts in and V sees (picklable as
    `functools.partial(make_env, ...)`, the worker pool's env factory). With `action_repeat`
    k > 1 each step plays its action for k frames (`ActionRepeat`) and an episode lasts
    `max_episode_steps` steps, k times as many frames."""
    env = make_raw_env(fast, max_episode_steps * action_repeat, **kwargs)
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    return AgentView(env, preprocess, to_env_action, ACTION_DIM)
