"""The iterative world-model loop, `--train-in iterative` (PAPER.md §1.8): the controller stage
as rounds of real data from C, M fine-tuned, C retrained inside M.

Round r, in `controller/iterative/round_<r>/`:

1. r > 0: `episodes/` real episodes of C_{r-1} with N(0, action_noise) on its actions, encoded
   by V into `series/`; `mdnrnn/`: M_{r-1} fine-tuned for `iterate.mdnrnn_steps` on every
   series so far (the random data, every earlier round's check and noisy episodes).
   Round 0 uses the run's own M (the mdnrnn stage).
2. `dream/`: CMA-ES inside M_r's dream (round 0: `es.dream_generations` from zeros; later:
   `iterate.dream_generations` from C_{r-1}, or with `iterate.start = "best"` from the C of the
   round with the best check return so far, so that a round that regressed is not built on).
3. `check/`: `iterate.check_episodes` noise-free real episodes of C_r on training seeds (never
   the evaluation seeds), encoded into `check_series/`: C_r's real return, and held-out data
   for M_r's fidelity (`dreamjax.dream.fidelity`: its reward prediction and open-loop drift on
   C_r's own states, where an exploit lives). They are also the next round's data.
4. `round.json` (written last): the dream-vs-real row of the round.

Every step resumes on its own (collection, encoding, M's and the ES's checkpoints) and a round
with `round.json` is done. The final C is the round with the best check return (training seeds
only); `controller/iterative/best.npz` is a copy of it and `DONE.json` names its M, which the
evaluation then runs (`dreamjax.pipeline.artifacts.final_world_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dreamjax import io
from dreamjax.agent import WorldModel, WorldModelPolicy, encode_frames
from dreamjax.config import ExperimentConfig
from dreamjax.data.collect import collect
from dreamjax.data.episodes import list_episodes, load_series
from dreamjax.data.series import encode_series
from dreamjax.dream.fidelity import episode_fidelity, summarize
from dreamjax.es import train_controller_dream
from dreamjax.es.sharding import population_mesh
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.pools import collect_pool_factory
from dreamjax.pipeline.run import RunFolder
from dreamjax.pipeline.training import train_mdnrnn

ITERATIVE = "iterative"
CONTROLLER_POLICY = "controller"
"""The `policy` label of episodes recorded with a trained C."""


def iterative_dir(run: RunFolder) -> Path:
    """`controller/iterative`."""
    return run.path("controller") / ITERATIVE


def round_dir(run: RunFolder, r: int) -> Path:
    """`controller/iterative/round_<r>` (two digits)."""
    return iterative_dir(run) / f"round_{r:02d}"


def _master(cfg: ExperimentConfig, r: int, what: str) -> int:
    """The collection master seed of round r's `what` episodes (distinct per round and kind)."""
    return zlib.crc32(f"{cfg.seed}/iterative/{r}/{what}".encode())


def _one(params: Any) -> Any:
    return jax.tree.map(lambda x: x[None], params)


def _encode(run: RunFolder, cfg: ExperimentConfig, vae: tuple, episodes: Path, series: Path
            ) -> None:
    """V's (mu, logvar) series of `episodes` into `series` (resumable)."""
    model, params, vae_id = vae
    encode_series(functools.partial(encode_frames, model, params), episodes, series,
                  batch_size=cfg.encode.batch_size, vae_id=vae_id)


def _record(cfg: ExperimentConfig, game: Any, wm: WorldModel, ctrl_params: Any, folder: Path,
            episodes: int, master: int, noise: float) -> None:
    """`episodes` real episodes of C (`ctrl_params`) with action noise `noise` into `folder`."""
    ccfg = dataclasses.replace(cfg.collect, episodes=episodes, policy=CONTROLLER_POLICY)

    def factory(seed: int, num_slots: int) -> WorldModelPolicy:
        return WorldModelPolicy(wm, _one(ctrl_params), seed=seed, action_noise=noise)

    collect(master, folder, ccfg, env_fn=game.env_fn(cfg, ccfg.max_steps),
            workers=cfg.num_workers, policy_factory=factory, min_frames=game.min_frames,
            pool_factory=collect_pool_factory(cfg))


def _fidelity(wm: WorldModel, series: Path) -> dict:
    """`dreamjax.dream.fidelity` of the world model's M on every episode in `series` ({} for an
    M without a reward head)."""
    if not wm.mdn.reward_head:
        return {}
    rows = []
    for f in list_episodes(series):
        s = load_series(f)
        rows.append(episode_fidelity(wm.mdn, wm.mdn_params, s["mu"], s["actions"],
                                     s["rewards"]))
    return summarize(rows)


def _series_dirs(run: RunFolder, r: int) -> list[Path]:
    """Every series M_r trains on: the random data, rounds < r's check and rounds <= r's
    noisy episodes."""
    dirs = [run.path("encode")]
    for j in range(r):
        dirs.append(round_dir(run, j) / "check_series")
        dirs.append(round_dir(run, j + 1) / "series")
    return dirs


def start_row(cfg: ExperimentConfig, rows: list[dict]) -> dict:
    """The earlier round whose C round len(rows) starts CMA-ES from: the last one, or with
    `iterate.start = "best"` the one with the best check return (the earliest of equals)."""
    if cfg.iterate.start == "previous":
        return rows[-1]
    return max(rows, key=lambda row: row["real_return"])


def run_round(cfg: ExperimentConfig, run: RunFolder, game: Any, r: int, rows: list[dict],
              vae: tuple, key: jax.Array) -> dict:
    """Round r (see the module docstring); `rows` are rounds 0..r-1's rows. Returns round r's
    row."""
    it, rd = cfg.iterate, round_dir(run, r)
    done = rd / "round.json"
    if done.is_file():
        return io.read_json(done)
    mdn_dir = run.path("mdnrnn")
    init_params, started_from = None, None
    if rows:
        prev = rows[-1]
        prev_wm = artifacts.load_world_model(run, cfg.controller, run.root / prev["mdnrnn"],
                                             vae)
        prev_params, _ = artifacts.load_controller_params(
            round_dir(run, r - 1) / "dream" / "best.npz", prev_wm.spec)
        started_from = start_row(cfg, rows)["round"]
        init_params, _ = artifacts.load_controller_params(
            round_dir(run, started_from) / "dream" / "best.npz", prev_wm.spec)
        _record(cfg, game, prev_wm, prev_params, rd / "episodes",
                it.episodes - it.check_episodes, _master(cfg, r, "noisy"), it.action_noise)
        _encode(run, cfg, vae, rd / "episodes", rd / "series")
        mdn_dir = rd / "mdnrnn"
        if not (mdn_dir / "DONE.json").is_file():
            members = prev_wm.mdn_params if prev_wm.mdn_members is None else prev_wm.mdn_members
            train_mdnrnn(jax.random.fold_in(key, 1), _series_dirs(run, r), mdn_dir,
                         dataclasses.replace(cfg.mdnrnn, steps=it.mdnrnn_steps),
                         z_dim=cfg.vae.z_dim, action_dim=game.action_dim,
                         restart_input=game.restart_input, init_params=members)
    wm = artifacts.load_world_model(run, cfg.controller, mdn_dir, vae)
    dream_params = artifacts.config_dream_params(cfg, run, wm, _series_dirs(run, r))
    generations = it.dream_generations if rows else cfg.es.dream_generations
    res = train_controller_dream(
        jax.random.fold_in(key, 2), dream_params, rd / "dream", cfg.es, cfg.controller,
        generations=generations, init_params=init_params,
        fitness_mode=cfg.dream.ensemble_fitness,
        mesh=population_mesh(cfg.devices, cfg.es.popsize))
    _record(cfg, game, wm, res.params, rd / "check", it.check_episodes,
            _master(cfg, r, "check"), 0.0)
    _encode(run, cfg, vae, rd / "check", rd / "check_series")
    real = [float(load_series(f)["rewards"].sum()) for f in list_episodes(rd / "check_series")]
    row = {
        "round": r,
        "mdnrnn": str(mdn_dir.relative_to(run.root)),
        "episodes_so_far": sum(len(list_episodes(d)) for d in _series_dirs(run, r)),
        "dream_generations": generations,
        "started_from": started_from,
        "dream_return": res.best_return,
        "real_return": float(np.mean(real)),
        "real_std": float(np.std(real)),
        "check_episodes": len(real),
        "fidelity": _fidelity(wm, rd / "check_series"),
    }
    row["gap"] = row["dream_return"] - row["real_return"]
    io.write_json(done, row)
    print(f"[dreamjax] iterative round {r}: dream {row['dream_return']:.1f}, real "
          f"{row['real_return']:.1f} ± {row['real_std']:.1f} on {len(real)} training-seed "
          f"episodes", flush=True)
    return row


def run_iterative(cfg: ExperimentConfig, run: RunFolder, game: Any, key: jax.Array) -> dict:
    """All rounds, then the final C: the round with the best real check return."""
    vae = artifacts.load_vae(run)
    rows: list[dict] = []
    for r in range(cfg.iterate.rounds):
        rows.append(run_round(cfg, run, game, r, list(rows), vae, jax.random.fold_in(key, r)))
    best = max(rows, key=lambda row: row["real_return"])
    src = round_dir(run, best["round"]) / "dream" / "best.npz"
    io.write_bytes(iterative_dir(run) / "best.npz", src.read_bytes())
    summary = {"rounds": rows, "selected_round": best["round"], "mdnrnn": best["mdnrnn"],
               "selected_by": "real return on the check episodes (training seeds)"}
    io.write_json(iterative_dir(run) / "DONE.json", summary)
    return {"iterative": {"selected_round": best["round"], "rounds": [
        {k: row[k] for k in ("round", "dream_return", "real_return", "gap")} for row in rows]}}

