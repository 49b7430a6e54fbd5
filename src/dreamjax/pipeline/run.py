"""The run folder and the stage runner: collect -> vae -> encode -> mdnrnn -> controller ->
evaluate -> report.

Each stage reads the previous stages' artifacts from the run folder and writes its own folder.
`stages.json` records, per stage, a fingerprint of the config it ran with (chained through the
stages before it), whether it finished, and its wall time. On rerun a finished stage with the same
fingerprint is skipped, an unfinished one resumes (each stage resumes itself), and a stage whose
fingerprint changed is deleted together with every stage after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from dreamjax import io
from dreamjax.config import STAGES, ExperimentConfig, to_dict
from dreamjax.errors import ConfigError

FORMAT_VERSION = 1
"""Run-folder layout version; a run folder of another version is refused."""

STAGE_DIRS = {
    "collect": "episodes",
    "vae": "vae",
    "encode": "series",
    "mdnrnn": "mdnrnn",
    "controller": "controller",
    "evaluate": "evaluate",
    "report": "report",
}


def stage_config(cfg: ExperimentConfig, stage: str) -> dict:
    """The part of the config a stage's output depends on."""
    if stage == "collect":
        return {"seed": cfg.seed, "collect": to_dict(cfg.collect), "fast_env": cfg.fast_env}
    if stage == "vae":
        return {"seed": cfg.seed, "vae": to_dict(cfg.vae)}
    if stage == "encode":
        return {"encode": to_dict(cfg.encode)}
    if stage == "mdnrnn":
        return {"seed": cfg.seed, "mdnrnn": to_dict(cfg.mdnrnn)}
    if stage == "controller":
        return {
            "seed": cfg.seed,
            "controller": to_dict(cfg.controller),
            "dream": to_dict(cfg.dream),
            "train_in": cfg.train_in,
            "es": to_dict(cfg.es),
        }
    if stage == "evaluate":
        return {"eval": to_dict(cfg.eval), "fast_env": cfg.fast_env}
    if stage == "report":
        return {}
    raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")


def fingerprints(cfg: ExperimentConfig) -> dict[str, str]:
    """Per-stage fingerprints, each chained through every stage before it."""
    out, prev = {}, ""
    for stage in STAGES:
        blob = json.dumps([prev, stage, stage_config(cfg, stage)], sort_keys=True)
        prev = hashlib.sha256(blob.encode()).hexdigest()[:16]
        out[stage] = prev
    return out


def _walk_numbers(obj: object, prefix: str = ""):
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        flag = f"--{prefix}{f.name.replace('_', '-')}"
        if dataclasses.is_dataclass(v):
            yield from _walk_numbers(v, f"{prefix}{f.name}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            yield flag, f.name, v


_MAY_BE_ZERO = {"workers", "generations", "dream_generations", "seed", "seed_start", "epochs"}


def validate(cfg: ExperimentConfig) -> None:
    """One-line `ConfigError` for a config that cannot run; called before any work."""
    for flag, name, v in _walk_numbers(cfg):
        if v != v or v < 0 or (v == 0 and name not in _MAY_BE_ZERO):
            bound = ">= 0" if name in _MAY_BE_ZERO else "> 0"
            raise ConfigError(f"{flag} must be {bound}, got {v}")
    if cfg.vae.epochs <= 0:
        raise ConfigError(f"--vae.epochs must be > 0, got {cfg.vae.epochs}")
    if cfg.es.popsize % 2:
        raise ConfigError(
            f"--es.popsize must be even (candidate pairs share seeds), got {cfg.es.popsize}"
        )
    if cfg.train_in in ("dream", "dream-then-real"):
        if not (cfg.mdnrnn.reward_head and cfg.mdnrnn.done_head):
            raise ConfigError(
                f"--train-in {cfg.train_in} needs M's reward and done heads: "
                "add --mdnrnn.reward-head --mdnrnn.done-head"
            )
        if cfg.es.dream_generations == 0:
            raise ConfigError(f"--train-in {cfg.train_in} needs --es.dream-generations > 0")
    if cfg.train_in in ("real", "dream-then-real") and cfg.es.generations == 0:
        raise ConfigError(f"--train-in {cfg.train_in} needs --es.generations > 0")
    for s in cfg.stages:
        if s not in STAGES:
            raise ConfigError(f"--stages: unknown stage {s!r}; choose from {', '.join(STAGES)}")


class RunFolder:
    """The run folder's bookkeeping: `run.json` (format, config) and `stages.json`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stages_path = self.root / "stages.json"

    def path(self, stage: str) -> Path:
        return self.root / STAGE_DIRS[stage]

    def check_compatible(self) -> None:
        """Refuse a folder written by another layout version (one-line error, nothing touched)."""
        meta = self.root / "run.json"
        if not meta.exists():
            if self.root.exists() and any(self.root.iterdir()):
                raise ConfigError(
                    f"--run-dir {self.root} is not empty and has no run.json: not a dreamjax "
                    "run folder (choose another --run-dir)"
                )
            return
        try:
            version = json.loads(meta.read_text()).get("format_version")
        except (json.JSONDecodeError, OSError) as e:
            raise ConfigError(f"{meta}: unreadable ({e}); choose another --run-dir") from e
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{meta}: run folder format {version}, this dreamjax writes {FORMAT_VERSION}; "
                "choose another --run-dir"
            )

    def read_stages(self) -> dict:
        if not self.stages_path.exists():
            return {}
        return json.loads(self.stages_path.read_text())

    def _write_json(self, path: Path, obj: dict) -> None:
        io.write_json(path, obj, sort_keys=True)

    def write_meta(self, cfg: ExperimentConfig) -> None:
        self._write_json(
            self.root / "run.json",
            {"format_version": FORMAT_VERSION, "config": to_dict(cfg)},
        )

    def record(self, stage: str, **fields) -> None:
        stages = self.read_stages()
        stages.setdefault(stage, {}).update(fields)
        self._write_json(self.stages_path, stages)

    def invalidate_from(self, stage: str) -> list[str]:
        """Delete `stage` and every stage after it; returns the stages removed."""
        stages = self.read_stages()
        removed = []
        for s in STAGES[STAGES.index(stage) :]:
            if s in stages or self.path(s).exists():
                shutil.rmtree(self.path(s), ignore_errors=True)
                stages.pop(s, None)
                removed.append(s)
        self._write_json(self.stages_path, stages)
        return removed


def run_stages(
    cfg: ExperimentConfig,
    runners: dict[str, Callable[[ExperimentConfig, RunFolder], dict | None]],
    log: Callable[[str], None] = print,
) -> RunFolder:
    """Run the requested stages in order with skip / resume / invalidation bookkeeping."""
    validate(cfg)
    run = RunFolder(cfg.run_dir)
    run.check_compatible()
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_meta(cfg)
    fps = fingerprints(cfg)
    recorded = run.read_stages()
    for stage in STAGES:
        rec = recorded.get(stage)
        if rec is not None and rec.get("fingerprint") != fps[stage]:
            removed = run.invalidate_from(stage)
            log(f"[dreamjax] config of stage '{stage}' changed: removed {', '.join(removed)}")
            break
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        rec = run.read_stages().get(stage, {})
        if rec.get("done"):
            log(f"[dreamjax] {stage}: done already, skipped")
            continue
        for before in STAGES[: STAGES.index(stage)]:
            if before != "report" and not run.read_stages().get(before, {}).get("done"):
                raise ConfigError(
                    f"stage '{stage}' needs stage '{before}' first: add it to --stages"
                )
        log(f"[dreamjax] {stage}: {'resuming' if rec else 'starting'}")
        run.record(stage, fingerprint=fps[stage], done=False)
        t0 = time.time()
        summary = runners[stage](cfg, run) or {}
        wall = rec.get("wall_s", 0.0) + time.time() - t0
        run.record(stage, done=True, wall_s=round(wall, 1), summary=summary)
        log(f"[dreamjax] {stage}: finished in {wall:.0f} s")
    return run
