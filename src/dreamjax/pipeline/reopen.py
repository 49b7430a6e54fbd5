"""`--reopen OLD`: start a run folder from another iterative run's data, V, M and rounds.

A round of the iterative loop depends only on the rounds before it, never on how many rounds
the run has (`dreamjax.pipeline.iterate`), so a run made with other `--iterate.rounds` holds
the first rounds of this one. `reopen` copies OLD into `--run-dir` as hard links (no data
copied; every write of the pipeline replaces a file, so OLD never changes, and the files that
are appended to, `*.jsonl`, are copied), keeps collect, V, encode, M and the rounds below
`--iterate.rounds`, and leaves the controller stage unfinished under this config's fingerprint:
the pipeline then computes the later rounds, the pick, the evaluation and the report, exactly
what a fresh run with this config computes. OLD may have stopped inside a round (it resumes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

from dreamjax import io
from dreamjax.agent_io import run_config
from dreamjax.config import ExperimentConfig
from dreamjax.errors import ConfigError
from dreamjax.pipeline.iterate import iterative_dir
from dreamjax.pipeline.run import (
    HOLDER_FILE,
    LOCK_FILE,
    STAGES,
    RunFolder,
    fingerprints,
    holds_run,
)

KEPT = ("collect", "vae", "encode", "mdnrnn")
"""The stages a reopened run takes from OLD as they are."""
_DROPPED = ("evaluate", "report")


def _check(cfg: ExperimentConfig, old: RunFolder) -> None:
    """A one-line `ConfigError` unless OLD's kept stages are finished under `cfg`'s fingerprints
    and its controller stage (if begun) differs from `cfg`'s in `--iterate.rounds` at most."""
    old_cfg, _ = run_config(old.root)
    if old_cfg.train_in != "iterative":
        raise ConfigError(f"--reopen {old.root}: made with --train-in {old_cfg.train_in}; "
                          "only an iterative run has rounds to keep")
    fps, recorded = fingerprints(cfg), old.read_stages()
    for stage in KEPT:
        rec = recorded.get(stage, {})
        if not rec.get("done"):
            raise ConfigError(f"--reopen {old.root}: its stage '{stage}' is not finished")
        if rec.get("fingerprint") != fps[stage]:
            raise ConfigError(f"--reopen {old.root}: its stage '{stage}' was made with other "
                              "flags than these; give the flags it was made with")
    same_rounds = dataclasses.replace(
        cfg, iterate=dataclasses.replace(cfg.iterate, rounds=old_cfg.iterate.rounds))
    if "controller" in recorded and recorded["controller"].get("fingerprint") != fingerprints(
            same_rounds)["controller"]:
        raise ConfigError(f"--reopen {old.root}: its controller stage was made with other flags "
                          "than these (only --iterate.rounds may differ)")


def _trim(cfg: ExperimentConfig, run: RunFolder) -> None:
    """Unshare the appended files, drop the bookkeeping, the pick, the rounds from
    `cfg.iterate.rounds` on and the stages after the controller; mark the controller not done."""
    for f in (LOCK_FILE, HOLDER_FILE):
        (run.root / f).unlink(missing_ok=True)
    for path in run.root.rglob("*.jsonl"):
        io.write_bytes(path, path.read_bytes())
    for stage in _DROPPED:
        shutil.rmtree(run.path(stage), ignore_errors=True)
    for f in ("report.md", "results.json"):
        (run.root / f).unlink(missing_ok=True)
    it = iterative_dir(run)
    for f in ("DONE.json", "best.npz"):
        (it / f).unlink(missing_ok=True)
    for d in it.glob("round_*"):
        if int(d.name.removeprefix("round_")) >= cfg.iterate.rounds:
            shutil.rmtree(d)
    stages = {s: v for s, v in run.read_stages().items() if s in STAGES and s not in _DROPPED}
    stages["controller"] = {"fingerprint": fingerprints(cfg)["controller"], "done": False}
    io.write_json(run.stages_path, stages, sort_keys=True)
    run.write_meta(cfg)


def reopen(cfg: ExperimentConfig) -> RunFolder:
    """Make `cfg.run_dir` (absent or empty) a copy of the run `cfg.reopen` (module docstring),
    holding OLD's lock while copying; the copy appears whole under its name or not at all."""
    new = RunFolder(cfg.run_dir)
    old = RunFolder(cfg.reopen)
    old.check_compatible()
    if holds_run(new.root):
        raise ConfigError(f"--reopen: --run-dir {new.root} is not empty")
    _check(cfg, old)
    tmp = new.root.with_name(f".{new.root.name}.reopen")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with old.lock():
        subprocess.run(["cp", "-al", str(old.root), str(tmp)], check=True)
    _trim(cfg, RunFolder(tmp))
    shutil.rmtree(new.root, ignore_errors=True)
    os.replace(tmp, new.root)
    return new
