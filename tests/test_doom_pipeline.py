"""The Doom TakeCover experiment (PAPER.md §2) end to end through its CLI on the `smoke`
profile, the τ table on the same V and M, and the paper's model sizes in the Doom profiles.

The smoke run must write `DIR/results.json` and a report with its pictures and the decoded-dream
video; its data must keep only episodes of more than 100 frames, its M must have the restart
input and done head (no reward head), its C must be the bias-free `zch` controller trained only
in the dream with +1 per step, and its real episodes must score +1 per step.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax.config import DOOM_PROFILES, ExperimentConfig
from dreamjax.data.episodes import list_episodes, load_episode
from dreamjax.models.controller import controller_spec
from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn, mdnrnn_carry_loss_fn
from dreamjax.models.vae import init_vae
from dreamjax.pipeline.doom import (
    DOOM,
    PAPER_TAU_TABLE,
    TAU_TABLE,
    TauRun,
    doom_runners,
    render_tau_table,
    table_taus,
    tau_config,
    tau_table,
)
from dreamjax.pipeline.run import RunFolder, fingerprints, run_stages

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "dreamjax.experiments.doom", "--profile", "smoke"]


def _n(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("profile", ["paper", "laptop"])
def test_doom_profiles_build_the_papers_models(profile):
    """V 4,446,915 (§2.3), M 1,678,785 (§2.4), C 1,088 (§2.6): built from the profile and the
    game spec the way the stages build them."""
    cfg = DOOM_PROFILES[profile]()
    v = jax.eval_shape(lambda: init_vae(jax.random.key(0), cfg.vae.z_dim))
    m_model = MDNRNN(z_dim=cfg.vae.z_dim, action_dim=DOOM.action_dim, hidden=cfg.mdnrnn.hidden,
                     n_mix=cfg.mdnrnn.n_mix, restart_input=DOOM.restart_input,
                     reward_head=cfg.mdnrnn.reward_head, done_head=cfg.mdnrnn.done_head)
    m = jax.eval_shape(lambda: init_mdnrnn(jax.random.key(0), m_model))
    c = controller_spec(cfg.controller.kind, cfg.vae.z_dim, cfg.mdnrnn.hidden,
                        action_dim=DOOM.action_dim)
    assert (_n(v), _n(m), c.num_params) == (4_446_915, 1_678_785, 1_088)
    assert not c.controller.use_bias and c.obs_dim == 64 + 2 * 512
    # the paper's τ (§2.7); laptop's M, from 50x less data, is calibrated at a hotter dream,
    # each round at the τ of a grid that keeps its probes alive as long as the game did
    assert cfg.dream.temperature == {"paper": 1.15, "laptop": 2.0}[profile]
    assert cfg.iterate.temperatures == {"paper": (), "laptop": (1.0, 1.15, 1.5, 2.0, 2.5,
                                                                3.0)}[profile]
    assert cfg.vae.epochs == {"paper": 10.0, "laptop": 4.0}[profile]
    # laptop's M 2400 steps: its round-0 dream keeps the data policy's parts alive about as
    # long as the game did (calibration error 0.06-0.19 against 0.25-0.42 after 800 steps), and
    # the checks then pick round 0 or 1 on every seed measured, so the loop has 2 rounds
    assert cfg.mdnrnn.steps == {"paper": 24_400, "laptop": 2400}[profile]
    assert cfg.train_in != "iterative" or cfg.iterate.rounds == 2  # paper has no loop
    # laptop: a round whose C checks below the data policy's return (a held button) trains C
    # again once (seed 0 on an AVX2 CPU: 182.6 without, 831.1 with; doom-retries/)
    assert cfg.iterate.retries == {"paper": 0, "laptop": 1}[profile]
    # paper: C only in the dream of §2.2's data; laptop: patrols in the data and the loop (§1.8)
    assert (cfg.train_in, cfg.collect.policy) == {
        "paper": ("dream", "doom_random"), "laptop": ("iterative", "doom_patrol_mixed")}[profile]
    assert tau_config(cfg, 0.5).train_in == "dream"  # the τ table is the paper's, dream-only
    assert cfg.dream.reward_mode == "survival" and cfg.mdnrnn.tbptt
    assert cfg.es.max_steps == cfg.eval.max_steps == cfg.collect.max_steps == 2100
    assert DOOM.min_frames == 100


def test_m_learns_deaths_from_truncated_bptt_chunks():
    """M's done loss on a chunk in which an episode ends (PAPER.md §2.4): the death is a label
    of weight 10 even though its z target (the next episode's first frame) is masked, and the
    loss is the mean of w·BCE over every input step."""
    model = MDNRNN(z_dim=2, action_dim=1, hidden=4, n_mix=2, restart_input=True,
                   done_head=True)
    params = init_mdnrnn(jax.random.key(0), model)
    T = 5
    restarts = np.array([[1, 0, 0, 1, 0, 0]], np.float32)  # an episode ends at step 2
    batch = {"mu": np.zeros((1, T + 1, 2), np.float32),
             "logvar": np.full((1, T + 1, 2), -20.0, np.float32),
             "actions": np.zeros((1, T + 1, 1), np.float32),
             "dones": np.array([[0, 0, 1, 0, 0, 0]], bool), "restarts": restarts,
             "mask": 1.0 - restarts[:, 1:], "step_mask": np.ones((1, T), np.float32),
             "reset": np.array([True])}

    def done_loss(b):
        _, (metrics, _) = mdnrnn_carry_loss_fn(params, None, b, jax.random.key(1), model=model,
                                               done_weight=10.0)
        return float(metrics["done_loss"])

    _, out = model.apply(params, model.initial_state((1,)), jnp.zeros((1, T, 2)),
                         jnp.zeros((1, T, 1)), jnp.asarray(restarts[:, :T]))
    logit = np.asarray(out.done_logit[0], np.float64)
    label = batch["dones"][0, :T].astype(np.float64)
    bce = np.maximum(logit, 0) - logit * label + np.log1p(np.exp(-np.abs(logit)))
    assert done_loss(batch) == pytest.approx(np.mean((1 + 9 * label) * bce), rel=1e-5)
    assert done_loss(batch) != pytest.approx(done_loss({**batch, "dones": batch["dones"] * 0}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("doom") / "run"
    t0 = time.monotonic()
    proc = subprocess.run([*CLI, "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    print(f"doom smoke run: {time.monotonic() - t0:.0f} s")
    return run_dir


def test_smoke_writes_results_and_report(run_dir):
    r = json.loads((run_dir / "results.json").read_text())
    assert r["game"] == "DoomTakeCover" and r["profile"] == "smoke"
    assert r["paper_score"] == "1092 ± 556" and r["controller"] == "zch"
    ev = r["evaluation"]
    assert r["episodes"] == ev["episodes"] == 2
    assert ev["returns"] == [float(n) for n in ev["lengths"]]  # +1 per tic
    assert all(1 <= n <= 100 for n in ev["lengths"])
    assert r["score"]["mean"] == pytest.approx(np.mean(ev["lengths"]))
    cal = r["calibration"]  # the data policy in the dream against the collected episodes
    assert cal["tau"] == 1.15 and cal["min_frames"] == 100 and cal["real_episodes"] == 3
    assert 100 < cal["real_mean"] <= 120 and cal["dream_episodes"] == 256
    assert 0 <= cal["dream_kept"] <= 256 and cal["dream_mean"] <= 50  # es.max_steps = 50
    (part,) = cal["parts"]  # one data policy: §2.2's, the top-level row
    assert part["policy"] == "doom_random" and part["summary"] == "actions held 1-10 steps"
    assert all(part[k] == cal[k] for k in ("dream_mean", "dream_kept", "real_mean"))
    held = cal["held"]  # each button held for a whole episode, in the dream and in the game
    assert [(h["button"], h["action"]) for h in held] == [("LEFT", -1.0), ("nothing", 0.0),
                                                          ("RIGHT", 1.0)]
    assert all(h["dream_episodes"] == 256 and h["real_episodes"] == 8 for h in held)
    assert all(1 <= h[k] <= 50 for h in held for k in ("dream_mean", "real_mean"))
    patrol = cal["patrol"]  # open-loop sweeps of the room, in the dream and in the game
    assert [p["period"] for p in patrol] == [64, 128]
    assert all(p["dream_episodes"] == 256 and p["real_episodes"] == 8 for p in patrol)
    assert all(1 <= p[k] <= 50 for p in patrol for k in ("dream_mean", "real_mean"))
    ant = cal["anticipation"]  # M's done head read on 16 whole real episodes that end in death
    assert 1 <= ant["episodes"] <= 16 and ant["within"] == 10 and ant["steps"] > 100
    assert all(0.0 <= ant[k] <= 1.0 for k in ("auc_last", "auc_within", "auc_last_clock",
                                               "auc_within_clock"))
    report = (run_dir / "report.md").read_text()
    assert f"scores an AUC of {ant['auc_last']:.2f} for" in report
    assert "| probe | life in the dream | life in the game | dream / game |" in report
    assert all(f"| {h['button']} | {h['dream_mean']:.0f} ± " in report for h in held)
    assert all(f"| patrol {p['period']} | {p['dream_mean']:.0f} ± " in report for p in patrol)
    assert report.startswith("# dreamjax DoomTakeCover report (smoke profile)")
    for pic in r["pictures"].values():
        assert (run_dir / pic).is_file() and (run_dir / pic).stat().st_size > 0, pic
    assert "report/dream_vs_real.mp4" in r["pictures"].values()


def test_calibration_has_a_row_per_policy_of_a_mixed_collection(run_dir, tmp_path):
    """Read as a `doom_mixed` collection (episode i is `doom_constant`'s when i % 4 == 3; in a
    copy of the smoke run, its episode 2 renamed 3), the calibration has one row per policy:
    each row's real lengths are its own episodes', the first row is the top level, and the
    second dreams a held action."""
    from dreamjax.data.episodes import episode_path
    from dreamjax.pipeline import artifacts
    from dreamjax.pipeline.doom import survival_calibration

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = RunFolder(copy)
    folder = run.path("collect")
    episode_path(folder, 2).rename(episode_path(folder, 3))
    cfg = DOOM_PROFILES["smoke"]()
    cfg = dataclasses.replace(cfg, run_dir=str(copy),
                              collect=dataclasses.replace(cfg.collect, policy="doom_mixed"))
    wm = artifacts.load_world_model(run, cfg.controller)
    cal = survival_calibration(cfg, run, artifacts.config_dream_params(cfg, run, wm))
    lengths = [len(load_episode(episode_path(folder, i))["rewards"]) for i in (0, 1, 3)]
    rnd, const = cal["parts"]
    assert (rnd["policy"], const["policy"]) == ("doom_random", "doom_constant")
    assert const["summary"] == "one action held for the whole episode"
    assert rnd["real_episodes"] == 2 and const["real_episodes"] == 1
    assert rnd["real_mean"] == pytest.approx(np.mean(lengths[:2]))
    assert const["real_mean"] == lengths[2]
    assert cal["real_mean"] == rnd["real_mean"] and cal["dream_mean"] == rnd["dream_mean"]
    assert const["dream_episodes"] == 256 and 0 <= const["dream_kept"] <= 256


def test_smoke_follows_the_papers_doom_setup(run_dir):
    """Episodes of more than 100 frames (§2.2), M with restart input and done head (§2.4), C
    on [z, c, h] without bias trained only in the dream, +1 per step (§2.5, §2.6)."""
    files = list_episodes(run_dir / "episodes")
    assert len(files) == 3
    for f in files:
        ep = load_episode(f)
        assert 100 < len(ep["actions"]) <= 120 and ep["actions"].shape[1] == 1
    m = json.loads((run_dir / "mdnrnn" / "DONE.json").read_text())["model"]
    assert (m["z_dim"], m["action_dim"], m["restart_input"]) == (64, 1, True)
    assert m["done_head"] and not m["reward_head"]
    stages = json.loads((run_dir / "stages.json").read_text())
    assert set(stages["controller"]["summary"]) == {"dream"}
    done = json.loads((run_dir / "controller" / "dream" / "DONE.json").read_text())
    assert done["kind"] == "zch" and done["num_params"] == 64 + 2 * 32
    assert done["dream"]["reward_mode"] == "survival" and done["dream"]["obs_mode"] == "zch"
    assert done["dream"]["temperature"] == pytest.approx(1.15)
    assert done["dream"]["max_steps"] == 50


def test_rerun_skips_every_stage(run_dir):
    proc = subprocess.run([*CLI, "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done already, skipped") == 7


def test_tau_table_on_the_same_v_and_m(run_dir):
    """Two τ of the table: the run's own (its controller and evaluation reused) and another
    (trained and evaluated in `tau/0.50/` on the same V and M); the random policy on the same
    evaluation seeds; a second call recomputes nothing."""
    cfg = dataclasses.replace(DOOM_PROFILES["smoke"](), run_dir=str(run_dir))
    lines: list[str] = []
    table = tau_table(cfg, log=lines.append, taus=(1.15, 0.50))
    rows = {r["tau"]: r for r in table["rows"]}
    assert set(rows) == {1.15, 0.50}
    for r in rows.values():
        assert {"tau", "dream_mean", "dream_std", "real_mean", "real_std", "episodes"} <= set(r)
        assert r["episodes"] == 2 and r["dream_episodes"] == 2
        assert 1 <= r["dream_mean"] <= cfg.es.max_steps
        assert r["data_policy_real_mean"] > 100 and r["data_policy_dream_mean"] <= 50
    main = json.loads((run_dir / "evaluate" / "results.json").read_text())
    assert rows[1.15]["folder"] == "." and rows[1.15]["real_mean"] == main["mean"]
    assert rows[0.50]["folder"] == "tau/0.50"
    half = TauRun(RunFolder(run_dir), 0.50)
    assert (half.path("controller") / "dream" / "best.npz").is_file()
    assert half.path("mdnrnn") == run_dir / "mdnrnn"
    assert half.read_stages()["evaluate"]["fingerprint"] == fingerprints(
        tau_config(cfg, 0.50))["evaluate"]
    rnd = table["random_policy"]
    assert rnd["episodes"] == 2 and rnd["seeds"] == main["seeds"]
    on_disk = json.loads((run_dir / TAU_TABLE).read_text())
    assert on_disk["rows"] == table["rows"]
    md = (run_dir / "tau_table.md").read_text()
    assert PAPER_TAU_TABLE[1.15][1] in md and "random policy" in md
    again: list[str] = []
    assert tau_table(cfg, log=again.append, taus=(1.15, 0.50))["rows"] == table["rows"]
    assert not any(": controller" in line or ": evaluate" in line for line in again)


def test_render_tau_table_puts_ours_beside_the_papers():
    row = {"tau": 1.0, "dream_mean": 1200.4, "dream_std": 600.0, "real_mean": 800.0,
           "real_std": 500.2, "episodes": 100}
    md = render_tau_table({"profile": "laptop", "rows": [row], "dream_episodes": 100,
                           "max_steps": 2100,
                           "random_policy": {"real_mean": 200.0, "real_std": 100.0,
                                             "episodes": 100}})
    assert ("| 1.00 | 1200 ± 600 | **800 ± 500** (100 episodes) | 1145 ± 690 | 868 ± 511 |  |"
            in md)
    assert "| random policy | N/A | 200 ± 100 (100 episodes) | N/A | 210 ± 108 | |" in md
    row.update(data_policy_dream_mean=512.3, data_policy_real_mean=297.0)
    md = render_tau_table({"profile": "laptop", "rows": [row], "dream_episodes": 100,
                           "max_steps": 2100,
                           "random_policy": {"real_mean": 200.0, "real_std": 100.0,
                                             "episodes": 100}})
    assert "| 868 ± 511 | 512 / 297 |" in md


def test_table_taus_are_the_papers_and_the_runs_own():
    cfg = DOOM_PROFILES["smoke"]()  # τ = 1.15, one of the paper's
    assert table_taus(cfg) == (0.10, 0.50, 1.00, 1.15, 1.30)
    hot = dataclasses.replace(cfg, dream=dataclasses.replace(cfg.dream, temperature=2.0))
    assert table_taus(hot) == (0.10, 0.50, 1.00, 1.15, 1.30, 2.0)


def _run_two_rounds(run_dir: Path, tmp_path: Path, **iterate) -> tuple[Path, ExperimentConfig]:
    """The controller stage as 2 toy iterative rounds (`iterate` overrides) in a copy of the
    smoke run: (the copy, its config)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    base = DOOM_PROFILES["smoke"]()
    cfg = dataclasses.replace(
        base, run_dir=str(copy), train_in="iterative", stages=("controller",),
        iterate=dataclasses.replace(base.iterate, rounds=2, episodes=2, check_episodes=1,
                                    mdnrnn_steps=2, dream_generations=2, **iterate))
    run_stages(cfg, doom_runners(), log=lambda _: None)
    return copy, cfg


def test_iterative_rounds_keep_the_restart_input(run_dir, tmp_path):
    """`--train-in iterative` on Doom: round 1 fine-tunes round 0's M, which has the restart
    input, on the random data and round 0's controller episodes (kept only if longer than 100
    frames), and C is still trained only in the dream."""
    copy, cfg = _run_two_rounds(run_dir, tmp_path)
    r1 = copy / "controller" / "iterative" / "round_01"
    done = json.loads((r1 / "mdnrnn" / "DONE.json").read_text())
    assert done["model"]["restart_input"] and done["model"]["done_head"]
    assert done["episodes"] == 3 + 2  # the random data, round 0's check and noisy episodes
    for f in list_episodes(r1 / "episodes"):
        assert load_episode(f)["rewards"].size > 100
    summary = json.loads((copy / "controller" / "iterative" / "DONE.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


def test_iterative_rounds_calibrate_on_the_open_loop_probes(run_dir, tmp_path):
    """`--iterate.calibrate-probes`: every τ of every round's grid also scores each held button
    and patrol, its dream life that τ's dream's (the same key scheme as the other probes), its
    real life the mean of its real probe episodes; the chosen τ minimises the error of all."""
    from dreamjax.config import with_temperature
    from dreamjax.dream.calibration import schedule_lengths_jit
    from dreamjax.dream.ensemble import member
    from dreamjax.pipeline import artifacts, iterate
    from dreamjax.pipeline.carracing import stage_key
    from dreamjax.pipeline.doom import probe_runs

    copy, cfg = _run_two_rounds(run_dir, tmp_path, temperatures=(0.5, 2.0),
                                calibrate_probes=True)
    run = RunFolder(copy)
    opened = ["LEFT held", "nothing held", "RIGHT held", "patrol 64", "patrol 128"]
    runs = probe_runs(cfg)
    schedules = [a for _, a, _ in runs]
    reals = [float(real.mean()) for *_, real in runs]
    for r in (0, 1):
        chosen = json.loads((iterate.round_dir(run, r) / "temperature.json").read_text())
        for g in chosen["grid"]:
            names = [p["probe"] for p in g["probes"]]
            assert names == ["doom_random"] + ["previous C"] * r + opened
            assert [p["real_mean"] for p in g["probes"][1 + r:]] == reals
            assert g["error"] == pytest.approx(iterate.calibration_error(g["probes"]))
        assert chosen["tau"] == min(chosen["grid"], key=lambda g: g["error"])["tau"]
    rows = json.loads((iterate.iterative_dir(run) / "DONE.json").read_text())["rounds"]
    wm1 = artifacts.load_world_model(run, cfg.controller, copy / rows[1]["mdnrnn"])
    key = jax.random.fold_in(jax.random.fold_in(stage_key(cfg, "controller"), 1), 3)
    g = json.loads((iterate.round_dir(run, 1) / "temperature.json").read_text())["grid"][1]
    dream = artifacts.config_dream_params(with_temperature(cfg, g["tau"]), run, wm1,
                                          iterate._series_dirs(run, 1))
    for j, actions in enumerate(schedules):
        tiled = np.broadcast_to(actions, (iterate.TEMPERATURE_DREAMS, *actions.shape))
        lengths = schedule_lengths_jit(jax.random.fold_in(key, 2 + j), member(dream, 0), tiled)
        assert g["probes"][2 + j]["dream_mean"] == pytest.approx(float(np.mean(lengths)))


def test_iterative_rounds_calibrate_their_temperature(run_dir, tmp_path):
    """`--iterate.temperatures`: each round dreams at the τ of the grid whose dream keeps the
    data policy (round 0) and also the previous round's C (later rounds) alive as long as the
    game did; each probe's dream life is that τ's dream's, the previous C's real life its check
    episodes', the selected round's τ is the report's, and a rerun reads the cached choice."""
    from dreamjax.config import with_temperature
    from dreamjax.dream.env import DreamEnv
    from dreamjax.es.dream import make_mean_eval_fn
    from dreamjax.pipeline import artifacts, iterate
    from dreamjax.pipeline.carracing import stage_key
    from dreamjax.pipeline.doom import part_lives

    copy, cfg = _run_two_rounds(run_dir, tmp_path, temperatures=(0.5, 2.0))
    run = RunFolder(copy)
    rows = json.loads((iterate.iterative_dir(run) / "DONE.json").read_text())["rounds"]
    for r, row in enumerate(rows):
        rd = iterate.round_dir(run, r)
        chosen = json.loads((rd / "temperature.json").read_text())
        assert [g["tau"] for g in chosen["grid"]] == [0.5, 2.0]
        names = [[p["probe"] for p in g["probes"]] for g in chosen["grid"]]
        assert names == [["doom_random"] + ["previous C"] * r] * 2
        for g in chosen["grid"]:
            assert g["error"] == pytest.approx(iterate.calibration_error(g["probes"]))
        assert chosen["tau"] == min(chosen["grid"], key=lambda g: g["error"])["tau"]
        assert row["tau"] == chosen["tau"]
    wm0 = artifacts.load_world_model(run, cfg.controller)
    wm1 = artifacts.load_world_model(run, cfg.controller, copy / rows[1]["mdnrnn"])
    key = jax.random.fold_in(jax.random.fold_in(stage_key(cfg, "controller"), 1), 3)
    series = iterate._series_dirs(run, 1)
    c0, _ = artifacts.load_controller_params(
        iterate.round_dir(run, 0) / "dream" / "best.npz", wm0.spec)
    for g in json.loads((iterate.round_dir(run, 1) / "temperature.json").read_text())["grid"]:
        tcfg = with_temperature(cfg, g["tau"])
        dream = artifacts.config_dream_params(tcfg, run, wm1, series)
        (part,) = part_lives(tcfg, run, dream, key, iterate.TEMPERATURE_DREAMS)
        assert g["probes"][0]["dream_mean"] == part["dream_mean"]
        assert g["probes"][0]["real_mean"] == part["real_mean"]
        _, lengths = make_mean_eval_fn(DreamEnv(), wm1.spec.controller.apply,
                                       iterate.TEMPERATURE_DREAMS, cfg.es.max_steps)(
            jax.random.fold_in(key, 1), c0, dream)
        prev = g["probes"][1]
        assert prev["dream_mean"] == pytest.approx(float(np.mean(lengths)))
        checks = list_episodes(iterate.round_dir(run, 0) / "check")
        assert prev["real_mean"] == np.mean([load_episode(f)["rewards"].size for f in checks])
    best = json.loads((iterate.iterative_dir(run) / "DONE.json").read_text())
    assert best["tau"] == rows[best["selected_round"]]["tau"]
    assert artifacts.final_dream_config(cfg, run).dream.temperature == best["tau"]
    cached = iterate.round_dir(run, 1) / "temperature.json"
    stamp = cached.stat().st_mtime_ns
    (iterate.round_dir(run, 1) / "round.json").unlink()
    again = iterate.run_iterative(cfg, run, DOOM, stage_key(cfg, "controller"))
    assert cached.stat().st_mtime_ns == stamp
    assert again["iterative"]["rounds"] == [
        {k: row[k] for k in ("round", "tau", "dream_return", "real_return", "gap")}
        for row in rows]
