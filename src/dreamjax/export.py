"""Export a trained agent: `python -m dreamjax.export RUN --out DIR` (or `dreamjax-export`).

Writes DIR as a self-contained agent folder (`dreamjax.agent_io`: V, M and C weights in npz, the
configs as JSON), then measures its score by playing the written weights (`dreamjax.play`) on the
run's evaluation seeds, and writes the model card: `card.json` (mean, std, seeds, returns,
lengths, env, the command that reproduces them, provenance: source run, model hashes, versions,
date) and `README.md`. The folder is built beside DIR and moved into place when complete, so an
interrupted export leaves DIR as it was.

`--vae-half decoder` (the default) stores V's decoder as float16: the decoder only draws what V
sees (videos, the dream's pictures), never acts, so the agent acts exactly as in the run, and the
folder is about 11 MB instead of 19 MB; `all` stores the encoder as float16 too (about 10 MB, the
actions change slightly: the card's score is that of the float16 weights), `none` keeps float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import tyro

from dreamjax import __version__, io
from dreamjax.agent_io import (
    MANIFEST,
    Agent,
    VaeHalf,
    agent_from_run,
    is_exported,
    load_agent,
    save_agent,
)
from dreamjax.errors import ConfigError
from dreamjax.experiments import cli
from dreamjax.pipeline.evaluate import environment_info
from dreamjax.playback import GAMES, check_reference, pick_game, play_real, score

PROG = "python -m dreamjax.export"
PAPER_SCORES = {"carracing": "906 ± 21 (PAPER.md §1.7)", "doom": "1092 ± 556 (PAPER.md §2.7)"}


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    """Export a run's agent with a measured model card (see `python -m dreamjax.export --help`)."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder to export: its V, M and evaluated C."""
    out: Path
    """The agent folder to write (e.g. agents/carracing)."""
    vae_half: VaeHalf = "decoder"
    """V's weights stored as float16: none, the decoder (never acts), or all of V."""
    episodes: int | None = None
    """Episodes the card's score is measured on; default: the run's evaluation's."""
    seed: int | None = None
    """First env seed of the card's episodes; default: the run's evaluation's."""
    env: Literal["carracing", "doom"] | None = None
    """The real game; default: the one with M's action size."""
    workers: int | None = None
    """Env worker processes (part of the card's reproducible layout); default: the run's."""
    envs_per_worker: int | None = None
    """Envs per worker; default: the run's."""
    note: str = ""
    """A line of provenance for the card (e.g. which committed result the run is)."""
    force: bool = False
    """Replace DIR if it is an exported agent already."""
    debug: Annotated[bool, tyro.conf.arg(help="Show the traceback of a dreamjax error.")] = False


def _check_out(out: Path, force: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise ConfigError(f"--out {out}: exists and is not empty; choose another --out, or add "
                          "--force to replace the agent in it")
    if not is_exported(out):
        raise ConfigError(f"--out {out}: not an exported agent (no {MANIFEST}); refusing to "
                          "replace it: choose another --out")


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished folder `new` onto `out` (the old one is removed after the move)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{max(1, round(n / 1e3))} kB"


def make_card(agent: Agent, folder: Path, game: str, result: dict, *, export_command: str,
              wall_s: float, run_check: dict | None, note: str) -> dict:
    """card.json: the score with its seeds and returns, how to reproduce it, and provenance."""
    s = agent.settings
    return {
        "agent": str(folder),
        "env": GAMES[game].name,
        "game": game,
        **{k: result[k] for k in ("mean", "std", "min", "max", "median", "episodes")},
        "seeds": result["seeds"],
        "returns": result["returns"],
        "lengths": result["lengths"],
        "max_steps": s.max_steps,
        "fast_env": s.fast_env,
        "action_repeat": s.action_repeat,
        "policy_seed": s.policy_seed,
        "slots": {"workers": s.workers, "envs_per_worker": s.envs_per_worker},
        "command": f"python -m dreamjax.play {folder} --episodes {result['episodes']}",
        "measured": {"by": "dreamjax.play on this folder's weights", "weights": agent.weights,
                     "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(wall_s, 1)},
        "run_evaluation": run_check,
        "provenance": {**agent.provenance, "note": note, "export_command": export_command,
                       "dreamjax": __version__, **environment_info()},
    }


TRAINED_IN = {"real": "in the real env", "dream": "inside the dream (M as the env)",
              "dream-then-real": "in the dream, then in the real env",
              "iterative": "only inside the dream, in rounds of M retrained on its real episodes "
                           "(PAPER.md §1.8)"}


def model_card(card: dict, folder: Path, agent: Agent) -> str:
    """README.md: the card for people (the files in `folder` must be written already)."""
    wm, p, spec = agent.world_model, card["provenance"], agent.world_model.spec
    seeds, slots, w = card["seeds"], card["slots"], agent.weights["vae"]
    ev = card.get("run_evaluation")
    paper = PAPER_SCORES.get(card["game"])
    rows = (
        ("vae.npz", f"V: ConvVAE, z_dim {wm.z_dim}; encoder {w['encoder']}, decoder "
                    f"{w['decoder']}"),
        ("mdnrnn.npz", f"M: MDN-RNN, {wm.hidden} LSTM units, {wm.mdn.n_mix} mixtures"),
        ("controller.npz", f"C: `{spec.kind}`, {spec.num_params} parameters"),
        ("initial_latents.npz", "the dream's bank of first-frame latents (for `--dream`)"),
        ("config.json", "the source run's training config"),
        ("agent.json", "manifest: models, play settings, sha256 of each file, provenance"),
        ("card.json", "this card as data: seeds, returns, lengths, command"),
    )
    files = "\n".join(f"| `{name}` | {what} | {_size(folder / name)} |" for name, what in rows)
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    lines = [
        f"# dreamjax agent: {card['env']}",
        "",
        "A World Models agent (Ha & Schmidhuber 2018) trained with dreamjax. V, a convolutional "
        f"VAE, encodes each 64×64 frame into z ({wm.z_dim} numbers); M, an MDN-RNN "
        f"({wm.hidden} LSTM units), carries the memory h; C, the `{spec.kind}` controller "
        f"({spec.num_params} parameters), acts on them. C was trained by CMA-ES "
        f"{TRAINED_IN.get(p.get('train_in'), '')} (profile `{p.get('profile')}`).",
        "",
        "## Score",
        "",
        f"**{card['mean']:.1f} ± {card['std']:.1f}** (mean ± std of the return) over "
        f"{card['episodes']} episodes of {card['env']}, env seeds {seeds[0]}..{seeds[-1]}, at "
        f"most {card['max_steps']} steps each"
        + (f" ({card['max_steps'] * card['action_repeat']} game frames, each action held "
           f"{card['action_repeat']})" if card["action_repeat"] > 1 else "")
        + (f"; the paper: {paper}." if paper else "."),
        "",
        f"Measured by `dreamjax.play` on the weights in this folder ({card['measured']['date']}, "
        f"{card['measured']['wall_s']:.0f} s)." + (
            "" if ev is None else
            f" The source run's own evaluation on the same seeds: {ev['mean']:.1f} ± "
            f"{ev['std']:.1f}, "
            + ("the same returns." if ev["same_returns"] else "other returns.")),
        "",
        "## Reproduce and watch",
        "",
        "```bash",
        "pip install -e .",
        card["command"],
        f"python -m dreamjax.play {card['agent']} --episodes 1 --video drive.mp4",
        "```",
        "",
        "The first command prints every episode's return and checks them against `card.json`. "
        "An episode's return is a function of its seed, the weights and the worker pool's "
        f"layout: the policy acts for {slots['workers']} workers × {slots['envs_per_worker']} "
        "envs in one batched call, and V's batched convolutions round differently at other "
        "batch sizes, so `play` uses this layout unless `--workers` / `--envs-per-worker` say "
        "otherwise; another CPU or a GPU may round differently too. The video shows the real "
        "frame, V's reconstruction and C's action side by side; `--window` shows them live, "
        "`--dream` plays C inside M.",
        "",
        "## Files",
        "",
        "| file | what | size |",
        "|---|---|---|",
        files,
        "",
        "No file is a pickle. `agent.json` holds the sha256 of each weight file, and `play` "
        "refuses a changed one.",
        "",
        "## Provenance",
        "",
        f"- source run: `{p.get('run')}`, C from `{p.get('controller_file')}` (generation "
        f"{p.get('controller_meta', {}).get('generation')})",
        f"- V `{p.get('vae_id')}`, M `{p.get('mdnrnn_id')}`",
        *([f"- {p['note']}"] if p.get("note") else []),
        f"- exported by `{p['export_command']}`: {versions}",
        "",
    ]
    return "\n".join(lines)


def export(args: ExportArgs, command_line: str = PROG) -> dict:
    """Write the agent folder and its card (module docstring); returns the card.
    `command_line` is recorded as the export command."""
    for flag in ("episodes", "workers", "envs_per_worker"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    _check_out(args.out, args.force)
    agent = agent_from_run(args.run)
    game = pick_game(agent, args.env)
    s = agent.settings
    settings = dataclasses.replace(
        s, env=game, workers=args.workers or s.workers,
        envs_per_worker=args.envs_per_worker or s.envs_per_worker,
        seed_start=s.seed_start if args.seed is None else args.seed,
        episodes=args.episodes or s.episodes)
    agent = dataclasses.replace(agent, settings=settings)
    tmp = args.out.with_name(f".{args.out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_agent(tmp, agent, vae_half=args.vae_half)
        shipped = load_agent(tmp)
        seeds = list(range(settings.seed_start, settings.seed_start + settings.episodes))
        print(f"[dreamjax] measuring {args.out} on {len(seeds)} episodes, seeds {seeds[0]}.."
              f"{seeds[-1]}", flush=True)
        t0 = time.time()
        results = play_real(shipped, GAMES[game], seeds, max_steps=settings.max_steps,
                            workers=settings.workers, envs_per_worker=settings.envs_per_worker,
                            progress=lambda r: print(f"  seed {r.spec.seed}: return "
                                                     f"{r.total_reward:.1f}", flush=True))
        result = score(seeds, [r.total_reward for r in results], [r.length for r in results])
        run_check = None
        check = check_reference(agent, seeds, result["returns"], max_steps=settings.max_steps,
                                slots=settings.workers * settings.envs_per_worker)
        if check is not None and check["episodes"] == len(seeds):
            ref = agent.reference or {}
            run_check = {"mean": ref.get("mean"), "std": ref.get("std"),
                         "same_returns": not check["differ"]}
        card = make_card(shipped, args.out, game, result, export_command=command_line,
                         wall_s=time.time() - t0, run_check=run_check, note=args.note)
        io.write_json(tmp / "card.json", card)
        io.write_bytes(tmp / "README.md", model_card(card, tmp, shipped))
        _replace_dir(tmp, args.out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    total = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"[dreamjax] exported {args.out} ({total:.1f} MB): {card['mean']:.1f} ± "
          f"{card['std']:.1f} over {card['episodes']} episodes", flush=True)
    if run_check is not None:
        print(f"[dreamjax] {'same' if run_check['same_returns'] else 'other'} returns as the "
              "run's own evaluation", flush=True)
    return card


def main(argv: list[str] | None = None) -> int:
    """The CLI: a dreamjax error is one line `error: ...` and a non-zero exit code."""

    def body(args: ExportArgs, argv: list[str]) -> int:
        export(args, shlex.join([*PROG.split(), *argv]))
        return 0

    return cli.tool_main(ExportArgs, body, argv, prog=PROG, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
