"""The agent's view of a real env: what V sees and what C outputs, shared by every game.

`AgentView` wraps a gymnasium env so that observations are the (64, 64, 3) uint8 frames V sees
and actions are C's raw float32 output in [-1, 1]^A; the raw frame rides along in
`info["raw_frame"]` (for videos). `ActionRepeat` plays each of the agent's actions for k game
frames. `crop_resize` is the frame transform both games use (PAPER.md §1.1, §2.1). NumPy only:
this module runs inside env worker processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from PIL import Image

FRAME_SIZE = 64
"""V sees FRAME_SIZE x FRAME_SIZE x 3 uint8 frames."""


def crop_resize(frame: np.ndarray, rows: int) -> np.ndarray:
    """Keep rows 0..rows-1 of an (H, W, 3) uint8 frame, bilinear resize (PIL) to 64 x 64.

    The reference code's `scipy.misc.imresize` min-max bytescale and `(1 - obs) * 255` uint8
    wrap-around (PAPER.md §1.1 "Quirk") are deliberately not reproduced.
    """
    img = Image.fromarray(frame[:rows])
    return np.asarray(img.resize((FRAME_SIZE, FRAME_SIZE), Image.BILINEAR), dtype=np.uint8)


@runtime_checkable
class DrawsOnDemand(Protocol):
    """A raw env that can step without drawing its observation (`FastCarRacing`): with `draw`
    off, `step` returns the last drawn one; `observe()` draws the current state's."""

    draw: bool

    def observe(self) -> np.ndarray: ...


class ActionRepeat(gym.Wrapper):
    """`env` with each action played for `repeat` frames (fewer if the episode ends first): one
    step returns the last frame, the summed reward and the last flags and info. The env's time
    limit counts frames; its spec's `max_episode_steps` is restated in steps (frames / repeat).
    A `DrawsOnDemand` env draws only the frame the step returns (the frames in between are
    never seen; drawing is most of a CarRacing frame's cost)."""

    def __init__(self, env: gym.Env, repeat: int):
        if repeat < 1:
            raise ValueError(f"ActionRepeat: repeat must be at least 1, got {repeat}")
        super().__init__(env)
        self.repeat = int(repeat)

    @property
    def spec(self):
        spec = self.env.spec
        if spec is None or spec.max_episode_steps is None:
            return spec
        return dataclasses.replace(spec, max_episode_steps=-(-spec.max_episode_steps
                                                             // self.repeat))

    def step(self, action):
        raw = self.env.unwrapped
        lazy = isinstance(raw, DrawsOnDemand)
        total = 0.0
        try:
            for i in range(self.repeat):
                if lazy:
                    raw.draw = i == self.repeat - 1
                obs, reward, terminated, truncated, info = self.env.step(action)
                total += float(reward)
                if terminated or truncated:
                    break
        finally:
            if lazy:
                raw.draw = True
        if lazy and i < self.repeat - 1:
            obs = raw.observe()
        return obs, total, terminated, truncated, info


class AgentView(gym.Wrapper):
    """`env` as the agent sees it: observations `preprocess(raw)` (64, 64, 3) uint8, actions C's
    raw (A,) float32 output in [-1, 1] mapped by `to_env_action`; `reset` and `step` put the raw
    frame in `info["raw_frame"]`."""

    def __init__(self, env: gym.Env, preprocess: Callable[[np.ndarray], np.ndarray],
                 to_env_action: Callable[[np.ndarray], object], action_dim: int):
        super().__init__(env)
        self._preprocess, self._to_env_action = preprocess, to_env_action
        self.observation_space = gym.spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, **kwargs):
        raw, info = self.env.reset(**kwargs)
        return self._preprocess(raw), {**info, "raw_frame": raw}

    def step(self, action):
        raw, reward, terminated, truncated, info = self.env.step(self._to_env_action(action))
        return self._preprocess(raw), reward, terminated, truncated, {**info, "raw_frame": raw}
