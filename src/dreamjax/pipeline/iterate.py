"""The iterative world-model loop, `--train-in iterative` (PAPER.md §1.8): the controller stage
as rounds of real data from C, M fine-tuned, C retrained inside M.

Round r, in `controller/iterative/round_<r>/`:

1. r > 0: `episodes/` real episodes of C_{r-1} with N(0, action_noise) on its actions (and with
   `action_offset` a constant offset per episode), encoded by V into `series/`; `mdnrnn/`:
   M_{r-1} fine-tuned for `iterate.mdnrnn_steps` on every series so far (the random data,
   every earlier round's check and noisy episodes).
   Round 0 uses the run's own M (the mdnrnn stage).
2. `dream/`: CMA-ES inside M_r's dream (round 0: `es.dream_generations` from zeros; later:
   `iterate.dream_generations` from C_{r-1}, or with `iterate.start = "best"` from the C of the
   round with the best check return so far, so that a round that regressed is not built on).
   With `iterate.temperatures`, the round first picks its τ from that grid
   (`choose_temperature`, `temperature.json`): the τ whose dream keeps the open-loop data
   policy's parts (Doom's) and C_{r-1} (with `iterate.calibrate_probes` also the game's
   open-loop probes: a held button, patrols) alive as long as the real game did, or, in
   CarRacing (`GameSpec.calibrate_on`), pays C_{r-1} the return its checks got. A fine-tuned M
   is harsher or kinder than the last one, and a fixed τ does not follow it.
3. `check/`: `iterate.check_episodes` noise-free real episodes of C_r on training seeds (never
   the evaluation seeds), encoded into `check_series/`: C_r's real return, and held-out data
   for M_r's fidelity (`dreamjax.dream.fidelity`: its reward prediction and open-loop drift on
   C_r's own states, where an exploit lives). They are also the next round's data.
   With `iterate.retries`, a C whose checks fall below `iterate.retry_below` (default: the
   data policy's mean real return) is set aside in `rejected/<a>/` and CMA-ES runs again in
   the same dream with a new key (a round whose C exploits the dream does not end the loop).
4. With `iterate.select_episodes`: `select/`, more noise-free real episodes of C_r on training
   seeds, the same tracks every round, for the final pick only (not data).
5. `round.json` (written last): the dream-vs-real row of the round.

Every step resumes on its own (collection, encoding, M's and the ES's checkpoints) and a round
with `round.json` is done. The final C is the round with the best mean real return over its
check and selection episodes (training seeds only); `controller/iterative/best.npz` is a copy of
it and `DONE.json` names its M, which the evaluation then runs
(`dreamjax.pipeline.artifacts.final_world_model`).
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
from dreamjax.config import ExperimentConfig, with_temperature
from dreamjax.data.collect import collect
from dreamjax.data.episodes import list_episodes, load_episode, load_series
from dreamjax.data.series import encode_series
from dreamjax.dream.calibration import schedule_lengths_jit
from dreamjax.dream.ensemble import member
from dreamjax.dream.env import DreamEnv
from dreamjax.dream.fidelity import episode_fidelity, summarize
from dreamjax.errors import ConfigError
from dreamjax.es import train_controller_dream
from dreamjax.es.dream import make_mean_eval_fn
from dreamjax.es.sharding import population_mesh
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.pools import collect_pool_factory
from dreamjax.pipeline.run import RunFolder
from dreamjax.pipeline.training import train_mdnrnn

ITERATIVE = "iterative"
CONTROLLER_POLICY = "controller"
"""The `policy` label of episodes recorded with a trained C."""
TEMPERATURE_DREAMS = 64
"""Dreams per probe and τ when a round picks its τ (`iterate.temperatures`)."""
REJECTED = "rejected"
"""`round_<r>/rejected/<a>/`: a retried attempt's `ATTEMPT_DIRS`, beside `<a>.json`, its row
(`iterate.retries`)."""
ATTEMPT_DIRS = ("dream", "check", "check_series")
"""A round's folders that one CMA-ES attempt writes."""


def iterative_dir(run: RunFolder) -> Path:
    """`controller/iterative`."""
    return run.path("controller") / ITERATIVE


def round_dir(run: RunFolder, r: int) -> Path:
    """`controller/iterative/round_<r>` (two digits)."""
    return iterative_dir(run) / f"round_{r:02d}"


def _master(cfg: ExperimentConfig, r: int, what: str) -> int:
    """The collection master seed of round r's `what` episodes (distinct per round and kind)."""
    return zlib.crc32(f"{cfg.seed}/iterative/{r}/{what}".encode())


def select_master(seed: int) -> int:
    """The collection master seed of the selection episodes: the same training-seed tracks in
    every round (never the evaluation seeds)."""
    return zlib.crc32(f"{seed}/iterative/select".encode())


def _one(params: Any) -> Any:
    return jax.tree.map(lambda x: x[None], params)


def _encode(run: RunFolder, cfg: ExperimentConfig, vae: tuple, episodes: Path, series: Path
            ) -> None:
    """V's (mu, logvar) series of `episodes` into `series` (resumable)."""
    model, params, vae_id = vae
    encode_series(functools.partial(encode_frames, model, params), episodes, series,
                  batch_size=cfg.encode.batch_size, vae_id=vae_id)


def _record(cfg: ExperimentConfig, game: Any, wm: WorldModel, ctrl_params: Any, folder: Path,
            episodes: int, master: int, noise: float, offset: tuple[float, ...] = ()) -> None:
    """`episodes` real episodes of C (`ctrl_params`) with action noise `noise` and per-episode
    offsets of half-widths `offset` (`WorldModelPolicy`) into `folder`."""
    ccfg = dataclasses.replace(cfg.collect, episodes=episodes, policy=CONTROLLER_POLICY)

    def factory(seed: int, num_slots: int) -> WorldModelPolicy:
        return WorldModelPolicy(wm, _one(ctrl_params), seed=seed, action_noise=noise,
                                action_offset=offset)

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


def calibration_error(probes: list[dict], on: str = "life") -> float:
    """How far the dream is from the game on the probes' means (`dream_mean`, `real_mean`):
    on "life", the mean |log(dream / real)| (each life counted as at least one step); on
    "return" (which may be negative), the mean |dream - real|. 0 for a dream that matches."""
    if on == "return":
        return float(np.mean([abs(p["dream_mean"] - p["real_mean"]) for p in probes]))
    return float(np.mean([abs(np.log(max(p["dream_mean"], 1.0) / max(p["real_mean"], 1.0)))
                          for p in probes]))


def choose_temperature(cfg: ExperimentConfig, run: RunFolder, game: Any, wm: WorldModel,
                       series: list[Path], prev: tuple[Any, float] | None, key: jax.Array,
                       path: Path) -> dict:
    """The τ of `iterate.temperatures` that round's dream (M of `wm`) is calibrated at: the
    smallest `calibration_error` (on `game.calibrate_on`) of its probes, the data policy's
    parts (`game.data_lives`), `prev` = (C_{r-1}'s params, its mean real life or return on the
    check episodes) and, with
    `iterate.calibrate_probes`, the game's open-loop probes (`game.probes`), all in the same
    `TEMPERATURE_DREAMS` dreams per τ (the same key). `{"tau": dream.temperature}` without a
    grid or a probe. Cached in `path`."""
    if path.is_file():
        return io.read_json(path)
    grid = cfg.iterate.temperatures
    fixed = game.probes(cfg) if cfg.iterate.calibrate_probes and game.probes else []
    if not grid or (game.data_lives is None and prev is None and not fixed):
        return {"tau": cfg.dream.temperature, "grid": []}
    eval_fn = make_mean_eval_fn(DreamEnv(), wm.spec.controller.apply, TEMPERATURE_DREAMS,
                                cfg.es.max_steps, cfg.es.compact_every)
    rows = []
    for tau in grid:
        c = with_temperature(cfg, tau)
        dream = artifacts.config_dream_params(c, run, wm, series)
        probes = [] if game.data_lives is None else [
            {"probe": p["policy"], "dream_mean": p["dream_mean"], "real_mean": p["real_mean"]}
            for p in game.data_lives(c, run, member(dream, 0), key, TEMPERATURE_DREAMS)]
        if prev is not None:
            returns, lengths = eval_fn(jax.random.fold_in(key, len(probes)), prev[0], dream)
            dream_mean = returns if game.calibrate_on == "return" else lengths
            probes.append({"probe": "previous C", "dream_mean": float(np.mean(dream_mean)),
                           "real_mean": prev[1]})
        for p in fixed:
            tiled = np.broadcast_to(p["actions"], (TEMPERATURE_DREAMS, *p["actions"].shape))
            lengths = schedule_lengths_jit(jax.random.fold_in(key, len(probes)),
                                           member(dream, 0), tiled)
            probes.append({"probe": p["probe"], "dream_mean": float(np.mean(lengths)),
                           "real_mean": p["real_mean"]})
        rows.append({"tau": tau, "probes": probes,
                     "error": calibration_error(probes, game.calibrate_on)})
        print(f"[dreamjax] τ {tau:.2f}: " + ", ".join(
            f"{p['probe']} {p['dream_mean']:.0f}/{p['real_mean']:.0f}" for p in probes)
            + f" (dream/real {game.calibrate_on}), error {rows[-1]['error']:.3f}", flush=True)
    out = {"tau": min(rows, key=lambda row: row["error"])["tau"], "on": game.calibrate_on,
           "grid": rows}
    io.write_json(path, out)
    return out


def _check_lives(rd: Path) -> float:
    """The mean length of round `rd`'s check episodes (C's real life)."""
    return float(np.mean([load_series(f)["rewards"].size
                          for f in list_episodes(rd / "check_series")]))


def selection_return(row: dict) -> float:
    """What the final pick maximises: a round's mean real return over its check and selection
    episodes (`iterate.select_episodes`), or over its checks alone when it has none."""
    return row.get("selection_return", row["real_return"])


def start_row(cfg: ExperimentConfig, rows: list[dict]) -> dict:
    """The earlier round whose C round len(rows) starts CMA-ES from: the last one, or with
    `iterate.start = "best"` the one with the best `selection_return` (the earliest of
    equals)."""
    if cfg.iterate.start == "previous":
        return rows[-1]
    return max(rows, key=selection_return)


def _series_returns(folder: Path) -> list[float]:
    """The real return of every encoded episode in `folder`."""
    return [float(load_series(f)["rewards"].sum()) for f in list_episodes(folder)]


def retry_floor(cfg: ExperimentConfig, run: RunFolder) -> float:
    """The check return below which a round retries (`iterate.retries`): `iterate.retry_below`,
    or the data policy's mean real return over the run's collected episodes."""
    if cfg.iterate.retry_below is not None:
        return cfg.iterate.retry_below
    return float(np.mean(_series_returns(run.path("encode"))))


def _attempt_key(key: jax.Array, attempt: int) -> jax.Array:
    """The dream ES key of a round's attempt: the round's own for attempt 0 (so a run without
    retries is unchanged), a fold of it for each retry."""
    k = jax.random.fold_in(key, 2)
    return k if attempt == 0 else jax.random.fold_in(k, attempt)


def _move_attempt(rd: Path, attempt: int) -> None:
    """Move the attempt's folders into `rejected/<attempt>/` (each rename atomic; a rerun
    finishes a move a kill cut short, and never moves a later attempt's folders)."""
    dest = rd / REJECTED / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ATTEMPT_DIRS:
        if (rd / name).exists() and not (dest / name).exists():
            (rd / name).rename(dest / name)


def _rejected(rd: Path) -> list[dict]:
    """The rows of the round's rejected attempts, in order (a move cut short is finished)."""
    rows = []
    while (rd / REJECTED / f"{len(rows)}.json").is_file():
        rows.append(io.read_json(rd / REJECTED / f"{len(rows)}.json"))
    if rows:
        _move_attempt(rd, len(rows) - 1)
    return rows


def _reject(rd: Path, r: int, attempt: int, dream_return: float, real: list[float],
            floor: float) -> dict:
    """Record the attempt's row (`rejected/<attempt>.json`, first) and move its folders aside."""
    row = {"attempt": attempt, "dream_return": float(dream_return),
           "real_return": float(np.mean(real)), "real_std": float(np.std(real)),
           "check_episodes": len(real), "below": floor}
    io.write_json(rd / REJECTED / f"{attempt}.json", row)
    _move_attempt(rd, attempt)
    print(f"[dreamjax] iterative round {r}: attempt {attempt} checks {row['real_return']:.1f}, "
          f"below {floor:.1f}: training C again with a new key", flush=True)
    return row


def run_round(cfg: ExperimentConfig, run: RunFolder, game: Any, r: int, rows: list[dict],
              vae: tuple, key: jax.Array) -> dict:
    """Round r (see the module docstring); `rows` are rounds 0..r-1's rows. Returns round r's
    row."""
    it, rd = cfg.iterate, round_dir(run, r)
    done = rd / "round.json"
    if done.is_file():
        return io.read_json(done)
    mdn_dir = run.path("mdnrnn")
    init_params, started_from, prev_c = None, None, None
    if rows:
        prev = rows[-1]
        prev_wm = artifacts.load_world_model(run, cfg.controller, run.root / prev["mdnrnn"],
                                             vae)
        prev_params, _ = artifacts.load_controller_params(
            round_dir(run, r - 1) / "dream" / "best.npz", prev_wm.spec)
        if it.temperatures:  # a probe of the round's τ choice
            prev_c = (prev_params, prev["real_return"] if game.calibrate_on == "return"
                      else _check_lives(round_dir(run, r - 1)))
        started_from = start_row(cfg, rows)["round"]
        init_params, _ = artifacts.load_controller_params(
            round_dir(run, started_from) / "dream" / "best.npz", prev_wm.spec)
        _record(cfg, game, prev_wm, prev_params, rd / "episodes",
                it.episodes - it.check_episodes, _master(cfg, r, "noisy"), it.action_noise,
                it.action_offset)
        _encode(run, cfg, vae, rd / "episodes", rd / "series")
        mdn_dir = rd / "mdnrnn"
        if not (mdn_dir / "DONE.json").is_file():
            members = prev_wm.mdn_params if prev_wm.mdn_members is None else prev_wm.mdn_members
            train_mdnrnn(jax.random.fold_in(key, 1), _series_dirs(run, r), mdn_dir,
                         dataclasses.replace(cfg.mdnrnn, steps=it.mdnrnn_steps),
                         z_dim=cfg.vae.z_dim, action_dim=game.action_dim,
                         restart_input=game.restart_input, init_params=members)
    wm = artifacts.load_world_model(run, cfg.controller, mdn_dir, vae)
    series = _series_dirs(run, r)
    tau = choose_temperature(cfg, run, game, wm, series, prev_c, jax.random.fold_in(key, 3),
                             rd / "temperature.json")["tau"]
    dream_params = artifacts.config_dream_params(with_temperature(cfg, tau), run, wm, series)
    generations = it.dream_generations if rows else cfg.es.dream_generations
    floor = retry_floor(cfg, run) if it.retries else None
    rejected = _rejected(rd)
    while True:
        attempt = len(rejected)
        res = train_controller_dream(
            _attempt_key(key, attempt), dream_params, rd / "dream", cfg.es, cfg.controller,
            generations=generations, init_params=init_params,
            fitness_mode=cfg.dream.ensemble_fitness,
            mesh=population_mesh(cfg.devices, cfg.es.popsize))
        _record(cfg, game, wm, res.params, rd / "check", it.check_episodes,
                _master(cfg, r, "check"), 0.0)
        _encode(run, cfg, vae, rd / "check", rd / "check_series")
        real = _series_returns(rd / "check_series")
        if attempt >= it.retries or np.mean(real) >= floor:
            break
        rejected.append(_reject(rd, r, attempt, res.best_return, real, floor))
    select = []
    if it.select_episodes:
        _record(cfg, game, wm, res.params, rd / "select", it.select_episodes,
                select_master(cfg.seed), 0.0)
        select = [float(load_episode(f)["rewards"].sum()) for f in list_episodes(rd / "select")]
    row = {
        "round": r,
        "mdnrnn": str(mdn_dir.relative_to(run.root)),
        "episodes_so_far": sum(len(list_episodes(d)) for d in series),
        "dream_generations": generations,
        "started_from": started_from,
        "tau": tau,
        "dream_return": res.best_return,
        "real_return": float(np.mean(real)),
        "real_std": float(np.std(real)),
        "check_episodes": len(real),
        "fidelity": _fidelity(wm, rd / "check_series"),
    }
    if it.retries:
        row.update(retry_below=floor, rejected=rejected)
    if select:
        row.update(select_return=float(np.mean(select)), select_std=float(np.std(select)),
                   select_episodes=len(select), selection_return=float(np.mean(real + select)))
    row["gap"] = row["dream_return"] - row["real_return"]
    io.write_json(done, row)
    print(f"[dreamjax] iterative round {r}: dream {row['dream_return']:.1f}, real "
          f"{row['real_return']:.1f} ± {row['real_std']:.1f} on {len(real)} training-seed "
          f"episodes" + (f"; {row['select_return']:.1f} ± {row['select_std']:.1f} on "
                         f"{len(select)} selection episodes" if select else ""), flush=True)
    return row


def check_game(cfg: ExperimentConfig, game: Any) -> None:
    """One-line `ConfigError` for an `iterate` flag that does not fit the game (`GameSpec`);
    the CLIs call it before any work."""
    offset = cfg.iterate.action_offset
    if cfg.train_in == ITERATIVE and offset and len(offset) != game.action_dim:
        raise ConfigError(f"--iterate.action-offset: {game.name} has {game.action_dim} action "
                          f"dimension(s), got {len(offset)} values {offset}")


def run_iterative(cfg: ExperimentConfig, run: RunFolder, game: Any, key: jax.Array) -> dict:
    """All rounds, then the final C: the round with the best real check return."""
    check_game(cfg, game)
    vae = artifacts.load_vae(run)
    rows: list[dict] = []
    for r in range(cfg.iterate.rounds):
        rows.append(run_round(cfg, run, game, r, list(rows), vae, jax.random.fold_in(key, r)))
    best = max(rows, key=selection_return)
    src = round_dir(run, best["round"]) / "dream" / "best.npz"
    io.write_bytes(iterative_dir(run) / "best.npz", src.read_bytes())
    by = "the check episodes" + (" and the selection episodes" if cfg.iterate.select_episodes
                                 else "")
    summary = {"rounds": rows, "selected_round": best["round"], "mdnrnn": best["mdnrnn"],
               "tau": best.get("tau", cfg.dream.temperature),
               "selected_by": f"real return on {by} (training seeds)"}
    io.write_json(iterative_dir(run) / "DONE.json", summary)
    return {"iterative": {"selected_round": best["round"], "rounds": [
        {"round": row["round"], "tau": row.get("tau", cfg.dream.temperature),
         **{k: row[k] for k in ("dream_return", "real_return", "gap", "selection_return")
            if k in row}} for row in rows]}}

