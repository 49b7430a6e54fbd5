"""The CarRacing stage runners: each adapts one library stage to the run folder.

Run-folder layout (one folder per stage, see `dreamjax.pipeline.STAGE_DIRS`):
`episodes/` (collect), `vae/` (V checkpoint, metrics, recon grid), `series/` (latents and
`initial_latents.npz`), `mdnrnn/` (M), `controller/` (CMA-ES logs and the best controller),
`evaluate/` (`results.json`, videos), `report/` (pictures), `report.md`, `results.json`.
"""

from __future__ import annotations

import os
import zlib

import jax
import numpy as np

from dreamjax import io
from dreamjax.config import ExperimentConfig
from dreamjax.pipeline.run import RunFolder

# Throughputs of the laptop pipeline's stages on a 2-core CPU (the 2026-11-25 fresh run in
# experiments/results/carracing-laptop), used only for the printed time estimate.
_RATE = {
    "collect_frames_s": 280.0,
    "vae_frames_s": 370.0,
    "encode_frames_s": 2500.0,
    "mdn_seq_steps_s": 28_000.0,
    "dream_steps_s": 30_000.0,
    "real_steps_s": 450.0,
}


def num_workers(cfg: ExperimentConfig) -> int:
    """Real-env worker processes: the flag, or one per core."""
    return cfg.workers or os.cpu_count() or 1


def real_pool(cfg: ExperimentConfig, max_steps: int):
    """The real-env worker pool for C's training and evaluation."""
    from dreamjax.envs.pool import EnvPool

    return EnvPool(
        num_workers(cfg), envs_per_worker=cfg.envs_per_worker, fast=cfg.fast_env,
        max_steps=max_steps,
    )


def estimate_seconds(cfg: ExperimentConfig) -> dict[str, float]:
    """Rough wall time per stage on a 2-core CPU, from the sizes in `cfg`."""
    c, v, m, e = cfg.collect, cfg.vae, cfg.mdnrnn, cfg.es
    frames = c.episodes * c.max_steps
    est = {
        "collect": frames / _RATE["collect_frames_s"],
        "vae": v.epochs * frames / _RATE["vae_frames_s"],
        "encode": frames / _RATE["encode_frames_s"],
        "mdnrnn": m.steps * m.batch_size * m.seq_len / _RATE["mdn_seq_steps_s"],
        "controller": 0.0,
        "evaluate": cfg.eval.episodes * cfg.eval.max_steps * 0.8 / _RATE["real_steps_s"],
        "report": 30.0,
    }
    per_gen = e.popsize * e.rollouts * e.max_steps
    evals = e.eval_episodes * e.max_steps
    if cfg.train_in in ("dream", "dream-then-real"):
        n_eval = e.dream_generations // max(e.eval_every, 1)
        est["controller"] += (e.dream_generations * per_gen + n_eval * evals) / _RATE[
            "dream_steps_s"
        ]
    if cfg.train_in in ("real", "dream-then-real"):
        n_eval = e.generations // max(e.eval_every, 1)
        est["controller"] += (
            (e.generations * per_gen + n_eval * evals) * 0.8 / _RATE["real_steps_s"]
        )
    return est


def describe(cfg: ExperimentConfig) -> str:
    """The banner printed before any work: run folder, profile, time estimate."""
    est = estimate_seconds(cfg)
    total = sum(est[s] for s in cfg.stages if s in est)
    parts = ", ".join(f"{s} {est[s] / 60:.0f}m" for s in cfg.stages if s in est)
    return (
        f"[dreamjax] CarRacing-v3 world model | profile {cfg.profile} | run folder "
        f"{cfg.run_dir}\n[dreamjax] controller {cfg.controller.kind}, trained in {cfg.train_in} | "
        f"JAX backend {jax.default_backend()} | {num_workers(cfg)} env workers\n"
        f"[dreamjax] estimated wall time on a 2-core CPU: {total / 60:.0f} min ({parts})"
    )


def stage_key(cfg: ExperimentConfig, stage: str) -> jax.Array:
    """A per-stage key derived from the master seed (stages are independent of each other's RNG)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), zlib.crc32(stage.encode()))


def carracing_runners() -> dict:
    """The stage name -> runner mapping for `dreamjax.pipeline.run_stages`."""
    return {
        "collect": run_collect,
        "vae": run_vae,
        "encode": run_encode,
        "mdnrnn": run_mdnrnn,
        "controller": run_controller,
        "evaluate": run_evaluate,
        "report": run_report,
    }


def run_collect(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.data.episodes import collect

    return collect(
        cfg.seed, run.path("collect"), cfg.collect, workers=num_workers(cfg), fast_env=cfg.fast_env
    )


def tensorboard_dir(run: RunFolder, stage: str):
    """`run/tensorboard/<stage>` when the optional tensorboardX is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("tensorboardX") is None:
        return None
    return run.root / "tensorboard" / stage


def _read_done(folder) -> dict:
    """A finished model stage's `DONE.json` (written last by `dreamjax.train`)."""
    import json

    path = folder / "DONE.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rerun that stage")
    return json.loads(path.read_text())


def load_vae(run: RunFolder):
    """(ConvVAE, params, vae_id) of the run's trained V."""
    from dreamjax.checkpoint import restore_params
    from dreamjax.models.vae import ConvVAE

    done = _read_done(run.path("vae"))
    model = ConvVAE(z_dim=done["model"]["z_dim"])
    return model, restore_params(run.path("vae") / "params"), done["vae_id"]


def load_mdnrnn(run: RunFolder):
    """(MDNRNN, params) of the run's trained M."""
    from dreamjax.checkpoint import restore_params
    from dreamjax.models.mdnrnn import MDNRNN

    done = _read_done(run.path("mdnrnn"))
    return MDNRNN(**done["model"]), restore_params(run.path("mdnrnn") / "params")


def _encoder(model):
    """A jitted uint8 frames -> (mu, logvar) encoder; params are an argument, not a closure."""
    from dreamjax.models.vae import ConvVAE

    @jax.jit
    def enc(params, frames):
        x = frames.astype(jax.numpy.float32) / 255.0
        return model.apply(params, x, method=ConvVAE.encode)

    return enc


def run_vae(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.data.episodes import list_episodes, load_episode
    from dreamjax.models.vae import ConvVAE
    from dreamjax.pipeline.viz import recon_grid
    from dreamjax.train import train_vae

    train_vae(
        stage_key(cfg, "vae"), run.path("collect"), run.path("vae"), cfg.vae,
        tensorboard_dir=tensorboard_dir(run, "vae"),
    )
    model, params, _ = load_vae(run)
    files = list_episodes(run.path("collect"))
    rng = np.random.default_rng(cfg.seed)
    picks = [load_episode(files[i % len(files)])["frames"] for i in range(8)]
    frames = np.stack([f[rng.integers(len(f))] for f in picks])
    mu, _ = _encoder(model)(params, frames)
    recon = model.apply(params, mu, method=ConvVAE.decode)
    recon_grid(frames, np.asarray(recon), run.path("vae") / "recon.png")
    return _read_done(run.path("vae"))


def run_encode(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.data.episodes import encode_series, initial_latents, list_episodes

    model, params, vae_id = load_vae(run)
    enc = _encoder(model)

    def encode_fn(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = enc(params, frames)
        return np.asarray(mu), np.asarray(logvar)

    summary = encode_series(
        encode_fn,
        run.path("collect"),
        run.path("encode"),
        batch_size=cfg.encode.batch_size,
        vae_id=vae_id,
    )
    mu, logvar = initial_latents(list_episodes(run.path("encode")), 1000)
    io.save_npz(run.path("encode") / "initial_latents.npz", mu=mu, logvar=logvar)
    return summary


def run_mdnrnn(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.train import train_mdnrnn

    train_mdnrnn(
        stage_key(cfg, "mdnrnn"),
        run.path("encode"),
        run.path("mdnrnn"),
        cfg.mdnrnn,
        z_dim=cfg.vae.z_dim, tensorboard_dir=tensorboard_dir(run, "mdnrnn"),
    )
    return _read_done(run.path("mdnrnn"))


def _controller_dirs(cfg: ExperimentConfig, run: RunFolder) -> dict[str, object]:
    """Where each phase of controller training writes (`dream/`, `real/` under `controller/`)."""
    out = run.path("controller")
    phases = {"dream": ("dream", "dream-then-real"), "real": ("real", "dream-then-real")}
    return {p: out / p for p, modes in phases.items() if cfg.train_in in modes}


def final_controller_path(cfg: ExperimentConfig, run: RunFolder):
    """The controller that is evaluated: the last phase's best evaluated mean."""
    return list(_controller_dirs(cfg, run).values())[-1] / "best.npz"


def _world_model_policy_factory(cfg: ExperimentConfig, run: RunFolder, controller):
    from dreamjax.es.evolve import WorldModelPolicy
    from dreamjax.models.controller import obs_mode

    vae_model, vae_params, _ = load_vae(run)
    mdn_model, mdn_params = load_mdnrnn(run)

    def factory(ctrl_params_batch):
        return WorldModelPolicy(
            vae_model,
            vae_params,
            mdn_model,
            mdn_params,
            controller,
            ctrl_params_batch,
            obs_mode=obs_mode(cfg.controller.kind),
            seed=cfg.seed,
        )

    return factory


def run_controller(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.dream.env import DreamEnv
    from dreamjax.es.evolve import load_controller, train_controller_dream, train_controller_real
    from dreamjax.models.controller import controller_for, obs_mode

    key = stage_key(cfg, "controller")
    dirs = _controller_dirs(cfg, run)
    summary: dict = {}
    init_params = None
    if "dream" in dirs:
        dream_params = DreamEnv.params_from_run(
            run.root,
            temperature=cfg.dream.temperature,
            max_steps=cfg.es.max_steps,
            obs_mode=obs_mode(cfg.controller.kind),
        )
        res = train_controller_dream(
            jax.random.fold_in(key, 0),
            dream_params,
            dirs["dream"],
            cfg.es,
            cfg.controller,
        )
        summary["dream"] = {"best_return": res.best_return, "best_generation": res.best_generation}
        _, init_params, _ = load_controller(dirs["dream"] / "best.npz")
    if "real" in dirs:
        mdn_model, _ = load_mdnrnn(run)
        controller = controller_for(cfg.controller.kind, mdn_model.z_dim, mdn_model.hidden,
                                    hidden_units=cfg.controller.hidden)
        factory = _world_model_policy_factory(cfg, run, controller)
        with real_pool(cfg, cfg.es.max_steps) as pool:
            res = train_controller_real(
                jax.random.fold_in(key, 1),
                pool,
                factory,
                dirs["real"],
                cfg.es,
                cfg.controller,
                z_dim=mdn_model.z_dim,
                hidden_size=mdn_model.hidden,
                init_params=init_params,
            )
        summary["real"] = {"best_return": res.best_return, "best_generation": res.best_generation}
    return summary


def run_evaluate(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.es.evolve import load_controller
    from dreamjax.pipeline.evaluate import evaluate

    path = final_controller_path(cfg, run)
    controller, params, meta = load_controller(path)
    factory = _world_model_policy_factory(cfg, run, controller)
    policy = factory(jax.tree.map(lambda x: x[None], params))
    info = {
        "controller": cfg.controller.kind,
        "controller_file": str(path.relative_to(run.root)),
        "controller_meta": meta,
        "train_in": cfg.train_in,
        "vae_id": _read_done(run.path("vae")).get("vae_id"),
        "mdnrnn_id": _read_done(run.path("mdnrnn")).get("mdnrnn_id"),
    }
    with real_pool(cfg, cfg.eval.max_steps) as pool:
        res = evaluate(pool, policy, cfg.eval, run.path("evaluate"), meta=info)
    return {k: res[k] for k in ("episodes", "mean", "std", "min", "max", "wall_s")}


def dream_latents(key, dream_params, controller, ctrl_params, num_steps: int):
    """One dream episode under C: z (T, Z) per step and the dream's rewards (T,) and dones (T,)."""
    from dreamjax.dream.env import DreamEnv

    env = DreamEnv()

    @jax.jit
    def run(key, dream_params, ctrl_params):
        k0, k1 = jax.random.split(key)
        obs, state = env.reset_env(k0, dream_params)

        def body(carry, k):
            obs, state = carry
            a = controller.apply(ctrl_params, obs)
            obs, nstate, r, done, _ = env.step_env(k, state, a, dream_params)
            return (obs, nstate), (state.z, r, done)

        _, out = jax.lax.scan(body, (obs, state), jax.random.split(k1, num_steps))
        return out

    return [np.asarray(x) for x in run(key, dream_params, ctrl_params)]


def run_report(cfg: ExperimentConfig, run: RunFolder) -> dict:
    import shutil

    from dreamjax.dream.env import DreamEnv, render
    from dreamjax.envs.carracing import preprocess
    from dreamjax.envs.pool import EnvPool
    from dreamjax.es.evolve import load_controller
    from dreamjax.io import read_jsonl
    from dreamjax.models.controller import obs_mode
    from dreamjax.pipeline.evaluate import eval_specs
    from dreamjax.pipeline.report import write_report
    from dreamjax.pipeline.viz import plot_fitness, side_by_side, write_video

    out = run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    pics: dict[str, str] = {}
    if (run.path("vae") / "recon.png").exists():
        shutil.copy(run.path("vae") / "recon.png", out / "recon.png")
        pics["V: originals and reconstructions"] = "report/recon.png"
    for phase, folder in _controller_dirs(cfg, run).items():
        gens = read_jsonl(folder / "log.jsonl")
        evals = read_jsonl(folder / "evals.jsonl")
        if gens:
            where = "the dream" if phase == "dream" else "the real env"
            plot_fitness(gens, evals, out / f"fitness_{phase}.png", f"CMA-ES in {where}")
            pics[f"CMA-ES fitness in {where}"] = f"report/fitness_{phase}.png"
    # A dream under the final controller, decoded by V, next to a real episode of the same C.
    vae_model, vae_params, _ = load_vae(run)
    controller, ctrl_params, _ = load_controller(final_controller_path(cfg, run))
    dream_params = DreamEnv.params_from_run(
        run.root,
        temperature=cfg.dream.temperature,
        max_steps=cfg.es.max_steps,
        obs_mode=obs_mode(cfg.controller.kind),
    )
    z, _, _ = dream_latents(
        stage_key(cfg, "report"), dream_params, controller, ctrl_params, cfg.es.max_steps
    )
    dream_frames = render(vae_params, z, vae_model)
    policy = _world_model_policy_factory(cfg, run, controller)(
        jax.tree.map(lambda x: x[None], ctrl_params)
    )
    with EnvPool(1, fast=cfg.fast_env, max_steps=cfg.es.max_steps) as pool:
        real = pool.run(eval_specs(cfg.eval)[:1], policy, record=True)[0]
    real_frames = np.stack([preprocess(f) for f in real.frames])
    write_video(side_by_side(dream_frames, real_frames), out / "dream_vs_real.mp4")
    pics["Dream decoded by V (left) next to a real episode (right), same controller"] = (
        "report/dream_vs_real.mp4"
    )
    res = write_report(cfg, run.root, pics)
    return {"score": res["score"]}
