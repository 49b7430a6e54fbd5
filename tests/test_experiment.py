"""The CarRacing experiment end to end through its CLI on the `smoke` profile.

One run is killed (SIGKILL) in the middle of V's training and rerun: it must resume and finish
with a complete report. The same folder then checks skip-on-rerun and stage invalidation.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "dreamjax.experiments.carracing", "--profile", "smoke"]


def _run(run_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, "--run-dir", str(run_dir), *extra],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _stages(run_dir: Path) -> dict:
    path = run_dir / "stages.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke run that was killed during V's training, then resumed to the end."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    proc = subprocess.Popen(
        [*CLI, "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    ckpt = run_dir / "vae" / "ckpt"
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stages = _stages(run_dir)
    assert stages["collect"]["done"] and not stages["vae"]["done"], stages
    _run(run_dir)
    return run_dir


def test_report_complete_and_sane(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["profile"] == "smoke"
    assert results["episodes"] == 2
    score = results["score"]
    assert math.isfinite(score["mean"]) and score["std"] >= 0
    ev = json.loads((run_dir / "evaluate" / "results.json").read_text())
    assert len(ev["returns"]) == 2 and ev["seeds"] == [1_000_000, 1_000_001]
    assert all(-200 <= r <= 1000 for r in ev["returns"])
    assert ev["versions"]["jax"] and ev["machine"]["cpu_count"]
    report = (run_dir / "report.md").read_text()
    assert f"{score['mean']:.1f} ± {score['std']:.1f}" in report
    for pic in (
        "recon.png",
        "vae_loss.png",
        "mdnrnn_loss.png",
        "fitness_dream.png",
        "returns_hist.png",
        "dream_vs_real.mp4",
    ):
        f = run_dir / "report" / pic
        assert f.exists() and f.stat().st_size > 1000, pic
        assert f"report/{pic}" in report
    assert all(_stages(run_dir)[s]["done"] for s in ("collect", "vae", "controller", "report"))


def test_resumed_stage_has_no_duplicate_steps(run_dir):
    steps = [json.loads(line)["step"] for line in (run_dir / "vae" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)), steps
    done = json.loads((run_dir / "vae" / "DONE.json").read_text())
    assert steps[-1] == done["steps"]


def test_rerun_skips_finished_stages(run_dir):
    before = (run_dir / "results.json").stat().st_mtime_ns
    proc = _run(run_dir)
    assert proc.stdout.count("done already, skipped") == 7
    assert (run_dir / "results.json").stat().st_mtime_ns == before


def test_config_change_invalidates_later_stages(run_dir):
    vae_done = (run_dir / "vae" / "DONE.json").stat().st_mtime_ns
    proc = _run(
        run_dir,
        "--es.dream-generations",
        "2",
        "--stages",
        "collect",
        "vae",
        "encode",
        "mdnrnn",
        "controller",
    )
    assert "config of stage 'controller' changed" in proc.stdout
    assert (run_dir / "vae" / "DONE.json").stat().st_mtime_ns == vae_done
    stages = _stages(run_dir)
    assert stages["controller"]["done"]
    assert "evaluate" not in stages and not (run_dir / "evaluate").exists()
    log = (run_dir / "controller" / "dream" / "log.jsonl").read_text().splitlines()
    assert len(log) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--profile", "nope"], "--profile: unknown profile 'nope'"),
        (["--vae.batch-size", "-3"], "--vae.batch-size must be > 0"),
        (["--train-in", "dream", "--mdnrnn.no-reward-head"], "needs M's reward and done heads"),
    ],
)
def test_bad_flags_fail_before_work(tmp_path, flags, message):
    cmd = [
        sys.executable,
        "-m",
        "dreamjax.experiments.carracing",
        "--run-dir",
        str(tmp_path / "r"),
        *flags,
    ]
    if "--profile" not in flags:
        cmd += ["--profile", "smoke"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r" / "episodes").exists()


def test_dream_then_real_runs_real_env_cma_es(run_dir):
    """The paper's real-env CMA-ES through the real EnvPool, started from the dream's mean."""
    stages = ["--stages", "collect", "vae", "encode", "mdnrnn", "controller"]
    _run(run_dir, "--train-in", "dream-then-real", "--es.generations", "1", *stages)
    real = run_dir / "controller" / "real"
    assert (run_dir / "controller" / "dream" / "DONE.json").exists()
    assert json.loads((real / "DONE.json").read_text())["generations"] == 1
    gen = [json.loads(line) for line in (real / "log.jsonl").open()]
    assert len(gen) == 1 and math.isfinite(gen[0]["mean_return"])
