"""What the real-env worker pool and its callers exchange: the episodes to run (`EpisodeSpec`),
what they returned (`EpisodeResult`), the envs' spaces (`EnvInfo`) and the policy interface
(`BatchPolicy`). NumPy only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: env reset seed and a caller's label."""

    seed: int
    """Env reset seed (`env.reset(seed=seed)`)."""
    tag: int = 0
    """Caller's label, e.g. a candidate or episode index."""


@dataclass(frozen=True)
class EnvInfo:
    """What the pool knows of the envs `env_fn` builds (reported by every worker)."""

    env_id: str
    """`env.spec.id`, or the env class name for an env without a gymnasium spec."""
    observation_shape: tuple[int, ...]
    observation_dtype: str
    action_shape: tuple[int, ...]
    action_dtype: str
    max_episode_steps: int | None
    """The TimeLimit of `env.spec`, if any."""

    @classmethod
    def of(cls, env: Any) -> EnvInfo:
        """The `EnvInfo` of a gymnasium env."""
        spec = env.spec
        return cls(
            env_id=spec.id if spec is not None else type(env.unwrapped).__name__,
            observation_shape=tuple(env.observation_space.shape),
            observation_dtype=np.dtype(env.observation_space.dtype).str,
            action_shape=tuple(env.action_space.shape),
            action_dtype=np.dtype(env.action_space.dtype).str,
            max_episode_steps=spec.max_episode_steps if spec is not None else None,
        )


def probe_env(env_fn: Callable[[], Any]) -> EnvInfo:
    """`EnvInfo` of the env `env_fn` builds, built and closed in this process."""
    env = env_fn()
    try:
        return EnvInfo.of(env)
    finally:
        env.close()


@dataclass
class EpisodeResult:
    """What one finished episode returned; O and A are the env's observation and action shapes."""

    spec: EpisodeSpec
    total_reward: float
    length: int
    frames: np.ndarray | None = None
    """(T, ...) when `record=True`: `info["raw_frame"]` of each observation at which an action
    was taken (the observation itself for an env without one); for CarRacing (T, 96, 96, 3)."""
    obs: np.ndarray | None = None
    """(T, *O) observations when `steps=True`; obs[t] is the one at which actions[t] was taken."""
    actions: np.ndarray | None = None
    """(T, *A) actions as the policy returned them, when `steps=True`."""
    rewards: np.ndarray | None = None
    """(T,) float32 per-step rewards when `steps=True`; rewards[t] follows actions[t]."""
    terminated: np.ndarray | None = None
    """(T,) bool when `steps=True`."""
    truncated: np.ndarray | None = None
    """(T,) bool when `steps=True`."""


class BatchPolicy(Protocol):
    """A policy acting for every slot of the pool at once; lives in the main process."""

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        """Slot `slot` starts (or, after a worker failure, restarts) the episode `spec`."""

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, *O), active (S,) bool -> (S, *A) actions (for CarRacing: (S, 64, 64, 3)
        uint8 -> (S, 3) raw actions in [-1, 1]).

        Only the rows of active slots are used (and only those slots advance).
        """
