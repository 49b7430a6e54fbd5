"""The run folder's artifacts, read in one place: the stages and the dream never open them.

One loader per artifact; a missing or corrupt one raises `dreamjax.errors.ArtifactError` that
starts with the file's path and names the stage to rerun:

- V: `vae/DONE.json` ("model": {"z_dim"}, "vae_id", "checkpoint" folder) and its orbax params.
- M: `mdnrnn/DONE.json` (`MDNRNN` fields under "model", "mdnrnn_id", "checkpoint") and params.
- the bank of initial latents: `series/initial_latents.npz` with mu, logvar (N, Z); or, for
  real-state starts, the series themselves (`load_dream_params`'s `real_starts`).
- C: each controller phase's folder (`controller/dream`, `controller/real`) and the evaluated
  controller, `final_controller_path` (the file format is dreamjax.es's `load_controller`).

`load_world_model` restores V and M once into a `dreamjax.agent.WorldModel`;
`load_dream_params` adds the latent bank to its M to make the dream's `DreamParams`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dreamjax import checkpoint, io
from dreamjax.agent import (
    WorldModel,
    check_mdn_params,
    check_shapes,
    make_world_model,
    one_line,
)
from dreamjax.config import ControllerConfig, ExperimentConfig, with_temperature
from dreamjax.data.episodes import list_episodes, load_series
from dreamjax.dream.env import DreamParams, make_dream_params
from dreamjax.dream.starts import real_start_bank
from dreamjax.errors import ArtifactError
from dreamjax.es import load_controller
from dreamjax.models.controller import ControllerSpec
from dreamjax.models.mdnrnn import MDNRNN, MDNRNN_FIELDS
from dreamjax.models.vae import ConvVAE, init_vae
from dreamjax.pipeline.run import RunFolder

INITIAL_LATENTS = "initial_latents.npz"


def read_done(run: RunFolder, stage: str, folder: Path | None = None) -> dict:
    """A finished model stage's `DONE.json` (written last by its training), in the stage's
    folder or in `folder` (e.g. an iterative round's M)."""
    path = (folder or run.path(stage)) / "DONE.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; rerun the {stage} stage")
    return io.read_json(path)


def _restore(run: RunFolder, stage: str, done: dict, folder: Path | None = None) -> Any:
    """The params checkpoint a DONE.json points to ("checkpoint", relative to the stage)."""
    path = (folder or run.path(stage)) / done.get("checkpoint", "params")
    try:
        return checkpoint.restore_params(path)
    except (ArtifactError, FileNotFoundError) as e:
        raise ArtifactError(f"{e} (rerun the {stage} stage)") from None


def mdnrnn_from_meta(meta: dict, where: str) -> MDNRNN:
    """`MDNRNN` from a DONE.json dict: its fields under "model" (or at the top level)."""
    cfg = meta.get("model", meta)
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{where}: 'model' must be a dict of MDNRNN fields")
    try:
        return MDNRNN(**{k: cfg[k] for k in MDNRNN_FIELDS if k in cfg})
    except TypeError as e:
        raise ArtifactError(f"{where}: bad MDNRNN config ({e})") from None


def load_vae(run: RunFolder) -> tuple[ConvVAE, Any, str | None]:
    """(V, its params, vae_id) of the run's trained V."""
    done = read_done(run, "vae")
    where = str(run.path("vae") / "DONE.json")
    try:
        model = ConvVAE(z_dim=int(done["model"]["z_dim"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: no model z_dim ({e}); rerun the vae stage") from None
    params = _restore(run, "vae", done)
    try:
        check_shapes(params, jax.eval_shape(lambda: init_vae(jax.random.key(0), model.z_dim)),
                     where, f"V {one_line(model)}")
    except ValueError as e:
        raise ArtifactError(f"{e} (rerun the vae stage)") from None
    return model, params, done.get("vae_id")


def load_mdnrnn(run: RunFolder, folder: Path | None = None
                ) -> tuple[MDNRNN, Any, str | None, int]:
    """(M, its params, mdnrnn_id, K) of the run's trained M (or the one in `folder`); for an
    ensemble of K > 1 the params are stacked (K, ...)."""
    done = read_done(run, "mdnrnn", folder)
    where = str((folder or run.path("mdnrnn")) / "DONE.json")
    model = mdnrnn_from_meta(done, where)
    K = int(done.get("ensemble", 1))
    params = _restore(run, "mdnrnn", done, folder)
    try:
        if K > 1:
            if {int(np.shape(x)[0]) for x in jax.tree.leaves(params)} != {K}:
                raise ValueError(f"{where}: params are not {K} stacked ensemble members")
            check_mdn_params(model, jax.tree.map(lambda x: x[0], params), where)
        else:
            check_mdn_params(model, params, where)
    except ValueError as e:
        raise ArtifactError(f"{e} (rerun the mdnrnn stage)") from None
    return model, params, done.get("mdnrnn_id"), K


def model_ids(run: RunFolder, mdnrnn_dir: Path | None = None) -> dict[str, str | None]:
    """Provenance: the hashes of the run's V and M (`vae_id`, `mdnrnn_id`; M in `mdnrnn_dir`
    if given)."""
    return {"vae_id": read_done(run, "vae").get("vae_id"),
            "mdnrnn_id": read_done(run, "mdnrnn", mdnrnn_dir).get("mdnrnn_id")}


def initial_latents_path(run: RunFolder) -> Path:
    """Where the encode stage writes the bank of first-frame latents."""
    return run.path("encode") / INITIAL_LATENTS


def load_initial_latents(run: RunFolder) -> tuple[np.ndarray, np.ndarray]:
    """The dream's bank of first-frame latents: mu, logvar (N, Z)."""
    path = initial_latents_path(run)
    try:
        arrays = io.load_npz(path)
    except ArtifactError as e:
        raise ArtifactError(f"{e} (rerun the encode stage)") from None
    mu, logvar = arrays.get("mu"), arrays.get("logvar")
    if mu is None or logvar is None or mu.ndim != 2 or mu.shape != logvar.shape:
        raise ArtifactError(f"{path}: needs arrays 'mu' and 'logvar' (N, Z); rerun the encode "
                            "stage")
    return mu, logvar


def load_world_model(run: RunFolder, ctrl: ControllerConfig, mdnrnn_dir: Path | None = None,
                     vae: tuple | None = None) -> WorldModel:
    """The run's V and M (each restored once; M from `mdnrnn_dir` if given, e.g. an iterative
    round's) with the spec of controller `ctrl`; `vae`: `load_vae(run)`'s result when the
    caller already has it (V is then not restored again)."""
    vae, vae_params, _ = load_vae(run) if vae is None else vae
    mdn, mdn_params, _, K = load_mdnrnn(run, mdnrnn_dir)
    if vae.z_dim != mdn.z_dim:
        raise ArtifactError(f"{run.path('mdnrnn') / 'DONE.json'}: M has z_dim={mdn.z_dim} but V "
                            f"has {vae.z_dim}; rerun the encode and mdnrnn stages")
    return make_world_model(vae, vae_params, mdn, mdn_params, ctrl.kind,
                            hidden_units=ctrl.hidden, ensemble=K)


def load_dream_params(
    run: RunFolder, world_model: WorldModel, *, temperature: float = 1.0, max_steps: int = 1000,
    reward_mode: str = "head", dropout: float = 0.0, done_mode: str = "threshold",
    done_weight: float = 1.0, real_starts: Sequence[Path] | None = None, seed: int = 0,
) -> DreamParams:
    """The dream of the world model's M with the run's latent bank; C's obs mode; `dropout`,
    `done_mode`, `done_weight`: as `make_dream_params`. `real_starts`: series folders whose
    episodes give the dream real-state starts (`dreamjax.dream.starts`, M's state from
    teacher forcing with noise seeded by `seed`) instead of first frames."""
    init_state = None
    if real_starts is None:
        mu, logvar = load_initial_latents(run)
        if mu.shape[1] != world_model.z_dim:
            raise ArtifactError(f"{initial_latents_path(run)}: latents have Z={mu.shape[1]} but "
                                f"M has z_dim={world_model.z_dim}; rerun the encode stage")
    else:
        files = [f for d in real_starts for f in list_episodes(d)]
        if not files:
            raise ArtifactError(f"{', '.join(map(str, real_starts))}: no series for the dream's "
                                "real-state starts; rerun the encode stage")
        series = [load_series(f) for f in files]
        for f, s in zip(files, series, strict=True):
            if s["mu"].shape[1] != world_model.z_dim:
                raise ArtifactError(f"{f}: latents have Z={s['mu'].shape[1]} but M has "
                                    f"z_dim={world_model.z_dim}; rerun the encode stage")
        mu, logvar, c, h = real_start_bank(jax.random.key(seed), world_model.mdn,
                                           world_model.mdn_params, series)
        init_state = (c, h)
    return make_dream_params(
        world_model.mdn, world_model.mdn_params, mu, logvar, temperature=temperature,
        max_steps=max_steps, obs_mode=world_model.spec.obs_mode, reward_mode=reward_mode,
        members=world_model.mdn_members, dropout=dropout, done_mode=done_mode,
        done_weight=done_weight, init_state=init_state,
    )


def config_dream_params(cfg: ExperimentConfig, run: RunFolder, world_model: WorldModel,
                        series_dirs: Sequence[Path] | None = None) -> DreamParams:
    """`load_dream_params` with the run config's dream (`--dream.*`, `--es.max-steps`): the
    dream that C is trained in and the report shows. `series_dirs`: the data of real-state
    starts (`--dream.start real`; default: the encode stage's series)."""
    starts = None
    if cfg.dream.start == "real":
        starts = [run.path("encode")] if series_dirs is None else list(series_dirs)
    return load_dream_params(run, world_model, temperature=cfg.dream.temperature,
                             max_steps=cfg.es.max_steps, reward_mode=cfg.dream.reward_mode,
                             dropout=cfg.dream.dropout, done_mode=cfg.dream.done,
                             done_weight=cfg.mdnrnn.done_weight, real_starts=starts,
                             seed=cfg.seed)


def controller_dirs(cfg: ExperimentConfig, run: RunFolder) -> dict[str, Path]:
    """Where each phase of controller training writes (`dream/`, `real/` under `controller/`)."""
    return {p: run.path("controller") / p for p in cfg.controller_phases}


def final_controller_path(cfg: ExperimentConfig, run: RunFolder) -> Path:
    """The controller that is evaluated: the last phase's best evaluated mean."""
    return list(controller_dirs(cfg, run).values())[-1] / "best.npz"


def final_mdnrnn_dir(cfg: ExperimentConfig, run: RunFolder) -> Path | None:
    """The M the final C was trained with, when it is not the run's: an iterative run's selected
    round's (`controller/iterative/DONE.json` "mdnrnn"); None for the mdnrnn stage's M."""
    if cfg.train_in != "iterative":
        return None
    done = run.path("controller") / "iterative" / "DONE.json"
    if not done.is_file():
        raise ArtifactError(f"{done}: missing; rerun the controller stage")
    return run.root / io.read_json(done)["mdnrnn"]


def final_dream_config(cfg: ExperimentConfig, run: RunFolder) -> ExperimentConfig:
    """`cfg` at the τ the final C was trained at: an iterative run's selected round's
    (`controller/iterative/DONE.json` "tau", which `--iterate.temperatures` picks per round),
    else `cfg` itself."""
    if cfg.train_in != "iterative":
        return cfg
    done = run.path("controller") / "iterative" / "DONE.json"
    if not done.is_file():
        raise ArtifactError(f"{done}: missing; rerun the controller stage")
    return with_temperature(cfg, io.read_json(done).get("tau", cfg.dream.temperature))


def final_world_model(cfg: ExperimentConfig, run: RunFolder) -> WorldModel:
    """V and the M the final controller runs with (`final_mdnrnn_dir`), with its spec."""
    return load_world_model(run, cfg.controller, final_mdnrnn_dir(cfg, run))


def load_controller_params(path: Path, spec: ControllerSpec) -> tuple[Any, dict]:
    """(params, meta) of a saved controller, which must be the one `spec` describes."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; rerun the controller stage")
    controller, params, meta = load_controller(path)
    if controller != spec.controller or int(meta.get("obs_dim", -1)) != spec.obs_dim:
        raise ArtifactError(f"{path}: holds {one_line(controller)} on {meta.get('obs_dim')} "
                            f"features, not the configured {spec.kind!r} controller "
                            f"({one_line(spec.controller)} on {spec.obs_dim}); rerun the "
                            "controller stage")
    return params, meta
