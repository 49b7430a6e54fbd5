"""The real Doom TakeCover game (ViZDoom, PAPER.md §2.1), headless, as the agent sees it.

`make_raw_env` is the game: `TakeCover`, ViZDoom's shipped `take_cover.cfg` (its wad, the
buttons MOVE_LEFT and MOVE_RIGHT, a living reward of +1 per tic), 640x480 RGB frames, window
hidden, synchronous player mode, one tic per step (no frame skip), under gymnasium's TimeLimit of
2100 steps (about 60 s at 35 tics/s). The reward is +1 on every step, the one on which the player
dies included, so an episode's return is its length. `make_env` wraps it in `AgentView`: the
observation is the 64x64x3 uint8 frame V sees (`preprocess`), the action is C's scalar output in
[-1, 1] (`to_env_action`), and `info["raw_frame"]` holds the 480x640x3 frame for videos.

Skill: ppaquette's DoomTakeCover-v0, the env of the paper, set doom_skill 5. With ViZDoom 1.3.2
(40 episodes each) skill 5 gives 102 +- 51 steps with the data policy of §2.2 (`doom_random`;
only 42% of its episodes pass the > 100 frames filter) and 72 +- 28 with a uniform action each
step, far from the paper's data (about 308 frames per kept episode, PAPER.md §2.2) and its
random-policy score 210 +- 108 (§2.7). The cfg's skill 4 gives 281 +- 152 and 222 +- 100, so this
module keeps the cfg's skill 4.

Seeding: `reset(seed=s)` seeds gymnasium's `np_random` with s and gives ViZDoom the seed drawn
from it; in synchronous mode the game is then a function of that seed and the actions, so the same
seed and actions give the same frames and rewards. `reset()` without a seed draws the next one.

Files: the engine runs as a child process of the env's process; it writes its ini into a private
temporary folder (removed by `close`) and creates an empty `_vizdoom/` folder (its hard-wired
home) in the current directory. NumPy only: this module runs inside worker processes and never
imports JAX.
"""

from __future__ import annotations

import os
import tempfile

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from dreamjax.envs.view import ActionRepeat, AgentView, crop_resize
from dreamjax.errors import ConfigError

try:
    import vizdoom
except ImportError as e:
    raise ConfigError("dreamjax.envs.doom needs ViZDoom: pip install 'dreamjax[doom]' "
                      "(or the 'test' extra)") from e

__all__ = ["AgentView", "TakeCover", "make_env", "make_raw_env", "preprocess", "to_env_action"]

ENV_ID = "dreamjax/DoomTakeCover-v0"
SCREEN_SHAPE = (480, 640, 3)
"""(H, W, C) of the raw RGB frame."""
CROP_ROWS = 400
"""Rows kept from the top of the 480-row frame (PAPER.md §2.1)."""
ACTION_DIM = 1
THRESHOLD = 0.3333
"""|a| beyond this presses a button: the reference code's constant (PAPER.md §2.1), 1/3 to four
digits."""
MAX_EPISODE_STEPS = 2100
TICRATE = 35
"""Doom tics per second: one step is one tic."""

NOOP, LEFT, RIGHT = 0, 1, 2
"""`TakeCover`'s discrete actions."""
_BUTTONS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))
"""Action -> (MOVE_LEFT, MOVE_RIGHT) button states, the order `TakeCover` declares them in."""


def preprocess(frame: np.ndarray) -> np.ndarray:
    """(480, 640, 3) uint8 game frame -> (64, 64, 3) uint8 frame for V (PAPER.md §2.1).

    Crop rows 0..399, bilinear resize to 64x64 (PIL, as `scipy.misc.imresize` did; squashing the
    aspect ratio, as the paper does). The reference code's min-max bytescale and `(1 - obs) * 255`
    uint8 wrap-around (PAPER.md §1.1 "Quirk", §2.1) are deliberately not reproduced, as for
    CarRacing (`dreamjax.envs.carracing.preprocess`).
    """
    if frame.shape != SCREEN_SHAPE or frame.dtype != np.uint8:
        raise ValueError(f"expected a {SCREEN_SHAPE} uint8 frame, got {frame.shape} {frame.dtype}")
    return crop_resize(frame, CROP_ROWS)


def to_env_action(a: np.ndarray) -> np.ndarray:
    """C's output a in [-1, 1], (..., 1) -> `TakeCover` actions (...,) int64 (PAPER.md §2.1):
    a < -THRESHOLD -> LEFT, a > THRESHOLD -> RIGHT, else NOOP."""
    a = np.asarray(a, dtype=np.float32)
    if a.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f"expected actions of shape (..., 1), got {a.shape}")
    a = a[..., 0]
    return np.where(a < -THRESHOLD, LEFT, np.where(a > THRESHOLD, RIGHT, NOOP)).astype(np.int64)


class TakeCover(gym.Env):
    """ViZDoom's TakeCover scenario as a gymnasium env: observations (480, 640, 3) uint8 RGB,
    actions `Discrete(3)` (NOOP, LEFT, RIGHT), reward +1 per tic, `terminated` when the player
    dies (the observation is then a black frame: the game has no state after death). No time
    limit of its own: `make_raw_env` adds gymnasium's TimeLimit.

    `doom_skill` overrides the cfg's skill (4; see the module docstring).
    """

    metadata = {"render_modes": [], "render_fps": TICRATE}

    def __init__(self, doom_skill: int | None = None):
        self.observation_space = gym.spaces.Box(0, 255, SCREEN_SHAPE, np.uint8)
        self.action_space = gym.spaces.Discrete(len(_BUTTONS))
        self._home = tempfile.TemporaryDirectory(prefix="dreamjax-vizdoom-")
        game = vizdoom.DoomGame()
        game.load_config(os.path.join(vizdoom.scenarios_path, "take_cover.cfg"))
        game.set_doom_config_path(os.path.join(self._home.name, "_vizdoom.ini"))
        game.set_available_buttons([vizdoom.Button.MOVE_LEFT, vizdoom.Button.MOVE_RIGHT])
        game.set_screen_resolution(vizdoom.ScreenResolution.RES_640X480)
        game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_mode(vizdoom.Mode.PLAYER)
        game.set_episode_timeout(0)
        if doom_skill is not None:
            game.set_doom_skill(doom_skill)
        game.init()
        self.game = game

    def _observe(self) -> np.ndarray:
        """(480, 640, 3) uint8: the current frame, black once the episode has ended."""
        state = self.game.get_state()
        if state is None:
            return np.zeros(SCREEN_SHAPE, np.uint8)
        return np.asarray(state.screen_buffer, dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.game.set_seed(int(self.np_random.integers(0, 2**32, dtype=np.uint64)))
        self.game.new_episode()
        return self._observe(), {}

    def step(self, action):
        reward = self.game.make_action(list(_BUTTONS[int(action)]), 1)
        terminated = self.game.is_episode_finished()
        return self._observe(), float(reward), terminated, False, {}

    def close(self) -> None:
        game = getattr(self, "game", None)
        if game is not None:
            game.close()
            self.game = None
            self._home.cleanup()


def make_raw_env(max_episode_steps: int = MAX_EPISODE_STEPS, doom_skill: int | None = None
                 ) -> gym.Env:
    """`TakeCover` with the wrapper stack `gym.make` builds (TimeLimit `max_episode_steps`,
    OrderEnforcing, PassiveEnvChecker) and the id `ENV_ID`; not registered with gymnasium."""
    spec = EnvSpec(ENV_ID, entry_point=TakeCover, max_episode_steps=max_episode_steps)
    return gym.make(spec, doom_skill=doom_skill)


def make_env(max_episode_steps: int = MAX_EPISODE_STEPS, doom_skill: int | None = None,
             action_repeat: int = 1) -> gym.Env:
    """`make_raw_env(...)` wrapped in `AgentView`: the env C acts in and V sees (picklable as
    `functools.partial(make_env, ...)`, the worker pool's env factory). With `action_repeat`
    k > 1 each step plays its action for k tics (`ActionRepeat`) and an episode lasts
    `max_episode_steps` steps, k times as many tics."""
    env = make_raw_env(max_episode_steps * action_repeat, doom_skill)
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    return AgentView(env, preprocess, to_env_action, ACTION_DIM)
