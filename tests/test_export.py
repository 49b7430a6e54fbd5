"""The exported agent folder (dreamjax.agent_io): save -> load gives the same actions (float32,
and with float16 V the actions of those float16 weights), every missing, changed or corrupt file
is one ArtifactError naming it, the run.json of the pre-folders layout converts, the export CLI
refuses to overwrite a folder that is not an agent, and an exported Doom agent plays TakeCover."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from dreamjax import export, panels, play, playback
from dreamjax.agent import WorldModel, make_world_model, render
from dreamjax.agent_io import (
    MANIFEST,
    WEIGHT_FILES,
    Agent,
    PlaySettings,
    half_vae,
    is_decoder,
    load_agent,
    save_agent,
    upgrade_config,
)
from dreamjax.config import PROFILES, TrainIn, to_dict
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.errors import ArtifactError
from dreamjax.models.controller import init_controller
from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn
from dreamjax.models.vae import ConvVAE, init_vae

Z = 4


def tiny_agent(action_dim: int = 3, kind: str = "zh", env: str = "carracing") -> Agent:
    """A random (untrained) world model and controller; V at full size (its decoder is what the
    float16 option is for), M and z small."""
    vae = ConvVAE(z_dim=Z)
    mdn = MDNRNN(z_dim=Z, action_dim=action_dim, hidden=8, n_mix=2, reward_head=True,
                 done_head=True)
    wm = make_world_model(vae, init_vae(jax.random.key(0), Z), mdn,
                          init_mdnrnn(jax.random.key(1), mdn), kind)
    ctrl = init_controller(jax.random.key(2), wm.spec.controller, wm.spec.obs_dim)
    mu = np.random.default_rng(0).normal(size=(5, Z)).astype(np.float32)
    return Agent(world_model=wm, ctrl_params=ctrl, initial_mu=mu,
                 initial_logvar=np.full_like(mu, -2.0),
                 settings=PlaySettings(env=env, max_steps=30, workers=1, envs_per_worker=2),
                 source=Path("memory"), exported=False, provenance={"run": "memory"},
                 config={"profile": "smoke"})


def actions(agent: Agent, frames: np.ndarray) -> np.ndarray:
    """The actions `play`'s policy takes on frames (T, S, 64, 64, 3): S slots, one episode each
    (seeds 0..S-1), all slots active."""
    policy = playback.make_policy(agent)
    T, S = frames.shape[:2]
    for s in range(S):
        policy.reset(s, EpisodeSpec(seed=s))
    return np.stack([policy.act(frames[t], np.ones(S, bool)) for t in range(T)])


@pytest.fixture(scope="module")
def agent() -> Agent:
    return tiny_agent()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, 3, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(agent, tmp_path_factory) -> Path:
    return save_agent(tmp_path_factory.mktemp("agent") / "a", agent, vae_half="decoder")


def _leaves(wm: WorldModel) -> dict:
    return {"vae": half_vae(wm.vae_params, "none"), "mdn": jax.tree.leaves(wm.mdn_params)}


def test_float32_round_trip_gives_identical_weights_and_actions(agent, frames, tmp_path):
    loaded = load_agent(save_agent(tmp_path / "a", agent, vae_half="none"))
    a, b = _leaves(agent.world_model), _leaves(loaded.world_model)
    assert a["vae"].keys() == b["vae"].keys()
    for k in a["vae"]:
        np.testing.assert_array_equal(a["vae"][k], b["vae"][k])
    for x, y in zip(a["mdn"], b["mdn"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert loaded.world_model.mdn == agent.world_model.mdn
    assert loaded.world_model.spec == agent.world_model.spec
    assert loaded.settings == agent.settings and loaded.exported
    np.testing.assert_array_equal(loaded.initial_mu, agent.initial_mu)
    np.testing.assert_array_equal(actions(loaded, frames), actions(agent, frames))


def test_float16_decoder_acts_exactly_as_float32(agent, frames, saved):
    loaded = load_agent(saved)
    assert loaded.weights["vae"] == {"encoder": "float32", "decoder": "float16"}
    stored = dict(np.load(saved / "vae.npz", allow_pickle=False))
    assert {str(v.dtype) for k, v in stored.items() if is_decoder(k)} == {"float16"}
    assert {str(v.dtype) for k, v in stored.items() if not is_decoder(k)} == {"float32"}
    np.testing.assert_array_equal(actions(loaded, frames), actions(agent, frames))
    # the decoder draws with the float16-rounded weights
    rounded = jax.tree.map(lambda x: np.asarray(x, np.float16).astype(np.float32),
                           agent.world_model.vae_params)
    z = np.random.default_rng(2).normal(size=(3, Z)).astype(np.float32)
    vae = agent.world_model.vae
    np.testing.assert_array_equal(render(vae, loaded.world_model.vae_params, z),
                                  render(vae, rounded, z))


def test_float16_everywhere_acts_as_the_float16_weights(agent, frames, tmp_path):
    loaded = load_agent(save_agent(tmp_path / "a", agent, vae_half="all"))
    assert loaded.weights["vae"] == {"encoder": "float16", "decoder": "float16"}
    wm = agent.world_model
    rounded = jax.tree.map(lambda x: np.asarray(x, np.float16).astype(np.float32), wm.vae_params)
    as_f16 = dataclasses.replace(agent, world_model=wm.replace(vae_params=rounded))
    np.testing.assert_array_equal(actions(loaded, frames), actions(as_f16, frames))
    np.testing.assert_allclose(actions(loaded, frames), actions(agent, frames), atol=0.05)


def test_saved_folder_lists_every_file_and_holds_no_pickles(saved):
    manifest = json.loads((saved / MANIFEST).read_text())
    assert set(manifest["files"]) == set(WEIGHT_FILES)
    for name in WEIGHT_FILES:
        if name.endswith(".npz"):
            with np.load(saved / name, allow_pickle=False) as z:
                assert all(z[k].dtype != object for k in z.files)
    assert manifest["mdnrnn"]["hidden"] == 8 and manifest["controller"]["kind"] == "zh"


def _broken(saved: Path, tmp_path: Path, name: str, how: str) -> Path:
    folder = tmp_path / f"{name}-{how}"
    shutil.copytree(saved, folder)
    path = folder / name
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped"])
@pytest.mark.parametrize("name", [*WEIGHT_FILES, MANIFEST])
def test_missing_or_corrupt_files_name_the_file(saved, tmp_path, name, how):
    folder = _broken(saved, tmp_path, name, how)
    with pytest.raises(ArtifactError) as err:
        load_agent(folder)
    message = str(err.value)
    assert message.startswith(str(folder / name)) and "\n" not in message


def test_manifest_with_wrong_format_or_version_is_refused(saved, tmp_path):
    for key, value, words in (("format", "other", "not a dreamjax-agent"),
                              ("format_version", 99, "version 99")):
        folder = tmp_path / key
        shutil.copytree(saved, folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        (folder / MANIFEST).write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(ArtifactError, match=words):
            load_agent(folder)


def test_play_cli_reports_a_corrupt_agent_in_one_line(saved, tmp_path):
    folder = _broken(saved, tmp_path, "vae.npz", "flipped")
    proc = subprocess.run([sys.executable, "-m", "dreamjax.play", str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'vae.npz'}: sha256")


OLD_RUN_CONFIG = {
    "profile": "laptop", "seed": 0, "controller": "zh", "controller_hidden": 40,
    "train_in": "real", "workers": 0, "envs_per_worker": 4, "run_dir": "/tmp/base/laptop",
    "stages": ["collect", "vae", "encode", "mdnrnn", "controller", "evaluate", "report"],
    "collect": {"episodes": 100, "fast_env": True, "max_steps": 1000, "policy": "paper",
                "workers": 0},
    "es": {"chunk": 10, "dream_generations": 100, "eval_episodes": 8, "eval_every": 10,
           "generations": 30, "max_steps": 300, "popsize": 16, "rollouts": 1,
           "sigma_init": 0.1, "strategy": "CMA_ES", "temperature": 1.15},
    "eval": {"episodes": 100, "max_steps": 1000, "seed_start": 1000000, "videos": True},
}
"""The run.json config of the laptop run that made the shipped agent (the layout before the
package moved into folders), trimmed to the fields that moved and a few that did not."""


def test_old_run_config_converts_to_the_laptop_config_of_its_time():
    """The shipped agent's run predates the dream-trained `laptop`: it reads as `laptop-real`
    (the same settings the profile had then), so it still plays frame by frame."""
    cfg, notes = upgrade_config(OLD_RUN_CONFIG, "run.json")
    laptop = PROFILES["laptop-real"]()
    assert cfg == dataclasses.replace(laptop, run_dir="/tmp/base/laptop")
    assert cfg.controller.kind == "zh" and cfg.dream.temperature == 1.15 and cfg.fast_env
    assert cfg.action_repeat == 1 and cfg.eval.max_steps == 1000 and cfg.train_in == "real"
    assert notes == ["controller: kind given as a string", "controller_hidden -> controller.hidden",
                     "collect.fast_env -> fast_env", "es.temperature -> dream.temperature",
                     "profile laptop -> laptop-real (the laptop profile of its time)",
                     "ignored collect.workers"]  # the top-level `workers` was there already


def test_a_laptop_config_of_today_keeps_the_laptop_profile():
    raw = to_dict(PROFILES["laptop"]())
    raw.pop("iterate")
    cfg, notes = upgrade_config(raw, "run.json")
    assert cfg == PROFILES["laptop"]() and notes == []


def test_a_laptop_config_before_selection_episodes_reads_without_them():
    raw = to_dict(PROFILES["laptop"]())
    raw["iterate"].pop("select_episodes")
    cfg, notes = upgrade_config(raw, "run.json")
    assert cfg.iterate.select_episodes == 0 and PROFILES["laptop"]().iterate.select_episodes > 0
    assert cfg == dataclasses.replace(PROFILES["laptop"](), iterate=dataclasses.replace(
        PROFILES["laptop"]().iterate, select_episodes=0))
    assert notes == ["iterate.select_episodes 0 (the laptop profile of its time)"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_todays_run_config_round_trips(profile):
    cfg = PROFILES[profile]()
    assert upgrade_config(json.loads(json.dumps(to_dict(cfg))), "run.json") == (cfg, [])


def test_the_model_card_names_where_c_trained_for_every_train_in():
    assert set(export.TRAINED_IN) == set(typing.get_args(TrainIn))


def test_export_refuses_an_occupied_out_folder_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    run = tmp_path / "no-such-run"
    assert export.main([str(run), "--out", str(out)]) == 2
    assert export.main([str(run), "--out", str(out), "--force"]) == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_an_exported_doom_agent_plays_takecover(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    monkeypatch.chdir(tmp_path)  # the engine makes an empty _vizdoom/ in the working directory
    folder = save_agent(tmp_path / "doom", tiny_agent(action_dim=1, kind="zch", env="doom"))
    video, out = tmp_path / "doom.mp4", tmp_path / "doom.json"
    assert play.main([str(folder), "--episodes", "2", "--max-steps", "20", "--video", str(video),
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["env"] == "DoomTakeCover" and res["seeds"] == [1_000_000, 1_000_001]
    assert res["returns"] == [float(n) for n in res["lengths"]]  # +1 per tic survived
    frame = imageio.get_reader(video).get_data(0)
    # the 640x480 game frame scaled to the panel height keeps its aspect ratio
    assert frame.shape == (panels.HEADER + panels.PANEL, panels.PANEL * 4 // 3 + 2 * panels.PANEL
                           + 2 * panels.GAP, 3)
    assert play.main([str(folder), "--env", "carracing"]) == 2  # M takes 1 action, not 3
