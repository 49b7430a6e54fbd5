"""Playing an agent: real episodes in the env worker pool (`play_real`) or one by one in this
process (`play_here`, for a live window), dreams inside M (`play_dream`), their score and its
check against a model card, and the three-panel frames of an episode (`episode_video`).

The games play knows (`GAMES`): CarRacing-v3 and ViZDoom's TakeCover (imported only when
played: ViZDoom is an optional extra). An episode is a function of its seed, the weights and the
pool's slot count: the policy acts for every slot in one batched call, and V's batched
convolutions round differently at another batch size, so `play_here` pads its one env to the
pool's batch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dreamjax.agent import FRAME_SHAPE, WorldModelPolicy, encode_frames, render
from dreamjax.agent_io import Agent
from dreamjax.dream.env import DreamEnv, make_dream_params
from dreamjax.dream.rollout import trajectory
from dreamjax.envs import carracing
from dreamjax.envs.pool import EnvPool, EpisodeResult, EpisodeSpec
from dreamjax.errors import ConfigError
from dreamjax.models.controller import ControllerSpec
from dreamjax.panels import Bar, compose


@dataclasses.dataclass(frozen=True)
class Game:
    """What play needs to know about a real game."""

    name: str
    action_dim: int
    env_fn: Callable[[bool, int, int], Callable[[], Any]]
    """(fast_env, max_steps, action_repeat) -> the pool's picklable env factory (`AgentView`
    env)."""
    bars: Callable[[np.ndarray], list[Bar]]
    """C's raw action (A,) -> the bars the action panel draws."""


def _carracing_env_fn(fast: bool, max_steps: int, action_repeat: int) -> Callable[[], Any]:
    return functools.partial(carracing.make_env, fast=fast, max_episode_steps=max_steps,
                             action_repeat=action_repeat)


def _carracing_bars(a: np.ndarray) -> list[Bar]:
    steer, gas, brake = (float(x) for x in carracing.to_env_action(a))
    return [("steer", steer, -1.0, 1.0), ("gas", gas, 0.0, 1.0), ("brake", brake, 0.0, 1.0)]


def _doom() -> Any:
    """`dreamjax.envs.doom`, imported only when Doom is played: ViZDoom is an optional extra."""
    return importlib.import_module("dreamjax.envs.doom")


def _doom_env_fn(fast: bool, max_steps: int, action_repeat: int) -> Callable[[], Any]:
    return functools.partial(_doom().make_env, max_episode_steps=max_steps,
                             action_repeat=action_repeat)


def _doom_bars(a: np.ndarray) -> list[Bar]:
    doom = _doom()
    move = {doom.NOOP: "stay", doom.LEFT: "left", doom.RIGHT: "right"}[int(doom.to_env_action(a))]
    return [(f"move ({move})", float(a[0]), -1.0, 1.0)]


GAMES = {
    "carracing": Game("CarRacing-v3", carracing.ACTION_DIM, _carracing_env_fn, _carracing_bars),
    "doom": Game("DoomTakeCover", 1, _doom_env_fn, _doom_bars),
}


def pick_game(agent: Agent, env: str | None) -> str:
    """`--env`, else the agent's, else the game with M's action size; checked against M."""
    a = agent.world_model.action_dim
    name = env or agent.settings.env or next(
        (n for n, g in GAMES.items() if g.action_dim == a), None)
    if name not in GAMES:
        raise ConfigError(f"--env: no known game takes {a} actions; choose one of "
                          f"{', '.join(GAMES)}")
    if GAMES[name].action_dim != a:
        raise ConfigError(f"--env {name}: {GAMES[name].name} takes {GAMES[name].action_dim} "
                          f"actions but the agent's M takes {a}")
    return name


def make_policy(agent: Agent) -> WorldModelPolicy:
    """The agent's one controller as the pool's batched policy, keyed by its policy seed."""
    batch = jax.tree.map(lambda x: x[None], agent.ctrl_params)
    return WorldModelPolicy(agent.world_model, batch, seed=agent.settings.policy_seed)


def play_real(
    agent: Agent, game: Game, seeds: list[int], *, max_steps: int, workers: int,
    envs_per_worker: int, record: int = 0,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Real episodes on `seeds` in a worker pool (results in seed order); the first `record`
    come with their raw frames and per-step observations, actions and rewards."""
    specs = [EpisodeSpec(seed=s, tag=0) for s in seeds]
    policy = make_policy(agent)
    env_fn = game.env_fn(agent.settings.fast_env, max_steps, agent.settings.action_repeat)
    with EnvPool(env_fn, num_workers=workers, envs_per_worker=envs_per_worker) as pool:
        shown = (pool.run(specs[:record], policy, record=True, steps=True, progress=progress)
                 if record else [])
        rest = pool.run(specs[record:], policy, progress=progress) if len(specs) > record else []
    return shown + rest


def play_here(
    agent: Agent, game: Game, spec: EpisodeSpec, *, max_steps: int, slots: int,
    on_step: Callable[[np.ndarray, np.ndarray, np.ndarray, float, int], bool],
) -> tuple[float, int, bool]:
    """One real episode in this process, its env in slot 0 of a `slots`-wide batch (so that the
    actions equal the pool's). `on_step(raw frame, frame V sees, action, return so far, step)`
    after every step; it returns False to stop. -> (return, length, stopped)."""
    env = game.env_fn(agent.settings.fast_env, max_steps, agent.settings.action_repeat)()
    policy = make_policy(agent)
    frames = np.zeros((slots, *FRAME_SHAPE), np.uint8)
    active = np.zeros(slots, bool)
    active[0] = True
    try:
        policy.reset(0, spec)
        obs, info = env.reset(seed=spec.seed)
        total, t, done = 0.0, 0, False
        while not done:
            frames[0] = obs
            action = policy.act(frames, active)[0]
            raw, seen = info.get("raw_frame", obs), obs
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            t += 1
            done = terminated or truncated
            if not on_step(raw, seen, action, total, t):
                return total, t, True
        return total, t, False
    finally:
        env.close()


def score(seeds: list[int], returns: list[float], lengths: list[int]) -> dict:
    """Mean, std (np.std) and the per-episode seeds, returns and lengths."""
    r = np.asarray(returns, np.float64)
    return {"episodes": len(r), "mean": float(r.mean()), "std": float(r.std()),
            "min": float(r.min()), "max": float(r.max()), "median": float(np.median(r)),
            "seeds": list(seeds), "returns": [float(x) for x in r], "lengths": list(lengths)}


def check_reference(agent: Agent, seeds: list[int], returns: list[float], *, max_steps: int,
                    slots: int) -> dict | None:
    """The played returns against the model card's (exact) or a run folder's evaluation
    (its results.json rounds to 3 decimals) on the seeds both have; None if none, or if the
    episodes were played with another step limit or slot count than the reference's."""
    s = agent.settings
    if (max_steps, slots) != (s.max_steps, s.workers * s.envs_per_worker):
        return None
    if agent.card is not None:
        ref, what, tol = agent.card, "the model card", 0.0
    elif agent.reference is not None:
        ref, what, tol = agent.reference, "the run's evaluation", 5e-4 + 1e-9
    else:
        return None
    table = dict(zip(ref.get("seeds", []), ref.get("returns", []), strict=False))
    pairs = [(s, float(table[s]), r) for s, r in zip(seeds, returns, strict=True) if s in table]
    if not pairs:
        return None
    differ = [{"seed": s, "reference": a, "now": b} for s, a, b in pairs if abs(a - b) > tol]
    return {"against": what, "episodes": len(pairs), "differ": differ}


REAL_TITLES = ["real frame", "V: decode(z)", "C: action"]


def reconstructions(agent: Agent, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """V's reconstructions of (T, 64, 64, 3) uint8 frames: decode(mu(frame)), in fixed-size
    (zero-padded) batches so that every episode length reuses one compiled program."""
    wm = agent.world_model
    out = []
    for i in range(0, len(frames), batch):
        chunk = frames[i : i + batch]
        pad = np.zeros((batch - len(chunk), *FRAME_SHAPE), np.uint8)
        mu, _ = encode_frames(wm.vae, wm.vae_params, np.concatenate([chunk, pad]))
        out.append(render(wm.vae, wm.vae_params, mu, batch=batch)[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, *FRAME_SHAPE), np.uint8)


def episode_video(agent: Agent, game: Game, res: EpisodeResult) -> np.ndarray:
    """The three-panel frames (T, H, W, 3) of a recorded episode."""
    recon = reconstructions(agent, res.obs)
    so_far = np.cumsum(res.rewards, dtype=np.float64)
    return np.stack([
        compose([res.frames[t], recon[t]], REAL_TITLES, game.bars(res.actions[t]),
                [f"seed {res.spec.seed}", f"step {t + 1}", f"return {so_far[t]:.1f}"])
        for t in range(res.length)
    ])


@functools.partial(jax.jit, static_argnames=("spec", "num_steps"))
def dream_episode(key: jax.Array, dream_params: Any, ctrl_params: Any, *, spec: ControllerSpec,
                  num_steps: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One dream of `num_steps` steps under C (`trajectory`): z (T, Z), C's actions (T, A),
    M's rewards (T,) and done flags (T,) (the steps after the first done are M's continued
    predictions)."""
    env = DreamEnv()
    states, rewards, terminated = trajectory(key, env, dream_params, spec.controller.apply,
                                             ctrl_params, num_steps)
    obs = jax.vmap(env.get_obs, in_axes=(0, None))(states, dream_params)
    return states.z, spec.controller.apply(ctrl_params, obs), rewards, terminated


def play_dream(agent: Agent, game: Game, episodes: int, seed: int, max_steps: int,
               video_episodes: int) -> tuple[dict, list[np.ndarray]]:
    """Dream episodes i < `episodes` with keys fold_in(key(seed), i) -> (score, the three-panel
    videos of the first `video_episodes`). A dream's return sums M's rewards up to and
    including the step its done head fires (or the step limit)."""
    wm = agent.world_model
    try:
        params = make_dream_params(
            wm.mdn, wm.mdn_params, agent.initial_mu, agent.initial_logvar,
            temperature=agent.settings.dream_temperature, max_steps=max_steps,
            obs_mode=wm.spec.obs_mode, reward_mode="head")
    except ValueError as e:
        raise ConfigError(f"--dream: {e}") from None
    returns, lengths, videos = [], [], []
    for i in range(episodes):
        key = jax.random.fold_in(jax.random.key(seed), i)
        z, actions, rewards, done = (np.asarray(x) for x in dream_episode(
            key, params, agent.ctrl_params, spec=wm.spec, num_steps=max_steps))
        ends = np.flatnonzero(done)
        length = int(ends[0]) + 1 if ends.size else max_steps
        so_far = np.cumsum(rewards[:length], dtype=np.float64)
        returns.append(float(so_far[-1]))
        lengths.append(length)
        why = "M's done head" if ends.size else "the step limit"
        print(f"dream {i + 1}/{episodes}: return {so_far[-1]:.1f} ({length} steps, ended by "
              f"{why})", flush=True)
        if i < video_episodes:
            frames = render(wm.vae, wm.vae_params, z[:length])
            videos.append(np.stack([
                compose([frames[t]], ["dream: V decodes M's z", "C: action"],
                        game.bars(actions[t]),
                        [f"dream {i + 1}", f"step {t + 1}", f"return {so_far[t]:.1f}"])
                for t in range(length)]))
    return score(list(range(episodes)), returns, lengths), videos
