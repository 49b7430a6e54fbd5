"""The CarRacing stage runners: each adapts one library stage to the run folder.

Data flow: collect (real env -> `episodes/`) -> vae (`vae/`: V, its metrics, a reconstruction
grid) -> encode (`series/`: per-frame latents and `initial_latents.npz`) -> mdnrnn (`mdnrnn/`:
M) -> controller (`controller/dream`, `controller/real`: CMA-ES logs and the best C) ->
evaluate (`evaluate/`: real episodes, `results.json`, videos) -> report (`report/`, `report.md`,
`results.json`). Each runner reads the artifacts before it through `dreamjax.pipeline.artifacts`,
once per stage.

What is CarRacing's own is one `GameSpec` (the real env's factory, the action size, M's restart
input, the data's minimum episode length, the paper's score, the stage throughputs of the time
estimate); every runner takes it, so another game's pipeline (Doom, `dreamjax.pipeline.doom`)
reuses the runners with its own spec.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from dreamjax import io
from dreamjax.agent import WorldModel, WorldModelPolicy, encode_frames, render
from dreamjax.config import ExperimentConfig
from dreamjax.data.collect import collect, damaged_episodes
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.data.series import encode_series, initial_latents
from dreamjax.dream.ensemble import member
from dreamjax.dream.env import DreamEnv, DreamParams
from dreamjax.dream.rollout import trajectory
from dreamjax.envs import carracing
from dreamjax.envs.pool import EnvPool
from dreamjax.envs.ray_pool import RayEnvPool
from dreamjax.errors import ArtifactError
from dreamjax.es import train_controller_dream, train_controller_real
from dreamjax.es.sharding import population_mesh
from dreamjax.models.controller import Controller
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.evaluate import eval_specs, evaluate
from dreamjax.pipeline.iterate import TEMPERATURE_DREAMS, run_iterative
from dreamjax.pipeline.pools import collect_pool_factory, make_pool
from dreamjax.pipeline.report import write_report
from dreamjax.pipeline.run import RunFolder
from dreamjax.pipeline.training import train_mdnrnn, train_vae
from dreamjax.pipeline.viz import plot_fitness, recon_grid, side_by_side, write_video

# Throughputs of the laptop pipeline's stages on a 2-core CPU (the 2026-11-25 fresh run in
# experiments/results/carracing-laptop), used only for the printed time estimate. Optional keys
# (a game's `GameSpec.rates`): "collect_episode_steps", env steps per kept episode (default:
# the step limit), "real_episode_frac", an evaluated episode's length over the limit (0.8),
# "report_s", the report stage's seconds (30), and "undrawn_frame_cost", a frame `ActionRepeat`
# does not draw over one it draws (1: it draws all; FastCarRacing's 0.08 from
# `benchmarks/envs.py`'s action-repeat rows: 3.2x the frames/s at k = 4).
_RATE = {
    "collect_frames_s": 280.0,
    "vae_frames_s": 370.0,
    "encode_frames_s": 2500.0,
    "mdn_seq_steps_s": 28_000.0,
    "dream_steps_s": 30_000.0,
    "real_steps_s": 450.0,
    "undrawn_frame_cost": 0.08,
}


# How many times longer each stage ran on a 2-core AMD EPYC at 2.0 GHz with AVX2 and FMA but no
# AVX-512 than on the AVX-512 EPYC the rates above are from: the Doom `laptop` stages of seed 0
# (experiments/results/doom-retries) against the seed-3 fresh clone of
# experiments/results/doom-m2400; the controller from a 16 x 16 dream CMA-ES generation (36 s
# against 10.8 s in `benchmarks/compact.py`, another M), the report from
# experiments/results/doom-400-episodes (467 s against 159 s). The estimate scales by them on a
# CPU whose flags lack avx512f.
NO_AVX512_SLOWDOWN = {
    "collect": 2.0,
    "vae": 2.4,
    "encode": 2.2,
    "mdnrnn": 3.0,
    "controller": 3.0,
    "evaluate": 1.9,
    "report": 2.9,
}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo's text (`cpuinfo`; read when None), or None
    where it cannot be read or has no `flags` line (not x86)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    return next((frozenset(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines()
                 if line.startswith("flags")), None)


def cpu_slowdown(cpuinfo: str | None = None) -> dict[str, float]:
    """Per-stage factors for the time estimate on this CPU (`cpu_flags(cpuinfo)`):
    `NO_AVX512_SLOWDOWN` on an x86 CPU without AVX-512, else none ({})."""
    flags = cpu_flags(cpuinfo)
    if flags is None or "avx512f" in flags:
        return {}
    return dict(NO_AVX512_SLOWDOWN)


@dataclass(frozen=True)
class GameSpec:
    """What the stage runners need to know about the real game (the defaults are CarRacing's)."""

    name: str
    action_dim: int
    """The size of C's output and of M's action input."""
    env_fn: Callable[[ExperimentConfig, int], Callable[[], Any]]
    """(cfg, max_steps) -> the picklable factory of the env the pool's workers build."""
    restart_input: bool = False
    """M reads a restart flag (1 on an episode's first step) and zeroes its state there
    (Doom, PAPER.md §2.4; needs `--mdnrnn.tbptt`)."""
    min_frames: int = 0
    """Collection keeps an episode only if it lasts more than this many steps (Doom: 100,
    PAPER.md §2.2); 0 keeps every episode."""
    paper_score: str = "906 ± 21"
    """The paper's score of the full World Model over 100 real episodes (PAPER.md §1.7)."""
    paper_method: str = "full World Model, z and h (PAPER.md §1.7)"
    """What `paper_score` is the score of (the report's table)."""
    video_fps: int = 50
    """Frames per second of the report's dream-vs-real video (the env's own rate)."""
    rates: Mapping[str, float] = field(default_factory=lambda: dict(_RATE))
    """Stage throughputs on a 2-core CPU for the printed time estimate (`_RATE`'s keys)."""
    calibrate_on: Literal["return", "life"] = "return"
    """What a round's τ calibration (`iterate.temperatures`) matches between the previous C's
    dreams and its real check episodes: its mean return (CarRacing, where every episode lasts
    the step limit), or its mean life (Doom, where the return is the life). `data_lives` and
    `probes` are lives, so a game with either calibrates on "life"."""
    calibrate: Callable[[ExperimentConfig, RunFolder, DreamParams, WorldModel], dict] | None = None
    """(cfg, run, the dream of the final world model, that world model) -> how the dream's
    episode ends compare with the real game's (the report's `calibration`); None: not
    measured."""
    data_lives: Callable[[ExperimentConfig, RunFolder, DreamParams, jax.Array, int],
                         list[dict]] | None = None
    """(cfg, run, a dream, key, dreams) -> one row per part of an open-loop data policy: its
    mean life in that many dreams (`dream_mean`) and in its collected episodes (`real_mean`);
    None: the data policy reads the frames, so its dream life is not its real one."""
    probes: Callable[[ExperimentConfig], list[dict]] | None = None
    """cfg -> open-loop probes, each {"probe": name, "actions": (T, A) float32, "real_mean": its
    mean life in real episodes played by this call}, that `--iterate.calibrate-probes` adds to
    a round's τ calibration (Doom: each button held, the patrols); None: none."""


def _carracing_env_fn(cfg: ExperimentConfig, max_steps: int) -> Callable[[], Any]:
    return functools.partial(carracing.make_env, fast=cfg.fast_env, max_episode_steps=max_steps,
                             action_repeat=cfg.action_repeat)


CARRACING = GameSpec("CarRacing-v3", carracing.ACTION_DIM, _carracing_env_fn)


def real_pool(cfg: ExperimentConfig, max_steps: int, game: GameSpec = CARRACING, *,
              workers: int | None = None) -> EnvPool | RayEnvPool:
    """The real-env pool of `--backend`; `workers` overrides the config with that many one-env
    workers (actors)."""
    return make_pool(cfg, game.env_fn(cfg, max_steps), workers,
                     None if workers is None else 1)


def estimate_seconds(cfg: ExperimentConfig, game: GameSpec = CARRACING) -> dict[str, float]:
    """Rough wall time per stage on a 2-core CPU, from the sizes in `cfg` and the game's
    throughputs (`GameSpec.rates`; real-env rates count drawn game frames: a step of
    `action_repeat` k draws one and plays k - 1 more)."""
    c, v, m, e = cfg.collect, cfg.vae, cfg.mdnrnn, cfg.es
    rate = game.rates
    frames = c.episodes * rate.get("collect_episode_steps", c.max_steps)
    undrawn = rate.get("undrawn_frame_cost", 1.0) if cfg.fast_env else 1.0  # stock draws all
    step_cost = 1 + (cfg.action_repeat - 1) * undrawn
    frac = rate.get("real_episode_frac", 0.8) * step_cost
    est = {
        "collect": frames * step_cost / rate["collect_frames_s"],
        "vae": v.epochs * frames / rate["vae_frames_s"],
        "encode": frames / rate["encode_frames_s"],
        "mdnrnn": m.steps * m.batch_size * m.seq_len / rate["mdn_seq_steps_s"],
        "controller": 0.0,
        "evaluate": cfg.eval.episodes * cfg.eval.max_steps * frac / rate["real_steps_s"],
        "report": rate.get("report_s", 30.0),
    }
    per_gen = e.popsize * e.rollouts * e.max_steps
    evals = e.eval_episodes * e.max_steps
    it, iterative = cfg.iterate, cfg.train_in == "iterative"
    if cfg.train_in in ("dream", "dream-then-real") or iterative:
        gens = e.dream_generations + ((it.rounds - 1) * it.dream_generations if iterative else 0)
        n_eval = gens // max(e.eval_every, 1)
        est["controller"] += (gens * per_gen + n_eval * evals) / rate["dream_steps_s"]
    if iterative:  # each round's real episodes (selection episodes included), M's fine-tuning
        est["controller"] += (it.rounds * (it.episodes + it.select_episodes) * e.max_steps * frac
                              / rate["real_steps_s"])
        est["controller"] += (it.rounds - 1) * it.mdnrnn_steps * m.batch_size * m.seq_len / rate[
            "mdn_seq_steps_s"]
        # each round's τ choice: TEMPERATURE_DREAMS dreams per τ of the grid and probe (taken
        # as 3: a mixed data policy's two parts and the previous C)
        est["controller"] += (it.rounds * len(it.temperatures) * 3 * TEMPERATURE_DREAMS
                              * e.max_steps / rate["dream_steps_s"])
    if cfg.train_in in ("real", "dream-then-real"):
        n_eval = e.generations // max(e.eval_every, 1)
        est["controller"] += (
            (e.generations * per_gen + n_eval * evals) * frac / rate["real_steps_s"]
        )
    return est


def describe(cfg: ExperimentConfig, game: GameSpec = CARRACING,
             slowdown: Mapping[str, float] | None = None,
             pending: Sequence[str] | None = None) -> str:
    """The banner printed before any work: run folder, profile, time estimate (each stage's
    seconds times `slowdown`'s factor; this CPU's `cpu_slowdown()` when None) of the stages
    that will run (`pending`, e.g. `preflight(cfg).run`; all of `cfg.stages` when None; a
    stage that resumes is counted whole)."""
    slowdown = cpu_slowdown() if slowdown is None else slowdown
    pending = cfg.stages if pending is None else pending
    skipped = [s for s in cfg.stages if s not in pending]
    est = {s: t * slowdown.get(s, 1.0) for s, t in estimate_seconds(cfg, game).items()
           if s in pending}
    mesh = population_mesh(cfg.devices, cfg.es.popsize)
    devices = len(jax.local_devices())
    if mesh is not None:
        devices = f"{devices} (the dream population over {mesh.shape['pop']})"
    total = sum(est[s] for s in cfg.stages if s in est)
    parts = ", ".join(f"{s} {est[s] / 60:.0f}m" for s in cfg.stages if s in est)
    done = f"done already: {', '.join(skipped)}"
    estimate = (
        f"estimated wall time on a 2-core CPU: {total / 60:.0f} min ({parts})"
        + (" on a CPU without AVX-512 (measured 2-3x slower)" if slowdown else "")
        + (f"; {done}" if skipped else "")
    ) if est else f"nothing to run, {done}"
    return (
        f"[dreamjax] {game.name} world model | profile {cfg.profile} | run folder "
        f"{cfg.run_dir}\n[dreamjax] controller {cfg.controller.kind}, trained in {cfg.train_in} | "
        f"JAX backend {jax.default_backend()}, devices {devices} | {cfg.num_workers} env "
        f"workers\n[dreamjax] {estimate}"
    )


def stage_key(cfg: ExperimentConfig, stage: str) -> jax.Array:
    """A per-stage key derived from the master seed (stages are independent of each other's RNG)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), zlib.crc32(stage.encode()))


def tensorboard_dir(run: RunFolder, stage: str) -> Path | None:
    """`run/tensorboard/<stage>` when the optional tensorboardX is installed, else None."""
    if importlib.util.find_spec("tensorboardX") is None:
        return None
    return run.root / "tensorboard" / stage


def carracing_runners(game: GameSpec = CARRACING) -> dict[str, Callable]:
    """The stage name -> runner(cfg, run) mapping for `dreamjax.pipeline.run_stages`."""
    runners = {
        "collect": run_collect,
        "vae": run_vae,
        "encode": run_encode,
        "mdnrnn": run_mdnrnn,
        "controller": run_controller,
        "evaluate": run_evaluate,
        "report": run_report,
    }
    return {stage: functools.partial(fn, game=game) for stage, fn in runners.items()}


def carracing_verifiers(game: GameSpec = CARRACING) -> dict[str, Callable]:
    """The stage name -> verify(cfg, run) mapping for `run_stages(..., verifiers=)`: a finished
    stage whose files are damaged is redone."""
    return {"collect": functools.partial(verify_collect, game=game)}


def verify_collect(cfg: ExperimentConfig, run: RunFolder, game: GameSpec = CARRACING
                   ) -> list[str]:
    """The recorded episodes that are missing, corrupt, too short or not this run's (one line
    each)."""
    return list(damaged_episodes(cfg.seed, run.path("collect"), cfg.collect,
                                 min_frames=game.min_frames).values())


def run_collect(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """Random-policy episodes in the real env (PAPER.md §1.2), longer than `game.min_frames`
    steps (§2.2)."""
    return collect(cfg.seed, run.path("collect"), cfg.collect,
                   env_fn=game.env_fn(cfg, cfg.collect.max_steps), workers=cfg.num_workers,
                   min_frames=game.min_frames, pool_factory=collect_pool_factory(cfg))


def run_vae(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """Train V, then draw 8 recorded frames next to their reconstructions."""
    train_vae(stage_key(cfg, "vae"), run.path("collect"), run.path("vae"), cfg.vae,
              tensorboard_dir=tensorboard_dir(run, "vae"))
    vae, params, _ = artifacts.load_vae(run)
    files = list_episodes(run.path("collect"))
    rng = np.random.default_rng(cfg.seed)
    picks = [load_episode(files[i % len(files)])["frames"] for i in range(8)]
    frames = np.stack([f[rng.integers(len(f))] for f in picks])
    mu, _ = encode_frames(vae, params, frames)
    recon_grid(frames, render(vae, params, mu), run.path("vae") / "recon.png")
    return artifacts.read_done(run, "vae")


def run_encode(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """Every episode's frames -> V's (mu, logvar) series, and the dream's initial-latents bank."""
    vae, params, vae_id = artifacts.load_vae(run)
    summary = encode_series(functools.partial(encode_frames, vae, params), run.path("collect"),
                            run.path("encode"),
                            batch_size=cfg.encode.batch_size, vae_id=vae_id)
    mu, logvar = initial_latents(list_episodes(run.path("encode")), 1000)
    io.save_npz(artifacts.initial_latents_path(run), mu=mu, logvar=logvar)
    return summary


def run_mdnrnn(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """Train M on the series."""
    train_mdnrnn(stage_key(cfg, "mdnrnn"), run.path("encode"), run.path("mdnrnn"), cfg.mdnrnn,
                 z_dim=cfg.vae.z_dim, action_dim=game.action_dim,
                 restart_input=game.restart_input,
                 tensorboard_dir=tensorboard_dir(run, "mdnrnn"))
    return artifacts.read_done(run, "mdnrnn")


def _world_model(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> WorldModel:
    """V and the M the final controller runs with (`artifacts.final_world_model`: the run's,
    or an iterative run's selected round's) with the configured controller's spec, checked
    against the game."""
    wm = artifacts.final_world_model(cfg, run)
    if wm.action_dim != game.action_dim:
        raise ArtifactError(f"{run.path('mdnrnn') / 'DONE.json'}: M takes {wm.action_dim} "
                            f"actions, {game.name} has {game.action_dim}; rerun the mdnrnn stage")
    return wm


def _one(params: Any) -> Any:
    """One controller as a population of one (leading axis 1)."""
    return jax.tree.map(lambda x: x[None], params)


def run_controller(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """CMA-ES in the dream and/or the real env (`--train-in`); dream-then-real starts the real
    phase from the dream's best mean."""
    key = stage_key(cfg, "controller")
    if cfg.train_in == "iterative":
        return run_iterative(cfg, run, game, key)
    dirs = artifacts.controller_dirs(cfg, run)
    wm = _world_model(cfg, run, game)
    summary: dict = {}
    init_params = None
    if "dream" in dirs:
        dream_params = artifacts.config_dream_params(cfg, run, wm)
        res = train_controller_dream(jax.random.fold_in(key, 0), dream_params, dirs["dream"],
                                     cfg.es, cfg.controller,
                                     tensorboard_dir=tensorboard_dir(run, "controller_dream"),
                                     fitness_mode=cfg.dream.ensemble_fitness,
                                     mesh=population_mesh(cfg.devices, cfg.es.popsize))
        summary["dream"] = {"best_return": res.best_return, "best_generation": res.best_generation}
        init_params = res.params
    if "real" in dirs:
        factory = functools.partial(WorldModelPolicy, wm, seed=cfg.seed)
        with real_pool(cfg, cfg.es.max_steps, game) as pool:
            res = train_controller_real(
                jax.random.fold_in(key, 1), pool, factory, dirs["real"], cfg.es, cfg.controller,
                z_dim=wm.z_dim, hidden_size=wm.hidden, action_dim=wm.action_dim,
                init_params=init_params,
                tensorboard_dir=tensorboard_dir(run, "controller_real"),
            )
        summary["real"] = {"best_return": res.best_return, "best_generation": res.best_generation}
    return summary


def run_evaluate(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """The final controller on the fixed evaluation episodes of the real env (PAPER.md §1.7)."""
    wm = _world_model(cfg, run, game)
    path = artifacts.final_controller_path(cfg, run)
    params, meta = artifacts.load_controller_params(path, wm.spec)
    info = {
        "controller": cfg.controller.kind,
        "controller_file": str(path.relative_to(run.root)),
        "controller_meta": meta,
        "train_in": cfg.train_in,
        "action_repeat": cfg.action_repeat,
        "max_game_frames": cfg.eval.max_steps * cfg.action_repeat,
        **artifacts.model_ids(run, artifacts.final_mdnrnn_dir(cfg, run)),
    }
    policy = WorldModelPolicy(wm, _one(params), seed=cfg.seed)
    with real_pool(cfg, cfg.eval.max_steps, game) as pool:
        res = evaluate(pool, policy, cfg.eval, run.path("evaluate"), meta=info)
    return {k: res[k] for k in ("episodes", "mean", "std", "min", "max", "wall_s")}


@functools.partial(jax.jit, static_argnames=("controller", "num_steps"))
def dream_latents(key: jax.Array, dream_params: Any, ctrl_params: Any, *,
                  controller: Controller, num_steps: int) -> jax.Array:
    """z (T, Z) of one dream episode under C (`trajectory`; nothing stops at termination)."""
    states, _, _ = trajectory(key, DreamEnv(), dream_params, controller.apply, ctrl_params,
                              num_steps)
    return states.z


def _dream_vs_real(cfg: ExperimentConfig, run: RunFolder, game: GameSpec, wm: WorldModel,
                   dream_params: DreamParams, path: Path) -> None:
    """A dream under the final C decoded by V, next to a real episode of the same C."""
    params, _ = artifacts.load_controller_params(artifacts.final_controller_path(cfg, run),
                                                 wm.spec)
    z = dream_latents(stage_key(cfg, "report"), dream_params, params,
                      controller=wm.spec.controller, num_steps=cfg.es.max_steps)
    dream_frames = render(wm.vae, wm.vae_params, z)
    policy = WorldModelPolicy(wm, _one(params), seed=cfg.seed)
    with real_pool(cfg, cfg.es.max_steps, game, workers=1) as pool:
        real = pool.run(eval_specs(cfg.eval)[:1], policy, steps=True)[0]
    write_video(side_by_side(dream_frames, real.obs), path, fps=game.video_fps)


def run_report(cfg: ExperimentConfig, run: RunFolder, game: GameSpec) -> dict:
    """Pictures of every stage and the report (`dreamjax.pipeline.report`)."""
    out = run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    pics: dict[str, str] = {}
    if (run.path("vae") / "recon.png").exists():
        shutil.copy(run.path("vae") / "recon.png", out / "recon.png")
        pics["V: originals and reconstructions"] = "report/recon.png"
    for phase, folder in artifacts.controller_dirs(cfg, run).items():
        gens = io.read_jsonl(folder / "log.jsonl")
        evals = io.read_jsonl(folder / "evals.jsonl")
        if gens:
            where = "the dream" if phase == "dream" else "the real env"
            plot_fitness(gens, evals, out / f"fitness_{phase}.png", f"CMA-ES in {where}")
            pics[f"CMA-ES fitness in {where}"] = f"report/fitness_{phase}.png"
    wm = _world_model(cfg, run, game)
    dream_cfg = artifacts.final_dream_config(cfg, run)  # the final C's τ
    dream_params = member(artifacts.config_dream_params(dream_cfg, run, wm), 0)
    _dream_vs_real(cfg, run, game, wm, dream_params, out / "dream_vs_real.mp4")
    pics["Dream decoded by V (left) next to a real episode (right), same controller"] = (
        "report/dream_vs_real.mp4"
    )
    res = write_report(cfg, run.root, pics, game=game.name, paper_score=game.paper_score,
                       paper_method=game.paper_method,
                       calibration=(game.calibrate(dream_cfg, run, dream_params, wm)
                                    if game.calibrate
                                    else None))
    return {"score": res["score"]}
