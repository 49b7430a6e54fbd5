"""Episode store, collection (real env), streaming batches and series encoding."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dreamjax.data.batches as batches
import dreamjax.data.episodes as data
from dreamjax.config import CollectConfig
from dreamjax.data.batches import FrameBatches, SequenceBatches
from dreamjax.data.collect import collect, damaged_episodes
from dreamjax.data.episodes import (
    EpisodeError,
    episode_path,
    list_episodes,
    load_episode,
    load_series,
    save_episode,
)
from dreamjax.data.policies import (
    POLICIES,
    BlindFollowerPolicy,
    BrownianPolicy,
    ExploreFollowerPolicy,
    MixedExplorePolicy,
    MixedPolicy,
    MixedThrottlePolicy,
    RandomModelPolicy,
    RoadFollowerPolicy,
    ThrottleFollowerPolicy,
    episode_seed,
    road_offset,
)
from dreamjax.data.series import encode_series, initial_latents
from dreamjax.envs.carracing import make_env, to_env_action
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.errors import ConfigError

MAX_STEPS = 40
N_KILL = 8
ENV_FN = functools.partial(make_env, fast=True, max_episode_steps=MAX_STEPS)
STEP_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated")


def _collect_cfg(n: int, policy: str = "paper") -> CollectConfig:
    return CollectConfig(episodes=n, max_steps=MAX_STEPS, policy=policy)


def _collect(seed, folder, n: int, workers: int = 2, **kw) -> dict:
    return collect(seed, folder, _collect_cfg(n), env_fn=ENV_FN, workers=workers,
                   progress=False, **kw)


def _assert_same_episodes(a_files: list[Path], b_folder: Path) -> None:
    """Every episode of `a_files` has the same arrays and seed as its namesake in `b_folder`."""
    for f in a_files:
        a, b = load_episode(f), load_episode(b_folder / f.name)
        for k in STEP_ARRAYS:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{f.name}:{k}")
        assert a["seed"] == b["seed"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """An uninterrupted real-env collection of N_KILL short episodes in 2 workers."""
    folder = tmp_path_factory.mktemp("episodes") / "ref"
    stats = _collect(7, folder, N_KILL)
    assert stats["new_episodes"] == N_KILL and stats["replaced"] == 0
    assert stats["new_frames"] > 0 and stats["frames_per_s"] > 0
    return folder


def test_collect_writes_valid_episodes(collected):
    files = list_episodes(collected)
    assert [data.episode_index(f) for f in files] == list(range(N_KILL))
    seeds = set()
    for i, f in enumerate(files):
        ep = load_episode(f)
        T = len(ep["frames"])
        assert ep["seed"] == episode_seed(7, i) and ep["policy"] == "paper"
        # full max_steps unless the env terminated earlier (then the last flag says so)
        assert T == MAX_STEPS or ep["terminated"][-1]
        assert ep["truncated"][-1] == (T == MAX_STEPS and not ep["terminated"][-1])
        assert not ep["terminated"][:-1].any() and not ep["truncated"][:-1].any()
        assert np.all(np.abs(ep["actions"]) <= 1.0)
        assert ep["frames"].std() > 0  # real rendered frames
        seeds.add(ep["seed"])
    assert len(seeds) == N_KILL
    assert not list(collected.glob(".ep_*"))


def test_collect_rerun_is_a_noop_and_other_settings_are_refused(collected):
    before = {f.name: _digest(f) for f in list_episodes(collected)}
    stats = _collect(7, collected, N_KILL)
    assert stats["new_episodes"] == 0
    assert {f.name: _digest(f) for f in list_episodes(collected)} == before
    with pytest.raises(ConfigError, match="collect.json"):
        _collect(8, collected, N_KILL)
    stock = functools.partial(make_env, fast=False, max_episode_steps=MAX_STEPS)
    with pytest.raises(ConfigError, match="collect.json"):
        collect(7, collected, _collect_cfg(N_KILL), env_fn=stock, progress=False)
    other_limit = functools.partial(make_env, fast=True, max_episode_steps=MAX_STEPS + 1)
    with pytest.raises(ConfigError, match="max_episode_steps=40"):
        collect(7, collected, _collect_cfg(N_KILL), env_fn=other_limit, progress=False)
    assert {f.name: _digest(f) for f in list_episodes(collected)} == before


def test_collect_killed_and_rerun_completes_identically(collected, tmp_path):
    """SIGKILL a collect subprocess mid-run, rerun: same files as the uninterrupted run."""
    folder = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import functools
        from dreamjax.config import CollectConfig
        from dreamjax.data.collect import collect, damaged_episodes
        from dreamjax.envs.carracing import make_env
        if __name__ == "__main__":
            collect(7, {str(folder)!r}, CollectConfig(episodes={N_KILL}, max_steps={MAX_STEPS},
                    policy="paper"), workers=2, progress=False,
                    env_fn=functools.partial(make_env, fast=True, max_episode_steps={MAX_STEPS}))
    """)
    (tmp_path / "run_collect.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run_collect.py")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (folder.is_dir() and list_episodes(folder)):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = list_episodes(folder)
    assert 1 <= len(partial) < N_KILL, "the kill did not land mid-run"
    for f in partial:  # every file present is complete
        load_episode(f)
    stats = _collect(7, folder, N_KILL)
    assert stats["new_episodes"] == N_KILL - len(partial)
    files = list_episodes(folder)
    assert [f.name for f in files] == [f.name for f in list_episodes(collected)]
    _assert_same_episodes(files, collected)
    assert not list(folder.glob(".ep_*"))


def test_collect_rerun_recollects_corrupt_truncated_and_cut_short_files(collected, tmp_path,
                                                                        capsys):
    """Random bytes, a half file, a valid but cut-short episode and a missing one: the rerun
    names each damaged file on one stderr line, re-collects it with its own seed and finishes
    with the original episodes."""
    folder = tmp_path / "damaged"
    shutil.copytree(collected, folder)
    rng = np.random.default_rng(0)
    (folder / "ep_000000.npz").write_bytes(rng.integers(0, 256, 5000, np.uint8).tobytes())
    half = folder / "ep_000003.npz"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    cut = load_episode(folder / "ep_000005.npz")
    save_episode(folder / "ep_000005.npz", {**{k: cut[k][:10] for k in STEP_ARRAYS},
                                            "seed": cut["seed"], "policy": cut["policy"]})
    (folder / "ep_000007.npz").unlink()
    damaged = damaged_episodes(7, folder, _collect_cfg(N_KILL))
    assert list(damaged) == [0, 3, 5, 7] and damaged[7].endswith("ep_000007.npz: missing")
    capsys.readouterr()
    stats = _collect(7, folder, N_KILL)
    lines = [ln for ln in capsys.readouterr().err.splitlines()
             if ln.startswith("[dreamjax] collect:")]
    assert (stats["new_episodes"], stats["replaced"]) == (4, 3)
    assert len(lines) == 3
    for line, (i, why) in zip(lines, [(0, "not an npz"), (3, "not an npz"),
                                      (5, "cut short")], strict=True):
        assert f"ep_00000{i}.npz" in line and why in line
        assert f"with its seed {episode_seed(7, i)}" in line
    _assert_same_episodes(list_episodes(folder), collected)
    assert len(list_episodes(folder)) == N_KILL
    assert damaged_episodes(7, folder, _collect_cfg(N_KILL)) == {}
    assert _collect(7, folder, N_KILL)["new_episodes"] == 0


def test_collect_is_independent_of_the_number_of_workers(collected, tmp_path):
    """Seeds and policy streams belong to episodes, not workers: 1 worker gives the episodes
    that 2 workers gave (the `collected` fixture)."""
    one = tmp_path / "one_worker"
    stats = _collect(7, one, 3, workers=1)
    assert stats["new_episodes"] == 3
    files = list_episodes(one)
    assert [f.name for f in files] == [f"ep_00000{i}.npz" for i in range(3)]
    _assert_same_episodes(files, collected)


def test_collect_with_action_repeat_records_one_step_per_k_frames(tmp_path):
    """With `make_env(action_repeat=4)` an episode of MAX_STEPS / 4 steps stores one frame,
    action and summed reward per step and spans the MAX_STEPS frames of the plain episode."""
    steps = MAX_STEPS // 4
    env_fn = functools.partial(make_env, fast=True, max_episode_steps=steps, action_repeat=4)
    collect(7, tmp_path, CollectConfig(episodes=2, max_steps=steps), env_fn=env_fn, workers=1,
            progress=False)
    for i, f in enumerate(list_episodes(tmp_path)):
        ep = load_episode(f)
        assert ep["seed"] == episode_seed(7, i) and len(ep["frames"]) == steps
        assert ep["truncated"][-1] and ep["rewards"].min() <= -0.4 + 1e-6


def test_collect_refuses_bad_settings_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="--collect.policy"):
        collect(0, tmp_path / "a", CollectConfig(episodes=1, max_steps=MAX_STEPS,
                                                 policy="nope"),  # type: ignore[arg-type]
                env_fn=ENV_FN, progress=False)
    cartpole = functools.partial(gym.make, "CartPole-v1", max_episode_steps=MAX_STEPS)
    with pytest.raises(ConfigError, match="CartPole-v1 has observations"):
        collect(0, tmp_path / "b", _collect_cfg(1), env_fn=cartpole, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _synthetic_episode(ep: int, T: int) -> dict:
    """A synthetic (not env) episode whose pixels encode (episode, t) for tracking frames."""
    t = np.arange(T)
    frames = np.zeros((T, 64, 64, 3), np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = (t % 256)[:, None, None]
    frames[..., 2] = (t // 256)[:, None, None]
    actions = np.stack([np.sin(t + ep), np.cos(t), np.full(T, ep / 100)], 1).astype(np.float32)
    term = np.zeros(T, bool)
    term[-1] = ep % 2 == 0
    return {"frames": frames, "actions": actions, "rewards": (t * 0.1 + ep).astype(np.float32),
            "terminated": term, "truncated": ~term & (t == T - 1), "seed": 1000 + ep,
            "policy": "synthetic"}


def _ids(batch: np.ndarray) -> list[tuple[int, int]]:
    b = batch[:, 0, 0].astype(int)
    return [(e, lo + 256 * hi) for e, lo, hi in b]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[list[Path], list[int]]:
    folder = tmp_path_factory.mktemp("synthetic")
    lengths = [30, 45, 12, 60, 25, 33, 8, 50, 41, 20]
    for i, T in enumerate(lengths):
        save_episode(episode_path(folder, i), _synthetic_episode(i, T))
    return list_episodes(folder), lengths


def test_load_episode_round_trip(synthetic):
    files, lengths = synthetic
    ep = load_episode(files[3])
    ref = _synthetic_episode(3, lengths[3])
    for k in ("frames", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(ep[k], ref[k])
    assert (ep["seed"], ep["policy"]) == (1003, "synthetic")


def test_corrupt_and_malformed_files_raise_one_line_errors(synthetic, tmp_path):
    files, lengths = synthetic
    before = {f: _digest(f) for f in files}
    bad = tmp_path / "ep_000000.npz"
    raw = files[0].read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EpisodeError, match=str(bad)) as exc:
        load_episode(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(EpisodeError, match="ep_000000.npz"):
        FrameBatches([files[1], bad], batch_size=4, seed=0, shuffle_episodes=2)
    # wrong frame shape
    ep = _synthetic_episode(0, 10)
    with open(bad, "wb") as f:
        np.savez(f, **{**ep, "frames": np.zeros((10, 32, 32, 3), np.uint8)})
    with pytest.raises(EpisodeError, match="frames must be"):
        load_episode(bad)
    # inconsistent lengths, missing key, wrong dtype
    with open(bad, "wb") as f:
        np.savez(f, **{**ep, "rewards": np.zeros(9, np.float32)})
    with pytest.raises(EpisodeError, match="rewards must be"):
        load_episode(bad)
    with open(bad, "wb") as f:
        np.savez(f, **{k: v for k, v in ep.items() if k != "actions"})
    with pytest.raises(EpisodeError, match="missing keys"):
        load_episode(bad)
    with open(bad, "wb") as f:
        np.savez(f, **{**ep, "actions": ep["actions"].astype(np.float64)})
    with pytest.raises(EpisodeError, match="actions must be"):
        load_episode(bad)
    with pytest.raises(EpisodeError, match="no such file"):
        load_episode(tmp_path / "ep_000123.npz")
    with zipfile.ZipFile(tmp_path / "ep_000001.npz", "w") as z:
        z.writestr("frames.npy", b"not an array")
    with pytest.raises(EpisodeError, match="ep_000001.npz"):
        load_episode(tmp_path / "ep_000001.npz")
    assert {f: _digest(f) for f in files} == before


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_frame_batches_epoch_covers_every_frame_once_shuffled_across_episodes(synthetic):
    files, lengths = synthetic
    fb = FrameBatches(files, batch_size=16, seed=3, shuffle_episodes=3)
    assert fb.steps_per_epoch == sum(lengths) // 16
    batches = _take(iter(fb), fb.steps_per_epoch)
    assert all(b.shape == (16, 64, 64, 3) and b.dtype == np.uint8 for b in batches)
    ids = [i for b in batches for i in _ids(b)]
    assert len(set(ids)) == len(ids) == fb.steps_per_epoch * 16
    assert all(t < lengths[e] for e, t in ids)
    assert max(len({e for e, _ in _ids(b)}) for b in batches) >= 3  # mixed within a batch
    # bounded residency: one group of 3 episodes plus < B carried frames
    assert fb.max_resident_frames <= 3 * max(lengths) + 16 < sum(lengths)
    # the next epoch is a different order of the same frames
    nxt = _take(iter(FrameBatches(files, 16, 3, 3, start_step=fb.steps_per_epoch)), 3)
    assert [_ids(b) for b in nxt] != [_ids(b) for b in batches[:3]]


def test_frame_batches_deterministic_and_resume_equivalent(synthetic, monkeypatch):
    files, _ = synthetic
    fb = FrameBatches(files, batch_size=7, seed=11, shuffle_episodes=2)
    spe = fb.steps_per_epoch
    full = _take(iter(fb), 2 * spe + 3)
    again = _take(iter(FrameBatches(files, 7, 11, 2)), 2 * spe + 3)
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))
    other = _take(iter(FrameBatches(files, 7, 12, 2)), 3)
    assert not all(np.array_equal(a, b) for a, b in zip(full, other, strict=False))
    loads = []
    real_load = data.load_episode
    monkeypatch.setattr(batches, "load_episode", lambda p: loads.append(p) or real_load(p))
    for k in (1, spe - 1, spe, spe + 5):
        loads.clear()
        resumed = _take(iter(FrameBatches(files, 7, 11, 2, start_step=k)), 3)
        assert all(np.array_equal(a, b) for a, b in zip(resumed, full[k:k + 3], strict=True))
        # skipping loads no earlier group: 3 batches of 7 frames touch at most 4 groups of 2
        assert len(loads) <= 8 < len(files)


def _test_encode_fn(calls: list[int]):
    """TEST-ONLY encoder (not a VAE): mu = (episode, t mod 256, t div 256, 1) read from the
    synthetic pixels, logvar = -mu / 10; records batch sizes."""

    def encode(frames):
        calls.append(len(frames))
        px = frames[:, 0, 0, :].astype(np.float32)
        mu = np.concatenate([px, np.ones((len(frames), 1), np.float32)], 1)
        return mu, -mu / 10

    return encode


@pytest.fixture(scope="module")
def series(synthetic, tmp_path_factory) -> Path:
    files, _ = synthetic
    out = tmp_path_factory.mktemp("series")
    calls: list[int] = []
    stats = encode_series(_test_encode_fn(calls), files[0].parent, out, batch_size=16,
                          vae_id="vae-a", progress=False)
    assert stats["encoded"] == len(files) and set(calls) == {16}
    return out


def test_encode_series_contents_resume_and_vae_id(synthetic, series):
    files, lengths = synthetic
    s = load_series(series / "ep_000003.npz")
    assert s["mu"].dtype == np.float16 and s["mu"].shape == (lengths[3], 4)
    np.testing.assert_array_equal(s["mu"][:, 0], 3)
    np.testing.assert_array_equal(s["mu"][:, 1], np.arange(lengths[3]))
    np.testing.assert_array_equal(s["logvar"], (-s["mu"].astype(np.float32) / 10).astype(
        np.float16))
    np.testing.assert_array_equal(s["actions"], load_episode(files[3])["actions"])
    assert s["vae_id"] == "vae-a" and s["seed"] == 1003
    before = _digest(series / "ep_000005.npz")
    (series / "ep_000005.npz").unlink()
    calls: list[int] = []
    stats = encode_series(_test_encode_fn(calls), files[0].parent, series, batch_size=16,
                          vae_id="vae-a", progress=False)
    assert (stats["encoded"], stats["skipped"]) == (1, len(files) - 1)
    assert _digest(series / "ep_000005.npz") == before
    with pytest.raises(ValueError, match="vae_id='vae-a'"):
        encode_series(_test_encode_fn([]), files[0].parent, series, batch_size=16,
                      vae_id="vae-b", progress=False)
    assert json.loads((series / "series.json").read_text()) == {"vae_id": "vae-a"}
    mu, lv = initial_latents(list_episodes(series), 4)
    assert mu.shape == lv.shape == (4, 4) and mu.dtype == np.float32
    np.testing.assert_array_equal(mu[:, 0], np.arange(4))
    np.testing.assert_array_equal(mu[:, 1], 0)


def test_sequence_batches_shapes_mask_contiguity_and_resume(synthetic, series):
    _, lengths = synthetic
    sfiles = list_episodes(series)
    L = 24
    sb = SequenceBatches(sfiles, batch_size=6, seq_len=L, seed=5)
    batches = _take(iter(sb), 8)
    for b in batches:
        assert b["mu"].shape == b["logvar"].shape == (6, L + 1, 4)
        assert b["mu"].dtype == np.float32
        assert b["actions"].shape == (6, L + 1, 3) and b["rewards"].shape == (6, L + 1)
        assert b["dones"].shape == (6, L + 1) and b["dones"].dtype == np.bool_
        assert b["mask"].shape == (6, L) and b["mask"].dtype == np.float32
        eps = b["mu"][:, 0, 0].astype(int)
        assert len(set(eps)) == 6  # distinct episodes per batch
        for row, e in enumerate(eps):
            n = min(lengths[e], L + 1)
            assert b["mask"][row].sum() == n - 1
            assert b["mask"][row, : n - 1].all()
            t = b["mu"][row, :n, 1] + 256 * b["mu"][row, :n, 2]
            np.testing.assert_array_equal(np.diff(t), 1)  # a contiguous window
            assert not b["mu"][row, n:].any()  # zero padding
            t0 = int(t[0])
            ref = _synthetic_episode(e, lengths[e])
            np.testing.assert_array_equal(b["actions"][row, :n], ref["actions"][t0:t0 + n])
            np.testing.assert_array_equal(b["dones"][row, :n], ref["terminated"][t0:t0 + n])
    short = [i for i, T in enumerate(lengths) if T < L + 1]
    assert any(int(e) in short for b in batches for e in b["mu"][:, 0, 0])
    resumed = _take(iter(SequenceBatches(sfiles, 6, L, 5, start_step=5)), 3)
    for a, b in zip(resumed, batches[5:8], strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("policy", ["paper", "brownian", "follower", "mixed",
                                    "follower-throttle", "mixed-throttle", "follower-explore",
                                    "mixed-explore", "follower-blind", "mixed-blind"])
def test_collection_policies_are_slot_independent_and_bounded(policy):
    """An episode's actions depend only on (master seed, index, frames), not on its slot or on
    the slots beside it (so a resumed collection reproduces it)."""
    frames = np.random.default_rng(0).integers(0, 256, (12, 3, 64, 64, 3), dtype=np.uint8)
    one = POLICIES[policy](5, 1)
    three = POLICIES[policy](5, 3)
    one.reset(0, EpisodeSpec(seed=0, tag=4))
    for s, tag in enumerate((9, 4, 2)):
        three.reset(s, EpisodeSpec(seed=0, tag=tag))
    active = np.array([True, True, False])
    for t in range(12):
        a1 = one.act(frames[t, 1:2], np.array([True]))
        a3 = three.act(frames[t], active)
        np.testing.assert_array_equal(a1[0], a3[1])
        assert a3.shape == (3, 3) and a3.dtype == np.float32
        assert np.all(np.abs(a3) <= 1.0) and np.all(np.isfinite(a3))


def test_blind_follower_holds_its_whole_action_whatever_the_frames():
    """`BlindFollowerPolicy`'s lapses come from its own draws, never from the frames: on two
    different frame streams the same steps are held and hold the same steering; about a third
    of the steps are in a lapse of at least 10 steps."""
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        pol = BlindFollowerPolicy(7, 1)
        pol.reset(0, EpisodeSpec(seed=0, tag=3))
        frames = rng.integers(0, 256, (600, 1, 64, 64, 3), dtype=np.uint8)
        acts = np.stack([pol.act(f, np.array([True]))[0] for f in frames])
        lapse = np.zeros(len(acts), bool)
        t = 0
        while t < len(acts):  # a lapse: >= 10 steps of the same steering
            n = 1
            while t + n < len(acts) and acts[t + n, 0] == acts[t, 0]:
                n += 1
            lapse[t:t + n] = n >= 10
            t += n
        runs.append((acts, lapse))
    (a1, l1), (a2, l2) = runs
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(a1[l1, 0], a2[l2, 0])
    assert 0.2 < l1.mean() < 0.5
    assert not np.array_equal(a1[~l1, 0], a2[~l2, 0])  # elsewhere it follows the frames


def test_brownian_policy_is_a_clipped_random_walk():
    pol = BrownianPolicy(0, 1)
    pol.reset(0, EpisodeSpec(seed=0, tag=0))
    acts = np.stack([pol.act(np.zeros((1, 64, 64, 3), np.uint8), np.array([True]))[0]
                     for _ in range(500)])
    steps = np.abs(np.diff(acts, axis=0))
    assert steps.max() < 6 * BrownianPolicy.step_std
    assert np.all(np.abs(acts) <= 1.0) and (np.abs(acts) == 1.0).any()


def test_paper_policy_has_the_reference_mixture_of_saturated_and_small_actions():
    """With every parameter Cauchy x s (s ~ U(0, 0.01)), the random encoder's logvar explodes
    for most s, giving saturated, step-to-step random actions; small-s episodes act gently."""
    frames = np.random.default_rng(1).integers(0, 256, (10, 1, 64, 64, 3), dtype=np.uint8)
    pol = RandomModelPolicy(0, 1)
    saturated, gentle = 0, 0
    for tag in range(24):
        pol.reset(0, EpisodeSpec(seed=0, tag=tag))
        acts = np.stack([pol.act(frames[t], np.array([True]))[0] for t in range(10)])
        frac = (np.abs(acts) > 0.9).mean()
        saturated += frac > 0.8
        gentle += frac < 0.2
    assert saturated >= 12 and gentle >= 1


def _road_frame(left: int, right: int) -> np.ndarray:
    """A (64, 64, 3) frame of grass (102, 204, 102) with a grey (107) road in columns
    left..right-1."""
    frame = np.full((64, 64, 3), (102, 204, 102), np.uint8)
    frame[:, left:right] = 107
    return frame


def test_road_follower_steers_towards_the_road():
    """road_offset is the road's mean column minus the car's (32): analytic on a synthetic
    frame; with noise and lapses switched off the steer is gain x offset, gas constant, no
    brake."""
    assert road_offset(_road_frame(40, 50)) == pytest.approx(44.5 - 32.0)
    assert road_offset(_road_frame(10, 20)) == pytest.approx(14.5 - 32.0)
    assert road_offset(np.full((64, 64, 3), (102, 204, 102), np.uint8)) == 0.0
    pol = RoadFollowerPolicy(0, 1)
    pol.reset(0, EpisodeSpec(seed=0, tag=3))
    pol.noise_std[0], pol.lapse_prob = 0.0, 0.0
    a = pol.act(_road_frame(40, 50)[None], np.array([True]))[0]
    assert a[0] == pytest.approx(np.clip(pol.gain[0] * 12.5, -1, 1), abs=1e-6)
    assert a[1] == pytest.approx(2 * pol.gas[0] - 1, abs=1e-6) and a[2] == -1.0
    assert 0.05 <= pol.gas[0] <= 0.2


def test_throttle_follower_steers_like_the_follower_with_segmented_pedals():
    """Same steering as `RoadFollowerPolicy` on the same episode; pedals constant within
    segments of 20-80 steps, each gas ~ U(0.05, 0.4) with no brake, coasting, or braking
    ~ U(0.1, 0.6) with no gas, in about the 0.7 / 0.15 / 0.15 proportions."""
    frames = np.stack([_road_frame(20 + t % 20, 36 + t % 20) for t in range(3000)])[:, None]
    base, thr = RoadFollowerPolicy(4, 1), ThrottleFollowerPolicy(4, 1)
    base.reset(0, EpisodeSpec(seed=0, tag=5))
    thr.reset(0, EpisodeSpec(seed=0, tag=5))
    base.lapse_prob = thr.lapse_prob = 0.0
    acts = []
    for t in range(3000):
        b = base.act(frames[t], np.array([True]))[0]
        a = thr.act(frames[t], np.array([True]))[0]
        assert a[0] == b[0]
        acts.append(a)
    env = to_env_action(np.stack(acts))
    change = np.flatnonzero(np.any(np.diff(env[:, 1:], axis=0) != 0, axis=1)) + 1
    runs = np.diff(np.concatenate([[0], change, [3000]]))
    assert runs[:-1].min() >= 20 and runs.max() <= 80 * 2  # two equal draws may join
    gas, brake = env[:, 1], env[:, 2]
    assert np.all((gas == 0) | (brake == 0))
    assert np.all((gas == 0) | ((gas >= 0.05) & (gas <= 0.4)))
    assert np.all((brake == 0) | ((brake >= 0.1) & (brake <= 0.6)))
    for frac, want in (((gas > 0).mean(), 0.7), ((brake > 0).mean(), 0.15)):
        assert abs(frac - want) < 0.12


def test_explore_follower_adds_held_kicks_that_ignore_the_frame():
    """Pedals exactly the throttle follower's on the same episode; steering = the follower's
    steer + a kick, clipped, where the kick is held for 5-30 steps, zero about half the time and
    otherwise in [-1, 1], and is the same whatever the frames are."""
    T = 3000
    frames = np.stack([_road_frame(20 + t % 20, 36 + t % 20) for t in range(T)])[:, None]
    grass = np.full((T, 1, 64, 64, 3), (102, 204, 102), np.uint8)
    thr, exp, exp_grass = (cls(4, 1) for cls in (ThrottleFollowerPolicy, ExploreFollowerPolicy,
                                                 ExploreFollowerPolicy))
    for pol in (thr, exp, exp_grass):
        pol.reset(0, EpisodeSpec(seed=0, tag=5))
        pol.lapse_prob = 0.0
        pol.noise_std[0] = 0.0
    kicks, starts = [], []
    for t in range(T):
        if exp.kick_segments.left[0] == 0:
            starts.append(t)
        a_thr = thr.act(frames[t], np.array([True]))[0]
        a = exp.act(frames[t], np.array([True]))[0]
        g = exp_grass.act(grass[t], np.array([True]))[0]
        np.testing.assert_array_equal(a[1:], a_thr[1:])
        kick = float(exp.kick_value[0])
        assert g[0] == pytest.approx(np.clip(kick, -1, 1), abs=1e-6)  # no road: steer = kick
        steer = exp.gain[0] * road_offset(frames[t, 0])
        assert a_thr[0] == pytest.approx(np.clip(steer, -1, 1), abs=1e-6)
        assert a[0] == pytest.approx(np.clip(steer + kick, -1, 1), abs=1e-6)
        kicks.append(kick)
    kicks = np.array(kicks)
    runs = np.diff(starts)
    assert runs.min() >= 5 and runs.max() <= 30
    assert all(np.all(kicks[a:b] == kicks[a]) for a, b in zip(starts, starts[1:]))
    assert np.all(np.abs(kicks) <= 1.0)
    assert abs((kicks == 0).mean() - 0.5) < 0.12 and np.abs(kicks).max() > 0.8


def test_mixed_policy_is_paper_on_even_and_follower_on_odd_episodes():
    frames = np.random.default_rng(2).integers(0, 256, (8, 1, 64, 64, 3), dtype=np.uint8)
    for cls, follower in ((MixedPolicy, RoadFollowerPolicy),
                          (MixedThrottlePolicy, ThrottleFollowerPolicy),
                          (MixedExplorePolicy, ExploreFollowerPolicy)):
        _check_mixed(cls, follower, frames)


def _check_mixed(cls, follower, frames):
    for tag, ref_cls in ((6, RandomModelPolicy), (7, follower)):
        mixed, ref = cls(3, 1), ref_cls(3, 1)
        mixed.reset(0, EpisodeSpec(seed=0, tag=tag))
        ref.reset(0, EpisodeSpec(seed=0, tag=tag))
        for t in range(8):
            np.testing.assert_array_equal(mixed.act(frames[t], np.array([True])),
                                          ref.act(frames[t], np.array([True])))
