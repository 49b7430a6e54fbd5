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

from dreamjax.config import ExperimentConfig
from dreamjax.pipeline import RunFolder

# Throughputs measured on a 2-core CPU (benchmarks/), used only for the printed time estimate.
_RATE = {
    "collect_frames_s": 500.0,
    "vae_frames_s": 300.0,
    "encode_frames_s": 2500.0,
    "mdn_seq_steps_s": 20_000.0,
    "dream_steps_s": 100_000.0,
    "real_steps_s": 400.0,
}


def num_workers(cfg: ExperimentConfig) -> int:
    """Real-env worker processes: the flag, or one per core."""
    return cfg.workers or os.cpu_count() or 1


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
        "evaluate": cfg.eval.episodes * c.max_steps * 0.8 / _RATE["real_steps_s"],
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
        f"{cfg.run_dir}\n[dreamjax] controller {cfg.controller}, trained in {cfg.train_in} | "
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
    from dreamjax.data import collect

    return collect(
        cfg.seed, run.path("collect"), cfg.collect, workers=cfg.collect.workers or num_workers(cfg)
    )


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
    from dreamjax.vae import ConvVAE

    done = _read_done(run.path("vae"))
    model = ConvVAE(z_dim=done["model"]["z_dim"])
    return model, restore_params(run.path("vae") / "params"), done["vae_id"]


def load_mdnrnn(run: RunFolder):
    """(MDNRNN, params) of the run's trained M."""
    from dreamjax.checkpoint import restore_params
    from dreamjax.mdnrnn import MDNRNN

    done = _read_done(run.path("mdnrnn"))
    return MDNRNN(**done["model"]), restore_params(run.path("mdnrnn") / "params")


def _encoder(model):
    """A jitted uint8 frames -> (mu, logvar) encoder; params are an argument, not a closure."""
    from dreamjax.vae import ConvVAE

    @jax.jit
    def enc(params, frames):
        x = frames.astype(jax.numpy.float32) / 255.0
        return model.apply(params, x, method=ConvVAE.encode)

    return enc


def run_vae(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.data import list_episodes, load_episode
    from dreamjax.train import train_vae
    from dreamjax.vae import ConvVAE
    from dreamjax.viz import recon_grid

    train_vae(stage_key(cfg, "vae"), run.path("collect"), run.path("vae"), cfg.vae)
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
    from dreamjax.data import encode_series, initial_latents, list_episodes

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
    _savez_atomic(run.path("encode") / "initial_latents.npz", mu=mu, logvar=logvar)
    return summary


def _savez_atomic(path, **arrays) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def run_mdnrnn(cfg: ExperimentConfig, run: RunFolder) -> dict:
    from dreamjax.train import train_mdnrnn

    train_mdnrnn(
        stage_key(cfg, "mdnrnn"),
        run.path("encode"),
        run.path("mdnrnn"),
        cfg.mdnrnn,
        z_dim=cfg.vae.z_dim,
    )
    return _read_done(run.path("mdnrnn"))


def run_controller(cfg: ExperimentConfig, run: RunFolder) -> dict:
    raise NotImplementedError


def run_evaluate(cfg: ExperimentConfig, run: RunFolder) -> dict:
    raise NotImplementedError


def run_report(cfg: ExperimentConfig, run: RunFolder) -> dict:
    raise NotImplementedError
