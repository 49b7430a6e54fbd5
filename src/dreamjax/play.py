"""Watch an agent drive: `python -m dreamjax.play AGENT` (or `dreamjax-play AGENT`).

AGENT is an exported agent folder (e.g. `agents/carracing`, `dreamjax.export`) or a run folder.
The agent (V, M and C: `dreamjax.agent.WorldModelPolicy`) plays real episodes on env seeds
S..S+N-1 (`--seed`, `--episodes`; by default the model card's seeds and count, for a run folder
its evaluation's) in the env worker pool; each episode's return is printed as it ends, then the
mean ± std (`np.std`, as the paper), and `--json FILE` writes the seeds and returns. Where the
model card (or a run folder's evaluate/results.json) has a played seed, the return is checked
against it.

- `--video FILE`: an MP4 of the first `--video-episodes` episodes, three panels side by side:
  the real frame, V's reconstruction (V decodes the posterior mean of z), and C's action (bars:
  steer, gas, brake for CarRacing) with the step and the return so far.
- `--window`: the same panels live in a pygame window, the episodes played one by one in this
  process; on a machine without a display, a one-line error.
- `--dream`: C inside M instead (the dream: M's reward head, its done head ends an episode,
  τ from the agent's config), decoded by V; prints the dream returns, `--video` shows them.

Determinism: an episode is a function of its seed, the weights and the pool's slot count. The
policy acts for all `--workers` x `--envs-per-worker` slots in one batched call, and V's batched
convolutions round differently at another batch size, so play uses the card's (the run's) layout
unless told otherwise; `--window` pads its one env to the same batch.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from dreamjax import io
from dreamjax.agent_io import Agent, load_any
from dreamjax.envs.pool import EpisodeResult, EpisodeSpec
from dreamjax.errors import ConfigError
from dreamjax.experiments import cli
from dreamjax.panels import Window, check_display, compose
from dreamjax.pipeline.viz import write_video
from dreamjax.playback import (
    GAMES,
    REAL_TITLES,
    Game,
    check_reference,
    episode_video,
    pick_game,
    play_dream,
    play_here,
    play_real,
    reconstructions,
    score,
)

PROG = "python -m dreamjax.play"


@dataclasses.dataclass(frozen=True)
class PlayArgs:
    """Watch an agent drive (see `python -m dreamjax.play --help`)."""

    agent: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="AGENT")]
    """An exported agent folder (e.g. agents/carracing) or a run folder."""
    episodes: int | None = None
    """Episodes to play; default: the model card's count (a run folder: its evaluation's)."""
    seed: int | None = None
    """First env seed (episodes play seeds S..S+N-1); default: the card's first seed. With
    --dream: the seed of the dreams' keys (default 0)."""
    env: Literal["carracing", "doom"] | None = None
    """The real game; default: the agent's."""
    video: Path | None = None
    """Write an MP4 (real frame | V's reconstruction | action) of the first --video-episodes."""
    video_episodes: int = 1
    """Episodes the MP4 shows."""
    window: bool = False
    """Show the panels live in a window (needs a display)."""
    dream: bool = False
    """Play C inside M (the dream), decoded by V, instead of the real env."""
    json: Path | None = None
    """Write the seeds, returns and their mean and std to this JSON file."""
    max_steps: int | None = None
    """Step limit per episode; default: the agent's (CarRacing: 1000)."""
    workers: int | None = None
    """Env worker processes; default: the card's (the run's)."""
    envs_per_worker: int | None = None
    """Envs per worker; default: the card's (the run's)."""
    fps: int = 50
    """Frames per second of the MP4 and the window."""
    debug: Annotated[bool, tyro.conf.arg(help="Show the traceback of a dreamjax error.")] = False


def _check_args(args: PlayArgs) -> None:
    for flag in ("episodes", "max_steps", "workers", "envs_per_worker"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.video_episodes < 0 or args.fps < 1:
        raise ConfigError("--video-episodes must be >= 0 and --fps >= 1")
    if args.window:
        check_display()


def _print_score(what: str, result: dict) -> None:
    print(f"{what}: {result['mean']:.1f} ± {result['std']:.1f} over {result['episodes']} "
          f"episodes", flush=True)


def _print_check(check: dict | None) -> None:
    if check is None:
        return
    n, bad = check["episodes"], check["differ"]
    if not bad:
        print(f"same returns as {check['against']} on {n}/{n} episodes", flush=True)
        return
    shown = ", ".join(f"seed {d['seed']}: {d['reference']:.3f} -> {d['now']:.3f}"
                      for d in bad[:3])
    print(f"differs from {check['against']} on {len(bad)} of {n} episodes ({shown})", flush=True)


def _play_window(agent: Agent, game: Game, seeds: list[int], max_steps: int, slots: int,
                 args: PlayArgs) -> tuple[list[float], list[int], list[np.ndarray]]:
    """The episodes one by one in a window (and the first --video-episodes kept for the MP4)."""
    window = Window(f"dreamjax: {args.agent}", args.fps)
    returns, lengths, videos = [], [], []
    try:
        for k, seed in enumerate(seeds):
            kept: list[np.ndarray] = []

            def on_step(raw, seen, action, total, t, seed=seed, kept=kept, k=k):
                recon = reconstructions(agent, seen[None], batch=1)[0]
                frame = compose([raw, recon], REAL_TITLES, game.bars(action),
                                [f"seed {seed}", f"step {t}", f"return {total:.1f}"])
                if args.video is not None and k < args.video_episodes:
                    kept.append(frame)
                return window.show(frame)

            total, length, stopped = play_here(agent, game, EpisodeSpec(seed=seed), slots=slots,
                                           max_steps=max_steps, on_step=on_step)
            if kept:
                videos.append(np.stack(kept))
            if stopped:
                print(f"window closed during seed {seed}", flush=True)
                break
            returns.append(total)
            lengths.append(length)
            print(f"episode {k + 1}/{len(seeds)} seed {seed}: return {total:.1f} ({length} "
                  "steps)", flush=True)
    finally:
        window.close()
    return returns, lengths, videos


def _show_all(videos: list[np.ndarray], title: str, fps: int) -> None:
    """Frames (T, H, W, 3) of each video in a window, until they end or it is closed."""
    window = Window(title, fps)
    try:
        for frames in videos:
            if not all(window.show(f) for f in frames):
                return
    finally:
        window.close()


def run(args: PlayArgs) -> int:
    """Play (module docstring); returns the exit code."""
    _check_args(args)
    agent = load_any(args.agent)
    name = pick_game(agent, args.env)
    game = GAMES[name]
    s = agent.settings
    max_steps = args.max_steps or s.max_steps
    n = args.episodes or s.episodes
    workers, per = args.workers or s.workers, args.envs_per_worker or s.envs_per_worker
    what = "dream" if args.dream else "agent"
    print(f"[dreamjax] {'exported agent' if agent.exported else 'run folder'} {args.agent} | "
          f"{game.name}{' (dream)' if args.dream else ''} | {n} episodes", flush=True)
    if args.dream:
        shown = n if args.window else args.video_episodes if args.video else 0
        result, videos = play_dream(agent, game, n, args.seed or 0, max_steps, shown)
        if args.window:
            _show_all(videos, f"dreamjax dream: {args.agent}", args.fps)
            videos = videos[: args.video_episodes]
        check = None
    else:
        first = s.seed_start if args.seed is None else args.seed
        seeds = list(range(first, first + n))
        if (workers, per) != (s.workers, s.envs_per_worker):
            print(f"note: {workers * per} policy slots instead of the agent's "
                  f"{s.workers * s.envs_per_worker}: returns may differ from its card in the "
                  "last bits", flush=True)
        if args.window:
            returns, lengths, videos = _play_window(agent, game, seeds, max_steps,
                                                    workers * per, args)
            seeds = seeds[: len(returns)]
        else:
            done = []

            def progress(r: EpisodeResult) -> None:
                done.append(r)
                print(f"episode {len(done)}/{n} seed {r.spec.seed}: return "
                      f"{r.total_reward:.1f} ({r.length} steps)", flush=True)

            record = min(args.video_episodes, n) if args.video else 0
            results = play_real(agent, game, seeds, max_steps=max_steps, workers=workers,
                                envs_per_worker=per, record=record, progress=progress)
            returns = [r.total_reward for r in results]
            lengths = [r.length for r in results]
            videos = [episode_video(agent, game, r) for r in results[:record]]
        if not returns:
            print("no episode finished before the window was closed", flush=True)
            return 0
        result = score(seeds, returns, lengths)
        check = check_reference(agent, seeds, returns, max_steps=max_steps, slots=workers * per)
    _print_score(what, result)
    _print_check(check)
    if args.video is not None and videos:
        write_video(np.concatenate(videos), args.video, fps=args.fps)
        print(f"video: {args.video}", flush=True)
    if args.json is not None:
        io.write_json(args.json, {"agent": str(args.agent), "env": game.name,
                                  "dream": args.dream, "max_steps": max_steps,
                                  "slots": {"workers": workers, "envs_per_worker": per},
                                  **result, "check": check})
    return 0


def main(argv: list[str] | None = None) -> int:
    """The CLI: a dreamjax error is one line `error: ...` and a non-zero exit code."""
    return cli.tool_main(PlayArgs, lambda args, _: run(args), argv, prog=PROG,
                         description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
