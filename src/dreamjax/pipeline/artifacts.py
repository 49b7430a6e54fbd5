"""The run folder's artifacts, read in one place: the stages and the dream never open them.

One loader per artifact; a missing or corrupt one raises `dreamjax.errors.ArtifactError` that
starts with the file's path and names the stage to rerun:

- V: `vae/DONE.json` ("model": {"z_dim"}, "vae_id", "checkpoint" folder) and its orbax params.
- M: `mdnrnn/DONE.json` (`MDNRNN` fields under "model", "mdnrnn_id", "checkpoint") and params.
- the bank of initial latents: `series/initial_latents.npz` with mu, logvar (N, Z).
- C: each controller phase's folder (`controller/dream`, `controller/real`) and the evaluated
  controller, `final_controller_path` (the file format is dreamjax.es's `load_controller`).

`load_world_model` restores V and M once into a `dreamjax.agent.WorldModel`;
`load_dream_params` adds the latent bank to its M to make the dream's `DreamParams`.
"""

from __future__ import annotations

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
from dreamjax.config import ControllerConfig, ExperimentConfig
from dreamjax.dream.env import DreamParams, make_dream_params
from dreamjax.errors import ArtifactError
from dreamjax.es import load_controller
from dreamjax.models.controller import ControllerSpec
from dreamjax.models.mdnrnn import MDNRNN, MDNRNN_FIELDS
from dreamjax.models.vae import ConvVAE, init_vae
from dreamjax.pipeline.run import RunFolder

INITIAL_LATENTS = "initial_latents.npz"


def read_done(run: RunFolder, stage: str) -> dict:
    """A finished model stage's `DONE.json` (written last by its training)."""
    path = run.path(stage) / "DONE.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; rerun the {stage} stage")
    return io.read_json(path)


def _restore(run: RunFolder, stage: str, done: dict) -> Any:
    """The params checkpoint a DONE.json points to ("checkpoint", relative to the stage)."""
    folder = run.path(stage) / done.get("checkpoint", "params")
    try:
        return checkpoint.restore_params(folder)
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


def load_mdnrnn(run: RunFolder) -> tuple[MDNRNN, Any, str | None]:
    """(M, its params, mdnrnn_id) of the run's trained M."""
    done = read_done(run, "mdnrnn")
    model = mdnrnn_from_meta(done, str(run.path("mdnrnn") / "DONE.json"))
    params = _restore(run, "mdnrnn", done)
    try:
        check_mdn_params(model, params, str(run.path("mdnrnn") / "DONE.json"))
    except ValueError as e:
        raise ArtifactError(f"{e} (rerun the mdnrnn stage)") from None
    return model, params, done.get("mdnrnn_id")


def model_ids(run: RunFolder) -> dict[str, str | None]:
    """Provenance: the hashes of the run's V and M (`vae_id`, `mdnrnn_id`)."""
    return {"vae_id": read_done(run, "vae").get("vae_id"),
            "mdnrnn_id": read_done(run, "mdnrnn").get("mdnrnn_id")}


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


def load_world_model(run: RunFolder, ctrl: ControllerConfig) -> WorldModel:
    """The run's V and M (each restored once) with the spec of controller `ctrl`."""
    vae, vae_params, _ = load_vae(run)
    mdn, mdn_params, _ = load_mdnrnn(run)
    if vae.z_dim != mdn.z_dim:
        raise ArtifactError(f"{run.path('mdnrnn') / 'DONE.json'}: M has z_dim={mdn.z_dim} but V "
                            f"has {vae.z_dim}; rerun the encode and mdnrnn stages")
    return make_world_model(vae, vae_params, mdn, mdn_params, ctrl.kind,
                            hidden_units=ctrl.hidden)


def load_dream_params(
    run: RunFolder, world_model: WorldModel, *, temperature: float = 1.0, max_steps: int = 1000,
    reward_mode: str = "head",
) -> DreamParams:
    """The dream of the world model's M with the run's latent bank; C's obs mode."""
    mu, logvar = load_initial_latents(run)
    if mu.shape[1] != world_model.z_dim:
        raise ArtifactError(f"{initial_latents_path(run)}: latents have Z={mu.shape[1]} but M "
                            f"has z_dim={world_model.z_dim}; rerun the encode stage")
    return make_dream_params(
        world_model.mdn, world_model.mdn_params, mu, logvar, temperature=temperature,
        max_steps=max_steps, obs_mode=world_model.spec.obs_mode, reward_mode=reward_mode,
    )


def controller_dirs(cfg: ExperimentConfig, run: RunFolder) -> dict[str, Path]:
    """Where each phase of controller training writes (`dream/`, `real/` under `controller/`)."""
    return {p: run.path("controller") / p for p in cfg.controller_phases}


def final_controller_path(cfg: ExperimentConfig, run: RunFolder) -> Path:
    """The controller that is evaluated: the last phase's best evaluated mean."""
    return list(controller_dirs(cfg, run).values())[-1] / "best.npz"


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
