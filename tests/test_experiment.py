"""The CarRacing experiment end to end through its CLI on the `smoke` profile.

One run is killed (SIGKILL) in the middle of V's training and rerun: it must resume and finish
with a complete report, with the same numbers as an uninterrupted run with the same seed in
another folder (same-machine determinism; the uninterrupted run is the session's `smoke_run`,
and the killed one and its resumption compile through a compilation cache of their own, not the
session's, so that the two runs share no compiled program). The same folder then checks
skip-on-rerun, stage invalidation and the way out of a corrupt episode file; other tests check
that bad flags and a run folder in use fail at once with one line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CACHE_ENV
from conftest import SMOKE_CLI as CLI

from dreamjax.pipeline.run import RunFolder

pytestmark = pytest.mark.slow


def _run(run_dir: Path, *extra: str, check: bool = True,
         env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, "--run-dir", str(run_dir), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def _stages(run_dir: Path) -> dict:
    path = run_dir / "stages.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke run that was killed during V's training, then resumed to the end; its two
    processes share a compilation cache of their own (none of `smoke_run`'s programs)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    own_cache = {**os.environ, CACHE_ENV: str(tmp_path_factory.mktemp("jax-cache"))}
    proc = subprocess.Popen(
        [*CLI, "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=own_cache,
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
    _run(run_dir, env=own_cache)
    # the results as they came out, before the tests below change the folder
    shutil.copy(run_dir / "results.json", run_dir.parent / "results_after_resume.json")
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


_TIMING = {"wall_s", "seconds", "elapsed_s", "mean_wall_s_per_generation"}


def _numbers(obj):
    """`obj` without wall times and rates: what the same seed must reproduce exactly."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()
                if k not in _TIMING and not k.endswith("_per_s")}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


@pytest.mark.timeout(900)
def test_same_seed_same_numbers(run_dir, smoke_run):
    """Same machine, same seed: an uninterrupted run in another folder gives exactly the numbers
    of the killed-and-resumed run: evaluation returns, controller summaries, V's and M's final
    losses and parameter hashes."""
    first = json.loads((run_dir.parent / "results_after_resume.json").read_text())
    second = json.loads((smoke_run / "results.json").read_text())
    assert second["evaluation"]["returns"] == first["evaluation"]["returns"]
    summaries = _numbers(first["stage_summaries"])
    assert summaries["controller"] and summaries["mdnrnn"]["final"]["loss"] is not None
    assert summaries["vae"]["vae_id"] and summaries["mdnrnn"]["mdnrnn_id"]
    assert _numbers(second["stage_summaries"]) == summaries
    assert _numbers(second["evaluation"]) == _numbers(first["evaluation"])
    assert second["score"] == first["score"]


def test_resumed_stage_has_no_duplicate_steps(run_dir):
    steps = [json.loads(line)["step"] for line in (run_dir / "vae" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)), steps
    done = json.loads((run_dir / "vae" / "DONE.json").read_text())
    assert steps[-1] == done["steps"]


def test_rerun_skips_finished_stages(run_dir):
    before = (run_dir / "results.json").stat().st_mtime_ns
    proc = _run(run_dir)
    assert proc.stdout.count("done already, skipped") == 7
    assert "[dreamjax] nothing to run, done already: collect, vae, encode" in proc.stdout
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
        (["--es.strategy", "NoSuchES"], "--es.strategy: unknown strategy 'NoSuchES'"),
        (["--dream.temperature", "0"], "--dream.temperature must be > 0"),
        (["--stages", "collect", "encode"], "stage 'encode' needs stage 'vae' first"),
        (["--train-in", "iterative", "--iterate.action-offset", "0.1", "0.5"],
         "--iterate.action-offset: CarRacing-v3 has 3 action dimension(s), got 2"),
    ],
)
def test_bad_flags_fail_before_work(tmp_path, flags, message):
    """Exit code 2 and one line, before any stage starts, in under 5 s of CPU time (imports
    included; about 4 s of wall time on an idle 2-core AVX-512 EPYC; CPU time, unlike wall time,
    does not grow with the other processes of a busy test machine), or 3 times the CLI's bare
    import on a slower CPU (an AVX2-only 2.0 GHz EPYC: imports 3.3 s, this run up to 7 s): no
    stage's work (a smoke stage costs tens of seconds)."""
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
    def cpu_of(argv):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return out, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    proc, cpu = cpu_of(cmd)
    _, imports = cpu_of([sys.executable, "-c", "import dreamjax.experiments.carracing"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r" / "episodes").exists()
    bound = max(5.0, 3 * imports)  # a slower CPU imports slower too (session 28: 3.3 s)
    assert cpu < bound, f"took {cpu:.1f} s of CPU time (the CLI's imports alone: {imports:.1f})"


def test_run_folder_in_use_is_refused(tmp_path):
    """A second run on a folder that a running one holds fails with one line naming the
    holder; after the holder is killed, the folder is free again."""
    run_dir = tmp_path / "busy"
    first = subprocess.Popen(
        [*CLI, "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not (run_dir / "lock.json").exists() and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.1)
        second = _run(run_dir, check=False)
        assert second.returncode == 2, second.stderr
        assert f"in use by pid {first.pid} on " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    with RunFolder(run_dir).lock():
        assert json.loads((run_dir / "lock.json").read_text())["pid"] == os.getpid()


def test_dream_then_real_runs_real_env_cma_es(run_dir):
    """The paper's real-env CMA-ES through the real EnvPool, started from the dream's mean."""
    stages = ["--stages", "collect", "vae", "encode", "mdnrnn", "controller"]
    _run(run_dir, "--train-in", "dream-then-real", "--es.generations", "1", *stages)
    real = run_dir / "controller" / "real"
    assert (run_dir / "controller" / "dream" / "DONE.json").exists()
    assert json.loads((real / "DONE.json").read_text())["generations"] == 1
    gen = [json.loads(line) for line in (real / "log.jsonl").open()]
    assert len(gen) == 1 and math.isfinite(gen[0]["mean_return"])


def test_corrupt_episode_then_rerun(run_dir):
    """Random bytes in an episode file of a finished run, then a rerun that needs the episodes
    (encode with a new batch size): the damaged episode is re-collected with its own seed and
    the run finishes, without a traceback."""
    ep = run_dir / "episodes" / "ep_000000.npz"
    with np.load(ep, allow_pickle=False) as f:
        frames = f["frames"].copy()
    ep.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = _run(run_dir, "--encode.batch-size", "32", "--stages", "collect", "vae", "encode",
                check=False)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    with np.load(ep, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["frames"], frames)
    assert _stages(run_dir)["encode"]["done"]
