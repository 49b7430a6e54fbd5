"""The agent as files: an exported agent folder (`save_agent`, `load_agent`) and the same `Agent`
read from a run folder (`agent_from_run`), so that `dreamjax.play` takes either.

An exported folder (format `FORMAT`, version `FORMAT_VERSION`) is self-contained and nothing in
it is unpickled:

    agent.json           manifest: env, V's z_dim, M's MDNRNN fields, C's kind and hidden units,
                         the play settings, each model's dtypes, the sha256 of every other file,
                         provenance; written last
    vae.npz              V's params, one array per leaf named by its path
                         ("params/enc_conv0/kernel"); the decoder (or all of V) may be float16,
                         cast back to float32 on load
    mdnrnn.npz           M's params (float32, same naming)
    controller.npz       C, in `dreamjax.es.controller_io`'s format
    initial_latents.npz  the dream's bank of first-frame latents: mu, logvar (N, Z) float32
    config.json          the source run's training config (provenance only; never read back)
    card.json, README.md the model card (written by `dreamjax.export`; not in the manifest)

A missing, changed, truncated or corrupt file raises a one-line `ArtifactError` naming it.

A run folder is read through `dreamjax.pipeline.artifacts`. Its `run.json` may have the layout of
the code before the package moved into folders (C's kind as a string, `fast_env` under `collect`,
the dream's temperature under `es`): `run_config` converts it, and says what it converted.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from flax import traverse_util

from dreamjax import io
from dreamjax.agent import WorldModel, check_shapes, make_world_model, one_line
from dreamjax.config import ExperimentConfig, profile_config, to_dict
from dreamjax.errors import ArtifactError, ConfigError
from dreamjax.es.controller_io import load_controller, save_controller
from dreamjax.models.mdnrnn import MDNRNN_FIELDS
from dreamjax.models.vae import ConvVAE, init_vae
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.run import RunFolder

FORMAT = "dreamjax-agent"
FORMAT_VERSION = 1
MANIFEST = "agent.json"
WEIGHT_FILES = ("vae.npz", "mdnrnn.npz", "controller.npz", "initial_latents.npz", "config.json")
"""The files `agent.json` lists with their sha256."""
VaeHalf = Literal["none", "decoder", "all"]
DECODER_PREFIX = "dec_"
"""ConvVAE's decoder layers (dec_dense, dec_deconv*); the encoder's start with enc_."""
REEXPORT = "re-export the agent (python -m dreamjax.export RUN --out DIR)"

_MOVED_KEYS = {
    ("controller_hidden",): ("controller", "hidden"),
    ("collect", "fast_env"): ("fast_env",),
    ("collect", "workers"): ("workers",),
    ("es", "temperature"): ("dream", "temperature"),
}
"""run.json keys of the pre-folders layout -> their place in today's `ExperimentConfig`."""


@dataclasses.dataclass(frozen=True)
class PlaySettings:
    """How the agent is played: its env and the episodes of its evaluation."""

    env: str | None = None
    """'carracing' or 'doom'; None: decided by M's action size (`dreamjax.play`)."""
    fast_env: bool = True
    """CarRacing with the byte-identical fast renderer."""
    max_steps: int = 1000
    """Step limit of a real episode (and of a dream)."""
    action_repeat: int = 1
    """Game frames per step (`ExperimentConfig.action_repeat`)."""
    policy_seed: int = 0
    """Seed of `WorldModelPolicy`'s keys (V's z samples): the run's master seed."""
    seed_start: int = 1_000_000
    """The evaluation episodes' first env seed."""
    episodes: int = 100
    """Evaluation episodes."""
    workers: int = 2
    """Env worker processes of the evaluation."""
    envs_per_worker: int = 4
    """Envs per worker: the policy acts for workers x envs_per_worker slots in one batched call,
    and V's batched convolutions round differently at other batch sizes."""
    dream_temperature: float = 1.0
    """τ of the dream."""


@dataclasses.dataclass(frozen=True)
class Agent:
    """V, M and C with what playing them needs, read from an exported folder or a run folder."""

    world_model: WorldModel
    ctrl_params: Any
    initial_mu: np.ndarray
    """(N, Z) the dream's bank of first-frame latents (means)."""
    initial_logvar: np.ndarray
    """(N, Z)"""
    settings: PlaySettings
    source: Path
    exported: bool
    """True for an exported folder, False for a run folder."""
    provenance: dict
    config: dict
    """The source run's training config (`to_dict(ExperimentConfig)`)."""
    weights: dict = dataclasses.field(default_factory=dict)
    """Each model's stored dtypes, e.g. {"vae": {"encoder": "float32", "decoder": "float16"}}."""
    card: dict | None = None
    """The exported folder's card.json, if any."""
    reference: dict | None = None
    """A run folder's own evaluation (evaluate/results.json), if any."""


def _move(d: dict, src: tuple[str, ...], dst: tuple[str, ...]) -> bool:
    """Move d[src...] to d[dst...] unless src is absent or dst is set; True if moved."""
    parent = d
    for k in src[:-1]:
        parent = parent.get(k)
        if not isinstance(parent, dict):
            return False
    if src[-1] not in parent:
        return False
    target = d
    for k in dst[:-1]:
        target = target.setdefault(k, {})
    if dst[-1] in target:
        return False
    target[dst[-1]] = parent.pop(src[-1])
    return True


def _merge(obj: Any, values: dict, prefix: str, ignored: list[str]) -> Any:
    """`obj` (a config dataclass) with the fields in `values` replaced (nested dicts recurse,
    lists become tuples); keys that are no field of it are listed in `ignored`."""
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for k, v in values.items():
        if k not in names:
            ignored.append(prefix + k)
            continue
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            changes[k] = _merge(cur, v, f"{prefix}{k}.", ignored)
        else:
            changes[k] = tuple(v) if isinstance(v, list) else v
    return dataclasses.replace(obj, **changes)


def upgrade_config(raw: dict, where: str) -> tuple[ExperimentConfig, list[str]]:
    """A run.json "config" dict (today's layout or the pre-folders one) -> (`ExperimentConfig`,
    notes on what was converted or ignored). Missing fields take the profile's defaults; a
    `laptop` config without `action_repeat` was written before `laptop` trained C in the dream
    and takes `laptop-real`'s, and one whose `iterate` has no `select_episodes` was written
    before `laptop` had selection episodes (0)."""
    d = copy.deepcopy(raw)
    notes = []
    if isinstance(d.get("controller"), str):
        d["controller"] = {"kind": d["controller"]}
        notes.append("controller: kind given as a string")
    for src, dst in _MOVED_KEYS.items():
        if _move(d, src, dst):
            notes.append(f"{'.'.join(src)} -> {'.'.join(dst)}")
    profile = str(d.get("profile", "laptop"))
    if profile == "laptop" and "action_repeat" not in d:
        profile = d["profile"] = "laptop-real"
        notes.append("profile laptop -> laptop-real (the laptop profile of its time)")
    it = d.get("iterate")
    if profile == "laptop" and isinstance(it, dict) and "select_episodes" not in it:
        it["select_episodes"] = 0
        notes.append("iterate.select_episodes 0 (the laptop profile of its time)")
    try:
        base = profile_config(profile)
        ignored: list[str] = []
        cfg = _merge(base, d, "", ignored)
    except (ConfigError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: unreadable config ({e})") from None
    notes += [f"ignored {k}" for k in ignored]
    return cfg, notes


def run_config(root: str | Path) -> tuple[ExperimentConfig, list[str]]:
    """The config a run folder was made with (`upgrade_config` of its run.json)."""
    path = Path(root) / "run.json"
    meta = io.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ArtifactError(f"{path}: no 'config'; not a dreamjax run folder")
    return upgrade_config(meta["config"], str(path))


def settings_of(cfg: ExperimentConfig) -> PlaySettings:
    """A run's play settings: its evaluation's episodes, seeds, step limit and pool layout."""
    return PlaySettings(
        env=None, fast_env=cfg.fast_env, max_steps=cfg.eval.max_steps,
        action_repeat=cfg.action_repeat, policy_seed=cfg.seed,
        seed_start=cfg.eval.seed_start, episodes=cfg.eval.episodes, workers=cfg.num_workers,
        envs_per_worker=cfg.envs_per_worker, dream_temperature=cfg.dream.temperature,
    )


def agent_from_run(root: str | Path) -> Agent:
    """The agent a run folder trained: V, M, the evaluated C and the latent bank."""
    run = RunFolder(root)
    cfg, notes = run_config(run.root)
    wm = artifacts.final_world_model(cfg, run)
    path = artifacts.final_controller_path(cfg, run)
    ctrl_params, ctrl_meta = artifacts.load_controller_params(path, wm.spec)
    mu, logvar = artifacts.load_initial_latents(run)
    stages = run.read_stages()
    provenance = {
        "run": str(run.root.resolve()),
        "profile": cfg.profile,
        "train_in": cfg.train_in,
        **artifacts.model_ids(run, artifacts.final_mdnrnn_dir(cfg, run)),
        "controller_file": str(path.relative_to(run.root)),
        "controller_meta": ctrl_meta,
        "stage_fingerprints": {s: r.get("fingerprint") for s, r in stages.items()},
        "config_converted": notes,
    }
    results = run.path("evaluate") / "results.json"
    reference = io.read_json(results) if results.is_file() else None
    if reference is not None:
        provenance["evaluation"] = {k: reference.get(k) for k in ("episodes", "mean", "std")}
    return Agent(
        world_model=wm, ctrl_params=ctrl_params, initial_mu=mu, initial_logvar=logvar,
        settings=settings_of(cfg), source=run.root, exported=False, provenance=provenance,
        config=to_dict(cfg), weights={"vae": {"encoder": "float32", "decoder": "float32"},
                                      "mdnrnn": "float32"},
        reference=reference,
    )


def is_exported(folder: str | Path) -> bool:
    """Whether `folder` holds an exported agent (its manifest)."""
    return (Path(folder) / MANIFEST).is_file()


def _flat(params: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def is_decoder(name: str) -> bool:
    """Whether a flat V param name ("params/dec_dense/kernel") belongs to the decoder."""
    return name.split("/")[1].startswith(DECODER_PREFIX)


def half_vae(vae_params: Any, half: VaeHalf) -> dict[str, np.ndarray]:
    """V's params flattened ("params/<layer>/<kernel|bias>"), the decoder's (`decoder`) or all
    (`all`) leaves cast to float16."""
    if half not in ("none", "decoder", "all"):
        raise ConfigError(f"--vae-half: unknown value {half!r}; choose none, decoder or all")
    return {k: v.astype(np.float16) if half == "all" or (half == "decoder" and is_decoder(k))
            else v for k, v in _flat(vae_params).items()}


def _dtypes(flat: dict[str, np.ndarray]) -> dict[str, str]:
    """{"encoder": dtype, "decoder": dtype} of flat V params."""
    parts = {"encoder": set(), "decoder": set()}
    for k, v in flat.items():
        parts["decoder" if is_decoder(k) else "encoder"].add(str(v.dtype))
    return {p: "+".join(sorted(d)) for p, d in parts.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_agent(folder: str | Path, agent: Agent, *, vae_half: VaeHalf = "decoder",
               extra: dict | None = None) -> Path:
    """Write `agent` as an exported folder (module docstring); `extra` entries go into the
    manifest. The manifest is written last: a folder without it is incomplete."""
    folder = Path(folder)
    wm = agent.world_model
    if wm.vae is None:
        raise ValueError("save_agent: the agent has no V")
    vae_flat = half_vae(wm.vae_params, vae_half)
    io.save_npz(folder / "vae.npz", compressed=True, **vae_flat)
    io.save_npz(folder / "mdnrnn.npz", compressed=True, **_flat(wm.mdn_params))
    spec = wm.spec
    save_controller(folder / "controller.npz", spec.controller, agent.ctrl_params,
                    {"kind": spec.kind, "obs_dim": spec.obs_dim})
    io.save_npz(folder / "initial_latents.npz", compressed=True,
                mu=np.asarray(agent.initial_mu, np.float32),
                logvar=np.asarray(agent.initial_logvar, np.float32))
    io.write_json(folder / "config.json", agent.config)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "env": agent.settings.env,
        "vae": {"z_dim": wm.vae.z_dim},
        "mdnrnn": {f: getattr(wm.mdn, f) for f in MDNRNN_FIELDS},
        "controller": {"kind": spec.kind, "hidden": spec.controller.hidden},
        "settings": dataclasses.asdict(agent.settings),
        "weights": {"vae": _dtypes(vae_flat), "mdnrnn": "float32", "controller": "float32"},
        "files": {name: sha256(folder / name) for name in WEIGHT_FILES},
        "provenance": agent.provenance,
        **(extra or {}),
    }
    io.write_json(folder / MANIFEST, manifest)
    return folder


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {folder} is not an exported agent ({REEXPORT})")
    manifest = io.read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} manifest; {REEXPORT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: agent format version {manifest.get('format_version')}, "
                            f"this dreamjax reads {FORMAT_VERSION}; {REEXPORT}")
    for key in ("vae", "mdnrnn", "controller", "settings", "files"):
        if not isinstance(manifest.get(key), dict):
            raise ArtifactError(f"{path}: no '{key}' entry; {REEXPORT}")
    return manifest


def _verify(folder: Path, files: dict) -> None:
    """Every listed file exists and has its recorded sha256."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; {REEXPORT}")
        if files.get(name) != sha256(path):
            raise ArtifactError(f"{path}: sha256 differs from {MANIFEST}'s (changed or "
                                f"truncated); {REEXPORT}")


def _params(path: Path, dtype: Any = np.float32) -> Any:
    """A params npz (flat names) -> the nested dict, as `dtype` arrays."""
    flat = io.load_npz(path)
    if not flat:
        raise ArtifactError(f"{path}: no arrays; {REEXPORT}")
    try:
        return traverse_util.unflatten_dict({k: v.astype(dtype) for k, v in flat.items()},
                                            sep="/")
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: bad parameter names ({e}); {REEXPORT}") from None


def load_agent(folder: str | Path) -> Agent:
    """Read an exported folder (`save_agent`'s), checking every file against the manifest."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    where = str(folder / MANIFEST)
    _verify(folder, manifest["files"])
    try:
        vae = ConvVAE(z_dim=int(manifest["vae"]["z_dim"]))
        mdn = artifacts.mdnrnn_from_meta(manifest["mdnrnn"], where)
        settings = PlaySettings(**manifest["settings"])
        kind = str(manifest["controller"]["kind"])
        hidden = int(manifest["controller"]["hidden"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: bad entry ({type(e).__name__}: {e}); {REEXPORT}") from None
    vae_params = _params(folder / "vae.npz")
    try:
        check_shapes(vae_params, jax.eval_shape(lambda: init_vae(jax.random.key(0), vae.z_dim)),
                     str(folder / "vae.npz"), f"V {one_line(vae)}")
        wm = make_world_model(vae, vae_params, mdn, _params(folder / "mdnrnn.npz"), kind,
                              hidden_units=hidden)
    except ValueError as e:
        raise ArtifactError(f"{' '.join(str(e).split())}; {REEXPORT}") from None
    controller, ctrl_params, _ = load_controller(folder / "controller.npz")
    if controller != wm.spec.controller:
        raise ArtifactError(f"{folder / 'controller.npz'}: holds {one_line(controller)}, not the "
                            f"{kind!r} controller {MANIFEST} names; {REEXPORT}")
    latents = io.load_npz(folder / "initial_latents.npz")
    mu, logvar = latents.get("mu"), latents.get("logvar")
    if mu is None or logvar is None or mu.ndim != 2 or mu.shape != logvar.shape:
        raise ArtifactError(f"{folder / 'initial_latents.npz'}: needs mu and logvar (N, Z); "
                            f"{REEXPORT}")
    card_path = folder / "card.json"
    return Agent(
        world_model=wm, ctrl_params=ctrl_params, initial_mu=mu, initial_logvar=logvar,
        settings=settings, source=folder, exported=True,
        provenance=manifest.get("provenance", {}),
        config=io.read_json(folder / "config.json"),
        weights=manifest.get("weights", {}),
        card=io.read_json(card_path) if card_path.is_file() else None,
    )


def load_any(path: str | Path) -> Agent:
    """An exported folder (`load_agent`) or a run folder (`agent_from_run`)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such folder; give an exported agent (e.g. "
                            "agents/carracing) or a run folder")
    if is_exported(path):
        return load_agent(path)
    if (path / "run.json").is_file():
        return agent_from_run(path)
    raise ArtifactError(f"{path}: neither an exported agent ({MANIFEST}) nor a run folder "
                        "(run.json)")
