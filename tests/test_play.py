"""`dreamjax.play` and `dreamjax.export` on the session's smoke run (`smoke_run`, read only):
play a run folder (returns, JSON, a three-panel MP4), export it and play the export (the card's
returns, the run's returns: a float16 decoder does not change the agent), the --window loop
equals the pool, the dream's returns equal the ES fitness rollout's, no display is one line; and
FastCarRacing is registered with gymnasium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from dreamjax import export, panels, play, playback
from dreamjax.agent_io import load_agent, load_any
from dreamjax.config import profile_config
from dreamjax.dream.env import DreamEnv, make_dream_params
from dreamjax.dream.rollout import rollout
from dreamjax.envs.carracing import make_raw_env
from dreamjax.envs.pool import EpisodeSpec

SMOKE = profile_config("smoke")
"""The config of `smoke_run`: its env slots are the ones `play` uses on the run folder."""
STEPS = 30


def test_fast_carracing_is_registered_with_gymnasium():
    import dreamjax.envs  # noqa: F401  (registers it)

    env, ref = gym.make("dreamjax/FastCarRacing-v3"), make_raw_env(fast=True)
    assert env.spec.max_episode_steps == ref.spec.max_episode_steps == 1000
    a, _ = env.reset(seed=7)
    b, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(a, b)
    for t in range(20):
        action = np.array([np.sin(t), 0.6, 0.0], np.float32)
        x, y = env.step(action), ref.step(action)
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:3] == y[1:3]


def test_compose_draws_the_frames_exactly_and_the_action_as_bars():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    recon = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bars = [("steer", 0.5, -1.0, 1.0), ("gas", 0.0, 0.0, 1.0), ("brake", 1.0, 0.0, 1.0)]
    out = panels.compose([raw, recon], playback.REAL_TITLES, bars, ["seed 1"])
    P, H, G = panels.PANEL, panels.HEADER, panels.GAP
    assert out.shape == (H + P, 3 * P + 2 * G, 3) and out.shape[0] % 2 == out.shape[1] % 2 == 0
    np.testing.assert_array_equal(out[H:, :P], raw.repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(out[H:, P + G : 2 * P + G], recon.repeat(3, 0).repeat(3, 1))
    panel = out[H:, 2 * (P + G) :]
    # rows 31, 71, 111 cross the three bars: steer +0.5 fills from the middle to 3/4 of the
    # track, gas 0 nothing, brake 1 all of it
    steer = np.flatnonzero((panel[31] == (80, 150, 255)).all(-1))
    assert abs(steer.min() - P // 2) <= 1 and abs(steer.max() - (10 + 0.75 * (P - 20))) <= 1
    assert not (panel[71] == (90, 210, 90)).all(-1).any()
    brake = np.flatnonzero((panel[111] == (235, 80, 80)).all(-1))
    assert brake.min() <= 11 and brake.max() >= P - 11


@pytest.fixture(scope="module")
def run_dir(smoke_run) -> Path:
    return smoke_run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "agent"
    assert export.main([str(run_dir), "--out", str(out), "--episodes", "2"]) == 0
    return out


@pytest.mark.slow
def test_play_run_folder_prints_writes_json_and_a_three_panel_video(run_dir, tmp_path, capsys):
    video, out = tmp_path / "drive.mp4", tmp_path / "play.json"
    assert play.main([str(run_dir), "--episodes", "2", "--max-steps", str(STEPS),
                      "--video", str(video), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "episode 2/2" in printed and "agent: " in printed
    res = json.loads(out.read_text())
    assert res["seeds"] == [1_000_000, 1_000_001] and res["lengths"] == [STEPS, STEPS]
    assert res["mean"] == pytest.approx(np.mean(res["returns"]))
    assert res["std"] == pytest.approx(np.std(res["returns"]))
    slots = {"workers": SMOKE.workers, "envs_per_worker": SMOKE.envs_per_worker}
    assert res["slots"] == slots  # the run's own
    # the video: the first episode, its real frames in the left panel
    reader = imageio.get_reader(video)
    frames = np.stack(list(reader.iter_data()))
    assert frames.shape == (STEPS, panels.HEADER + panels.PANEL,
                            3 * panels.PANEL + 2 * panels.GAP, 3)
    agent = load_any(run_dir)
    again = playback.play_real(agent, playback.GAMES["carracing"], [1_000_000], max_steps=STEPS,
                               record=1, **slots)[0]
    assert again.total_reward == res["returns"][0]
    left = frames[:, panels.HEADER :, : panels.PANEL].astype(float)
    real = again.frames.repeat(2, 1).repeat(2, 2).astype(float)
    assert np.abs(left - real).mean() < 6.0  # H.264 is lossy; another frame is ~10x further
    assert np.abs(left[1:] - real[:-1]).mean() > np.abs(left - real).mean()


@pytest.mark.slow
def test_export_then_play_gives_the_cards_returns_and_the_runs(run_dir, exported, tmp_path,
                                                               capsys):
    card = json.loads((exported / "card.json").read_text())
    assert card["seeds"] == [1_000_000, 1_000_001] and card["episodes"] == 2
    assert card["mean"] == pytest.approx(np.mean(card["returns"]))
    assert card["command"] == f"python -m dreamjax.play {exported} --episodes 2"
    readme = (exported / "README.md").read_text()
    assert readme.startswith("# dreamjax agent: CarRacing-v3")
    assert "C was trained by CMA-ES inside the dream (M as the env) (profile `smoke`)" in readme
    assert load_agent(exported).weights["vae"] == {"encoder": "float32", "decoder": "float16"}
    capsys.readouterr()
    out = tmp_path / "a.json"
    assert play.main([str(exported), "--json", str(out)]) == 0
    assert "same returns as the model card on 2/2 episodes" in capsys.readouterr().out
    assert json.loads(out.read_text())["returns"] == card["returns"]
    assert play.main([str(run_dir), "--episodes", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["returns"] == card["returns"]


@pytest.mark.slow
def test_window_loop_acts_as_the_pool(exported):
    agent = load_agent(exported)
    game = playback.GAMES["carracing"]
    seen = []

    def on_step(raw, frame, action, total, t):
        seen.append((raw.shape, frame.shape, action.shape, t))
        return True

    total, length, stopped = playback.play_here(agent, game, EpisodeSpec(seed=1_000_001),
                                        max_steps=STEPS, slots=8, on_step=on_step)
    pool = playback.play_real(agent, game, [1_000_001], max_steps=STEPS, workers=2,
                          envs_per_worker=4)[0]
    assert (total, length, stopped) == (pool.total_reward, pool.length, False)
    assert seen[0] == ((96, 96, 3), (64, 64, 3), (3,), 1) and len(seen) == STEPS


@pytest.mark.slow
def test_dream_returns_equal_the_es_rollouts(exported, tmp_path):
    video, out = tmp_path / "dream.mp4", tmp_path / "dream.json"
    assert play.main([str(exported), "--dream", "--episodes", "2", "--max-steps", "20",
                      "--video", str(video), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    agent = load_agent(exported)
    wm = agent.world_model
    params = make_dream_params(wm.mdn, wm.mdn_params, agent.initial_mu, agent.initial_logvar,
                               temperature=agent.settings.dream_temperature, max_steps=20)
    for i in range(2):
        ref = rollout(jax.random.fold_in(jax.random.key(0), i), DreamEnv(), params,
                      wm.spec.controller.apply, agent.ctrl_params, 20)
        assert res["lengths"][i] == int(ref.lengths)
        assert res["returns"][i] == pytest.approx(float(ref.returns), rel=1e-5, abs=1e-5)
    assert len(list(imageio.get_reader(video).iter_data())) == res["lengths"][0]


def test_window_without_a_display_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "dreamjax.play", str(tmp_path), "--window"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --window: no display here (DISPLAY and WAYLAND_DISPLAY are unset); use --video "
        "FILE to write an MP4 instead"]
