"""Shared test setup: full float32 matmuls, one JAX compilation cache per test session, and one
`smoke` pipeline run that several test files read."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import pytest

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
"""The environment variable naming JAX's persistent compilation cache folder."""
MIN_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"

_own_cache: list[str] = []


def pytest_configure(config):
    """A persistent JAX compilation cache in a fresh folder for this session (unless the caller
    set one): the many processes and tests that compile the same programs (the pipeline's CLI
    runs, and the library's functions that jit a fresh closure per call) compile each once.
    Compiled programs are keyed by their HLO, options and backend, so a cache hit runs the same
    executable a fresh compile would build; subprocesses inherit the folder (and the setting
    that caches every program, not only those that took over a second to compile) through the
    environment."""
    if os.environ.get(CACHE_ENV):
        return
    folder = tempfile.mkdtemp(prefix="dreamjax-test-jax-cache-")
    _own_cache.append(folder)
    os.environ[CACHE_ENV] = folder
    os.environ.setdefault(MIN_TIME_ENV, "0")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ[MIN_TIME_ENV]))


def pytest_unconfigure(config):
    for folder in _own_cache:
        shutil.rmtree(folder, ignore_errors=True)


SLOW_FILES = ("test_experiment", "test_doom_pipeline", "test_iterative", "test_ray",
              "test_sharding", "test_play", "test_sweep", "test_carracing", "test_agent")
"""Test files with the longest runs (end-to-end pipelines first), collected first."""


def pytest_collection_modifyitems(config, items):
    """The slowest files first: pytest-xdist's `--dist loadfile` (the README's test command)
    hands files to its workers in this order, so the long ones do not start last and leave one
    worker running alone at the end. The order within a file is kept."""
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2],
                                         len(SLOW_FILES)))


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls and convolutions in every test (GPUs default to TF32), so that the
    equivalences against NumPy, SciPy and XLA references hold to their tolerances on any
    backend; no effect on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


SMOKE_CLI = [sys.executable, "-m", "dreamjax.experiments.carracing", "--profile", "smoke"]


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Iterator[Path]:
    """One uninterrupted `smoke` run of the CarRacing CLI (every stage), shared by the session
    and, under pytest-xdist (the README's `-n 2`), by all its workers: the first to need it
    makes it under a file lock in their common temp folder, the others wait and read it.
    READ-ONLY (a test that changes it works on a `shutil.copytree` copy; the end of the session
    checks that no file in it changed). It compiles through the session's cache;
    test_experiment's killed-and-resumed run compiles through a cache of its own, so that the
    two runs its determinism test compares share no compiled program."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's basetemp is a folder of the session's
    run, done = root / "smoke-run" / "run", root / "smoke-run" / "DONE"
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(root / "smoke-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(run, ignore_errors=True)
            proc = subprocess.run([*SMOKE_CLI, "--run-dir", str(run)], capture_output=True,
                                  text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            done.touch()
    before = _listing(run)
    yield run
    after = _listing(run)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared smoke run (copy it first): {changed}"
