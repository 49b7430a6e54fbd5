"""The run folder and the stage runner: collect -> vae -> encode -> mdnrnn -> controller ->
evaluate -> report.

Each stage reads the previous stages' artifacts from the run folder and writes its own folder.
`stages.json` records, per stage, a fingerprint of the config it ran with (chained through the
stages before it), whether it finished, and its wall time. On rerun a finished stage with the same
fingerprint is skipped, an unfinished one resumes (each stage resumes itself), and a stage whose
fingerprint changed is deleted together with every stage after it.

Before any work (`validate`, then `plan`): the config is checked field by field, and the stages
that will run must find what they read from earlier stages (`STAGE_READS`), either because those
stages run too or because they finished and left their files (`stage_products`, plus an optional
verifier per stage, e.g. collect's check of every episode file); nothing is deleted or started
otherwise. One process at a time works in a run folder:
`RunFolder.lock` holds an `fcntl.flock` on `<run>/.lock` for the whole run (released by the OS
when the process dies, so a killed run never blocks the next) and names its holder in
`<run>/lock.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from dreamjax import io
from dreamjax.config import STAGES, ExperimentConfig, to_dict
from dreamjax.errors import ArtifactError, ConfigError, DreamjaxError
from dreamjax.es.strategies import check_strategy

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

STAGE_READS: dict[str, tuple[str, ...]] = {
    "collect": (),
    "vae": ("collect",),
    "encode": ("collect", "vae"),
    "mdnrnn": ("encode",),
    "controller": ("vae", "encode", "mdnrnn"),
    "evaluate": ("vae", "mdnrnn", "controller"),
    "report": ("vae", "encode", "mdnrnn", "controller", "evaluate"),
}
"""The earlier stages whose files each stage opens (episodes are read by V's training and the
encoding only, so only those two make a rerun verify them)."""

LOCK_FILE = ".lock"
"""The file `RunFolder.lock` flocks (empty). Replaced only when it is shared with another folder
(a hard-linked copy); a locker checks that the path still names the file it locked."""
HOLDER_FILE = "lock.json"
"""Who holds the lock: pid, host, start time (written after locking, removed on release)."""
_BOOKKEEPING = {LOCK_FILE, HOLDER_FILE}

Runner = Callable[[ExperimentConfig, "RunFolder"], "dict | None"]
Verifier = Callable[[ExperimentConfig, "RunFolder"], "list[str]"]
"""verify(cfg, run) -> one line per damaged file of a finished stage, each starting with the
file's path (empty: intact)."""


_ADDED_FIELDS = {"mdnrnn": {"ensemble": 1, "overshoot": 0, "overshoot_held": False},
                 "dream": {"ensemble_fitness": "mean", "reward_mode": "head",
                           "done": "threshold", "start": "first"},
                 "iterate": {"start": "previous", "temperatures": (), "calibrate_probes": False,
                             "action_offset": (), "select_episodes": 0, "retries": 0,
                             "retry_below": None},
                 "es": {"compact_every": 0}}
"""Fields added after run folders existed, with their defaults: at the default they stay out of
the fingerprint, so an older run folder keeps its fingerprints."""


def _section(cfg: ExperimentConfig, name: str) -> dict:
    """`to_dict` of one config section without the `_ADDED_FIELDS` left at their defaults."""
    d = to_dict(getattr(cfg, name))
    for k, default in _ADDED_FIELDS.get(name, {}).items():
        if d.get(k) == default:
            d.pop(k)
    return d


def stage_config(cfg: ExperimentConfig, stage: str) -> dict:
    """The part of the config a stage's output depends on."""
    repeat = {"action_repeat": cfg.action_repeat} if cfg.action_repeat != 1 else {}
    if stage == "collect":
        return {"seed": cfg.seed, "collect": to_dict(cfg.collect), "fast_env": cfg.fast_env,
                **repeat}
    if stage == "vae":
        return {"seed": cfg.seed, "vae": to_dict(cfg.vae)}
    if stage == "encode":
        return {"encode": to_dict(cfg.encode)}
    if stage == "mdnrnn":
        return {"seed": cfg.seed, "mdnrnn": _section(cfg, "mdnrnn")}
    if stage == "controller":
        out = {
            "seed": cfg.seed,
            "controller": to_dict(cfg.controller),
            "dream": _section(cfg, "dream"),
            "train_in": cfg.train_in,
            "es": _section(cfg, "es"),
            "fast_env": cfg.fast_env,  # real-env CMA-ES runs in it
            **repeat,
        }
        if cfg.train_in == "iterative":
            out["iterate"] = _section(cfg, "iterate")
        return out
    if stage == "evaluate":
        return {"eval": to_dict(cfg.eval), "fast_env": cfg.fast_env, **repeat}
    if stage == "report":
        return {}
    raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")


def stage_products(cfg: ExperimentConfig, stage: str) -> tuple[str, ...]:
    """The files (relative to the run folder) a finished stage leaves for the stages after it;
    a finished stage missing one of them counts as unfinished."""
    return {
        "collect": ("episodes",),
        "vae": ("vae/DONE.json", "vae/params"),
        "encode": ("series/initial_latents.npz",),
        "mdnrnn": ("mdnrnn/DONE.json", "mdnrnn/params"),
        "controller": (f"controller/{cfg.controller_phases[-1]}/best.npz",),
        "evaluate": ("evaluate/results.json",),
        "report": ("report.md", "results.json"),
    }[stage]


def fingerprints(cfg: ExperimentConfig) -> dict[str, str]:
    """Per-stage fingerprints, each chained through every stage before it."""
    out, prev = {}, ""
    for stage in STAGES:
        blob = json.dumps([prev, stage, stage_config(cfg, stage)], sort_keys=True)
        prev = hashlib.sha256(blob.encode()).hexdigest()[:16]
        out[stage] = prev
    return out


def _walk_fields(obj: object, prefix: str = ""):
    """(flag, field name, value, type) of every leaf field of a nested config dataclass."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _walk_fields(v, f"{prefix}{f.name}.")
        else:
            yield f"--{prefix}{f.name.replace('_', '-')}", f.name, v, hints[f.name]


def _literal_choices(tp: object) -> tuple | None:
    """The allowed values of a Literal type (or of the items of tuple[Literal, ...])."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        tp = args[0] if len(args) == 2 and args[1] is Ellipsis else None
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


_MAY_BE_ZERO = {"workers", "devices", "generations", "dream_generations", "seed", "seed_start",
                "epochs", "action_noise", "dropout", "overshoot", "compact_every",
                "select_episodes", "retries"}
_ANY_SIGN = {"retry_below"}
"""Numeric fields that may be negative (a return threshold)."""


def _check_field(flag: str, name: str, value: object, tp: object) -> None:
    """A Literal field holds one of its choices; a number is finite and > 0 (>= 0 where 0 has a
    meaning)."""
    choices = _literal_choices(tp)
    if choices is not None:
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise ConfigError(f"{flag}: unknown value {item!r}; choose from "
                                  f"{', '.join(map(str, choices))}")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if name in _ANY_SIGN:
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be finite, got {value}")
        return
    zero_ok = name in _MAY_BE_ZERO
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{flag} must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def validate(cfg: ExperimentConfig) -> None:
    """One-line `ConfigError` for a config that cannot run; cheap (nothing is built or read), so
    the CLI calls it before any work."""
    for flag, name, value, tp in _walk_fields(cfg):
        _check_field(flag, name, value, tp)
    if cfg.vae.epochs <= 0:
        raise ConfigError(f"--vae.epochs must be > 0, got {cfg.vae.epochs}")
    if cfg.dream.dropout >= 1.0:
        raise ConfigError(f"--dream.dropout must be < 1, got {cfg.dream.dropout}")
    if cfg.es.popsize % 2:
        raise ConfigError(
            f"--es.popsize must be even (candidate pairs share seeds), got {cfg.es.popsize}"
        )
    check_strategy(cfg.es.strategy, cfg.es.sigma_init)
    if cfg.train_in != "real":
        if cfg.dream.reward_mode == "survival" and not cfg.mdnrnn.done_head:
            raise ConfigError(
                f"--train-in {cfg.train_in} with --dream.reward-mode survival needs M's done "
                "head: add --mdnrnn.done-head"
            )
        if cfg.dream.reward_mode == "head" and not (cfg.mdnrnn.reward_head
                                                    and cfg.mdnrnn.done_head):
            raise ConfigError(
                f"--train-in {cfg.train_in} needs M's reward and done heads: "
                "add --mdnrnn.reward-head --mdnrnn.done-head"
            )
        if cfg.es.dream_generations == 0:
            raise ConfigError(f"--train-in {cfg.train_in} needs --es.dream-generations > 0")
    if "real" in cfg.controller_phases and cfg.es.generations == 0:
        raise ConfigError(f"--train-in {cfg.train_in} needs --es.generations > 0")
    if cfg.train_in == "iterative":
        it = cfg.iterate
        if it.rounds < 1:
            raise ConfigError(f"--iterate.rounds must be >= 1, got {it.rounds}")
        if it.rounds > 1 and not 1 <= it.check_episodes <= it.episodes:
            raise ConfigError(f"--iterate.check-episodes must be in [1, --iterate.episodes = "
                              f"{it.episodes}], got {it.check_episodes}")
        if any(not x >= 0 for x in it.action_offset):
            raise ConfigError(f"--iterate.action-offset must all be >= 0, got {it.action_offset}")
        if any(not t > 0 for t in it.temperatures):
            raise ConfigError(f"--iterate.temperatures must all be > 0, got {it.temperatures}")
    if cfg.es.rollouts % cfg.mdnrnn.ensemble:
        raise ConfigError(f"--es.rollouts ({cfg.es.rollouts}) must be a multiple of "
                          f"--mdnrnn.ensemble ({cfg.mdnrnn.ensemble}): each member dreams "
                          "the same number of a candidate's episodes")
    if not cfg.stages:
        raise ConfigError(f"--stages: name at least one of {', '.join(STAGES)}")
    if cfg.reopen is not None:
        if cfg.train_in != "iterative":
            raise ConfigError(f"--reopen needs --train-in iterative, got {cfg.train_in}")
        if not RunFolder(cfg.run_dir).meta_path.is_file() and not RunFolder(
                cfg.reopen).meta_path.is_file():
            raise ConfigError(f"--reopen {cfg.reopen}: not a dreamjax run folder (no run.json)")
        if Path(cfg.reopen).resolve() == Path(cfg.run_dir).resolve():
            raise ConfigError(f"--reopen {cfg.reopen} is --run-dir itself; give a new --run-dir")


def holds_run(root: Path) -> bool:
    """Whether the folder holds anything but the lock's bookkeeping."""
    return root.is_dir() and any(p.name not in _BOOKKEEPING for p in root.iterdir())


class RunFolder:
    """The run folder's bookkeeping: `run.json` (format, config), `stages.json`, the lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stages_path = self.root / "stages.json"
        self.meta_path = self.root / "run.json"

    def path(self, stage: str) -> Path:
        return self.root / STAGE_DIRS[stage]

    def check_compatible(self) -> None:
        """Refuse a folder written by another layout version (one-line error, nothing touched)."""
        meta = self.meta_path
        if not meta.exists():
            if holds_run(self.root):
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process; a `ConfigError` naming the holder if another
        process has it. The flock dies with its process, so a killed run never blocks."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._locked_fd()
        try:
            holder = self.root / HOLDER_FILE
            io.write_json(holder, {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    holder.unlink()
        finally:
            os.close(fd)

    def _locked_fd(self) -> int:
        """An fd of `<run>/.lock` flocked by this process. A lock file shared with another
        folder (a hard-linked copy, `cp -al`) is first replaced by this folder's own; a lock
        taken on a file the path no longer names (replaced meanwhile) is dropped and retaken."""
        path = self.root / LOCK_FILE
        while True:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_nlink > 1:
                    tmp = path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
                    tmp.touch()
                    os.replace(tmp, path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"--run-dir {self.root} is in use by {self._holder()}; wait for that run to "
                    "end or choose another --run-dir"
                ) from None
            st = os.fstat(fd)
            try:
                now = path.stat()
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) \
                    and st.st_nlink == 1:
                return fd
            os.close(fd)

    def _holder(self) -> str:
        try:
            h = io.read_json(self.root / HOLDER_FILE)
            return f"pid {h['pid']} on {h['host']} (since {h['started']})"
        except (DreamjaxError, KeyError, TypeError):
            return "another process"

    def read_stages(self) -> dict:
        if not self.stages_path.exists():
            return {}
        return io.read_json(self.stages_path)

    def _write_json(self, path: Path, obj: dict) -> None:
        io.write_json(path, obj, sort_keys=True)

    def write_meta(self, cfg: ExperimentConfig) -> None:
        self._write_json(
            self.meta_path,
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


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `run_stages` will do, decided before any work."""

    invalidate: str | None
    """First stage whose fingerprint changed (it and every later stage are deleted), or None."""
    run: tuple[str, ...]
    """Requested stages that will run (or resume), in order."""
    redo: dict[str, list[str]]
    """Finished requested stages that will run again, each with one line per file found missing
    or damaged."""


def _damage(cfg: ExperimentConfig, run: RunFolder, stage: str,
            verifiers: Mapping[str, Verifier]) -> list[str]:
    """One line per missing product or damaged file of a finished stage."""
    missing = [f"{run.root / p}: missing" for p in stage_products(cfg, stage)
               if not (run.root / p).exists()]
    if missing or stage not in verifiers:
        return missing
    return list(verifiers[stage](cfg, run))


def plan(cfg: ExperimentConfig, run: RunFolder,
         verifiers: Mapping[str, Verifier] | None = None) -> Plan:
    """Decide which stages run; a one-line error, before anything is deleted or started, when
    a stage that will run reads from a stage (`STAGE_READS`) that neither runs nor left its
    files.

    A finished stage counts as done when its fingerprint still matches; one that a running stage
    reads from must also have its files (`stage_products`, and `verifiers[stage](cfg, run)` finds
    nothing damaged): if not, it is redone when requested, else refused.
    """
    verifiers = verifiers or {}
    fps, recorded = fingerprints(cfg), run.read_stages()
    changed = next(
        (s for s in STAGES if s in recorded and recorded[s].get("fingerprint") != fps[s]), None
    )
    kept = STAGES if changed is None else STAGES[: STAGES.index(changed)]
    done = {s for s in kept if recorded.get(s, {}).get("done")}
    to_run = [s for s in STAGES if s in cfg.stages and s not in done]
    redo: dict[str, list[str]] = {}
    checked: set[str] = set()
    pending = list(to_run)
    while pending:
        reader = pending.pop(0)
        for before in STAGE_READS[reader]:
            if before in to_run or before in checked:
                continue
            checked.add(before)
            if before not in done:
                raise ConfigError(
                    f"stage '{reader}' needs stage '{before}' first: add it to --stages"
                )
            damaged = _damage(cfg, run, before, verifiers)
            if not damaged:
                continue
            if before not in cfg.stages:
                raise ArtifactError(
                    f"{damaged[0]} ({len(damaged)} file(s) of stage '{before}', which stage "
                    f"'{reader}' reads): add '{before}' to --stages to redo that stage"
                )
            redo[before] = damaged
            to_run.append(before)
            pending.append(before)
    to_run.sort(key=STAGES.index)
    return Plan(invalidate=changed, run=tuple(to_run), redo=redo)


def preflight(cfg: ExperimentConfig) -> Plan:
    """`validate`, the run folder's format and `plan` (without verifiers), reading only: what a
    CLI checks before it imports the stage runners. `run_stages` checks it all again under the
    lock. A run folder that `--reopen` will fill plans without the stages it takes from OLD."""
    validate(cfg)
    run = RunFolder(cfg.run_dir)
    run.check_compatible()
    todo = plan(cfg, run)
    if cfg.reopen is not None and not run.meta_path.exists():
        from dreamjax.pipeline.reopen import KEPT

        todo = dataclasses.replace(todo, run=tuple(s for s in todo.run if s not in KEPT))
    return todo


def run_stages(
    cfg: ExperimentConfig,
    runners: Mapping[str, Runner],
    log: Callable[[str], None] = print,
    verifiers: Mapping[str, Verifier] | None = None,
) -> RunFolder:
    """Run the requested stages in order with skip / resume / invalidation bookkeeping.

    Everything that can fail without doing work fails first: `validate`, the run folder's
    format, the lock, and `plan`.
    """
    validate(cfg)
    run = RunFolder(cfg.run_dir)
    if cfg.reopen is not None and not run.meta_path.exists():
        from dreamjax.pipeline.reopen import reopen

        reopen(cfg)
        log(f"[dreamjax] reopened {cfg.reopen} as {run.root}")
    run.check_compatible()
    with run.lock():
        todo = plan(cfg, run, verifiers)
        run.write_meta(cfg)
        if todo.invalidate is not None:
            removed = run.invalidate_from(todo.invalidate)
            log(f"[dreamjax] config of stage '{todo.invalidate}' changed: removed "
                f"{', '.join(removed)}")
        for stage, damaged in todo.redo.items():
            run.record(stage, done=False)
            log(f"[dreamjax] {stage}: redoing, {len(damaged)} file(s) missing or damaged, "
                f"first {damaged[0]}")
        fps = fingerprints(cfg)
        for stage in STAGES:
            if stage not in cfg.stages:
                continue
            rec = run.read_stages().get(stage, {})
            if stage not in todo.run:
                log(f"[dreamjax] {stage}: done already, skipped")
                continue
            log(f"[dreamjax] {stage}: {'resuming' if rec else 'starting'}")
            run.record(stage, fingerprint=fps[stage], done=False)
            t0 = time.time()
            summary = runners[stage](cfg, run) or {}
            wall = rec.get("wall_s", 0.0) + time.time() - t0
            run.record(stage, done=True, wall_s=round(wall, 1), summary=summary)
            log(f"[dreamjax] {stage}: finished in {wall:.0f} s")
    return run
