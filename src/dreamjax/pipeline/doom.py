"""Doom TakeCover (PAPER.md §2): the game's `GameSpec` for the shared stage runners, and the τ
table (PAPER.md §2.7).

The Doom pipeline is the CarRacing stage runners (`dreamjax.pipeline.carracing`) with `DOOM`:
ViZDoom's TakeCover (`dreamjax.envs.doom`: headless, one tic a step, C's scalar mapped to
left / nothing / right, 2100-step cap, +1 per tic), collection that keeps only episodes of more
than 100 frames (§2.2), and M with the restart input (§2.4). The config (`config.DOOM_PROFILES`)
supplies the rest: V with z = 64, M with 512 units, the done head and truncated BPTT, the `zch`
controller without bias, C trained only in the dream (τ = 1.15, +1 per step, the 2100-step cap).

The τ table (`tau_table`): on the run's V and M, C is trained in the dream and evaluated at each
τ of `TAUS` in `<run>/tau/<τ>/` (`TauRun`: its own `controller/` and `evaluate/` folders, the
base run's V, M and series), plus its dream score (`eval.episodes` dreams at that τ) and the
random data policy's score on the same evaluation seeds. A τ whose config equals the base run's
reuses the base run's finished controller and evaluation. `tau_table.json` and `tau_table.md`
land in the run folder, beside the paper's numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dreamjax import io
from dreamjax.agent import WorldModel, encode_frames
from dreamjax.config import ExperimentConfig, to_dict, with_temperature
from dreamjax.data.episodes import episode_index, episode_length, list_episodes
from dreamjax.data.policies import (
    POLICIES,
    DoomRandomPolicy,
    episode_part,
    open_loop_schedules,
    part_classes,
)
from dreamjax.data.series import encode_padded
from dreamjax.dream.calibration import schedule_lengths_jit
from dreamjax.dream.ensemble import member
from dreamjax.dream.env import DreamEnv, DreamParams
from dreamjax.dream.fidelity import death_anticipation
from dreamjax.envs import doom
from dreamjax.envs.protocol import EpisodeSpec
from dreamjax.es.dream import make_mean_eval_fn
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import (
    GameSpec,
    carracing_runners,
    carracing_verifiers,
    real_pool,
    run_controller,
    run_evaluate,
    stage_key,
)
from dreamjax.pipeline.evaluate import evaluate
from dreamjax.pipeline.run import RunFolder, fingerprints

TAUS: tuple[float, ...] = (0.10, 0.50, 1.00, 1.15, 1.30)
"""The temperatures of the paper's table (PAPER.md §2.7)."""
PAPER_TAU_TABLE: dict[float, tuple[str, str]] = {
    0.10: ("2086 ± 140", "193 ± 58"),
    0.50: ("2060 ± 277", "196 ± 50"),
    1.00: ("1145 ± 690", "868 ± 511"),
    1.15: ("918 ± 546", "1092 ± 556"),
    1.30: ("732 ± 269", "753 ± 139"),
}
"""τ -> (virtual score, actual score) over 100 trials each (PAPER.md §2.7)."""
PAPER_RANDOM = "210 ± 108"
"""The random policy's actual score (PAPER.md §2.7)."""
TAU_TABLE = "tau_table.json"
MIN_FRAMES = 100
"""Collection keeps an episode only if it lasts more than this many steps (PAPER.md §2.2)."""

# Throughputs on the 2-core CPU with nothing else running, for the printed estimate only: the
# fresh-clone laptop run of 2026-12-07 (`experiments/results/doom-m2400/`, seed 3: 200 patrol-mixed
# episodes of 425 steps at 475 frames/s, V 410 frames/s, encode 1100 frames/s, the report 150 s)
# and of 2026-12-05 (`experiments/results/doom-laptop-400eps`: M 11.5k sequence steps/s at batch
# 32, the H = 512 dream 42k capped steps/s at 16 x 16 rollouts, evaluation 469 steps/s).
_DOOM_RATE = {
    "collect_frames_s": 475.0,
    "collect_episode_steps": 425.0,
    "vae_frames_s": 410.0,
    "encode_frames_s": 1100.0,
    "mdn_seq_steps_s": 11_000.0,
    "dream_steps_s": 42_000.0,
    "real_steps_s": 450.0,
    "real_episode_frac": 0.5,
    "report_s": 150.0,
}


def _doom_env_fn(cfg: ExperimentConfig, max_steps: int) -> Callable[[], Any]:
    return functools.partial(doom.make_env, max_episode_steps=max_steps,
                             action_repeat=cfg.action_repeat)


CALIBRATION_DREAMS = 256
"""Dreams of the data policy (and of each probe) in the survival calibration."""
HELD_BUTTONS: dict[str, float] = {"LEFT": -1.0, "nothing": 0.0, "RIGHT": 1.0}
"""The held-button probes: C's raw output held for a whole episode (PAPER.md §2.1's mapping)."""
PROBE_EPISODES = 8
"""Real episodes per probe (held button or patrol)."""
PROBE_SEED_START = 2_000_000
"""Env seeds of the probes' real episodes (training side: never the evaluation seeds)."""
ANTICIPATION_EPISODES = 16
"""Real episodes of the §2.2 policy that M's done head is read on (`death_anticipation_check`)."""
ANTICIPATION_SEED_START = 2_100_000
"""Their env seeds (training side: never the evaluation seeds)."""
ANTICIPATION_WITHIN = 10
"""Steps ahead at which M's done head is asked to see death coming."""
CALIBRATION_POLICY_SEED = 2_200_000
"""Master seed of the data policies' action draws that the calibration plays in the dream."""


PATROL_PERIODS = (64, 128)
"""The patrol probes' periods: RIGHT for period // 2 steps, then LEFT and RIGHT for `period`
steps each in turn, sweeping the room. In the game (16 episodes each, seeds 3000-3015,
`experiments/results/doom-sweep/patrol_real.py`) these live 622 and 953 steps, standing still
158, and the best blind patrol is a strong policy: periods 32 / 100 / 160 / 200 live 208 / 812
/ 532 / 291."""


def patrol_schedule(period: int, steps: int) -> np.ndarray:
    """(steps, 1) float32 raw actions of the patrol of `period` (`PATROL_PERIODS`)."""
    t = np.arange(steps) - period // 2
    right = (t < 0) | ((t // period) % 2 == 1)
    return np.where(right, 1.0, -1.0).astype(np.float32)[:, None]


class OpenLoop:
    """A pool policy playing one action schedule (T, A) on every slot from its episode's first
    step (the last action after T steps), whatever the frames show: the probes."""

    def __init__(self, actions: np.ndarray, num_slots: int):
        self.actions = np.asarray(actions, np.float32)
        self.t = np.zeros(num_slots, np.int64)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.t[slot] = 0

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3), active (S,) bool -> (S, A) float32: each slot's next action."""
        out = self.actions[np.minimum(self.t, len(self.actions) - 1)]
        self.t += active
        return out


def probe_runs(cfg: ExperimentConfig) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """The open-loop probes, each (head, (es.max_steps, A) float32 actions, (PROBE_EPISODES,)
    float64 real lengths): each of `HELD_BUTTONS` held for a whole episode and each patrol of
    `PATROL_PERIODS`, played in the game on seeds `PROBE_SEED_START`.. (at most `es.max_steps`
    steps, every episode counted)."""
    steps = cfg.es.max_steps
    schedules = [({"button": name, "action": a},
                  np.full((steps, doom.ACTION_DIM), a, np.float32))
                 for name, a in HELD_BUTTONS.items()]
    schedules += [({"period": p}, patrol_schedule(p, steps)) for p in PATROL_PERIODS]
    specs = [EpisodeSpec(seed=PROBE_SEED_START + i, tag=0) for i in range(PROBE_EPISODES)]
    with real_pool(cfg, steps, DOOM) as pool:
        return [(head, a, np.array([r.length for r in pool.run(specs, OpenLoop(a, pool.num_slots))],
                                   np.float64)) for head, a in schedules]


def open_loop_probes(cfg: ExperimentConfig, dream_params: DreamParams, key: jax.Array
                     ) -> tuple[list[dict], list[dict]]:
    """(held, patrol) rows of `probe_runs`: each probe's life in `CALIBRATION_DREAMS` dreams and
    in its `PROBE_EPISODES` real episodes. In the game a held button reaches a wall and is hit
    there, and a patrol lives 3-6 times as long; §2.2's data show neither, and a dream that lets
    a held button outlive a patrol pays a controller that holds it."""
    rows = []
    for head, actions, real in probe_runs(cfg):
        tiled = np.broadcast_to(actions, (CALIBRATION_DREAMS, *actions.shape))
        dream = np.asarray(schedule_lengths_jit(key, dream_params, tiled), np.float64)
        rows.append({**head, "dream_episodes": int(dream.size),
                     "dream_mean": float(dream.mean()), "dream_std": float(dream.std()),
                     "real_episodes": int(real.size), "real_mean": float(real.mean()),
                     "real_std": float(real.std())})
    n = len(HELD_BUTTONS)
    return rows[:n], rows[n:]


def calibration_probes(cfg: ExperimentConfig) -> list[dict]:
    """`GameSpec.probes`: each of `probe_runs` as {"probe": its name, "actions": (T, A),
    "real_mean": its mean real life}, its real episodes played here."""
    return [{"probe": f"{head['button']} held" if "button" in head else
             f"patrol {head['period']}", "actions": actions, "real_mean": float(real.mean())}
            for head, actions, real in probe_runs(cfg)]


def death_anticipation_check(cfg: ExperimentConfig, world_model: WorldModel) -> dict:
    """Does M see death coming? `ANTICIPATION_EPISODES` real episodes of §2.2's policy (seeds
    `ANTICIPATION_SEED_START`..), encoded by V and read teacher-forced by the agent's M:
    `dreamjax.dream.fidelity.death_anticipation` over those that end in death. A dream whose M
    only sees the killing hit kills at a rate dodging cannot lower."""
    specs = [EpisodeSpec(seed=ANTICIPATION_SEED_START + i, tag=i)
             for i in range(ANTICIPATION_EPISODES)]
    with real_pool(cfg, doom.MAX_EPISODE_STEPS, DOOM) as pool:  # whole episodes, any profile
        res = pool.run(specs, DoomRandomPolicy(ANTICIPATION_SEED_START, pool.num_slots),
                       steps=True)
    died = [r for r in res if r.terminated is not None and r.terminated[-1]]
    if not died:
        return {"episodes": 0, "within": ANTICIPATION_WITHIN}
    mu, _ = encode_padded(functools.partial(encode_frames, world_model.vae,
                                            world_model.vae_params),
                          np.concatenate([r.obs for r in died]), cfg.encode.batch_size)
    cuts = np.cumsum([r.length for r in died])[:-1]
    return death_anticipation(world_model.mdn, world_model.mdn_params,
                              [(m, r.actions) for m, r in zip(np.split(mu, cuts), died,
                                                               strict=True)],
                              ANTICIPATION_WITHIN)


def part_lives(cfg: ExperimentConfig, run: RunFolder, dream_params: DreamParams,
               key: jax.Array, dreams: int) -> list[dict]:
    """One row per policy of the open-loop data policy (`part_classes`): its life in `dreams`
    dreams of `dream_params` (one member; episodes of at most `es.max_steps` steps, each
    playing the policy's own actions, `open_loop_schedules`) against its real life (the
    collected episodes), both counting only episodes of more than `min_frames` steps, as
    collection does (PAPER.md §2.2)."""
    policy = POLICIES[cfg.collect.policy]
    classes = part_classes(policy)
    paths = list_episodes(run.path("collect"))
    parts = []
    for j, part in enumerate(dict.fromkeys(classes)):
        real = np.array([episode_length(p) for p in paths
                         if classes[episode_part(policy, episode_index(p))] is part],
                        np.float64)
        actions = open_loop_schedules(part, CALIBRATION_POLICY_SEED, dreams, cfg.es.max_steps)
        lengths = np.asarray(schedule_lengths_jit(key if j == 0 else jax.random.fold_in(key, j),
                                               dream_params, actions))
        kept = lengths[lengths > MIN_FRAMES]
        parts.append({"policy": part.name, "summary": part.summary,
                      "dream_episodes": int(lengths.size), "dream_kept": int(kept.size),
                      "dream_mean": float(kept.mean()) if kept.size else 0.0,
                      "dream_std": float(kept.std()) if kept.size else 0.0,
                      "real_episodes": int(real.size),
                      "real_mean": float(real.mean()) if real.size else 0.0,
                      "real_std": float(real.std()) if real.size else 0.0})
    return parts


def survival_calibration(cfg: ExperimentConfig, run: RunFolder, dream_params: DreamParams,
                         world_model: WorldModel | None = None) -> dict:
    """The data policy's episode lengths in `dream_params` (the run's dream; an ensemble's
    first world) against its real ones: `parts`, one row per policy of a mixed collection
    (`part_lives` with `CALIBRATION_DREAMS` dreams; e.g. how long a held button lives in the
    dream and in the game), the first part's (§2.2's policy) also at the top level; `held` and
    `patrol`: the held-button and patrol probes (`open_loop_probes`), which need a few real
    episodes of their own; with `world_model` (the report's), `anticipation`: whether its M
    sees death coming (`death_anticipation_check`, which does not depend on τ)."""
    dream_params = member(dream_params, 0)
    key = stage_key(cfg, "calibration")
    parts = part_lives(cfg, run, dream_params, key, CALIBRATION_DREAMS)
    first = {k: v for k, v in parts[0].items() if k not in ("policy", "summary")}
    held, patrol = open_loop_probes(cfg, dream_params, jax.random.fold_in(key, len(parts)))
    out = {"tau": cfg.dream.temperature, "done": cfg.dream.done, "min_frames": MIN_FRAMES,
           **first, "parts": parts, "held": held, "patrol": patrol}
    if world_model is not None:
        out["anticipation"] = death_anticipation_check(cfg, world_model)
    return out


DOOM = GameSpec(
    "DoomTakeCover", doom.ACTION_DIM, _doom_env_fn, restart_input=True, min_frames=MIN_FRAMES,
    paper_score="1092 ± 556", paper_method="World Model trained in its dream, τ = 1.15 "
    "(PAPER.md §2.7)", video_fps=doom.TICRATE, rates=_DOOM_RATE, calibrate=survival_calibration,
    data_lives=part_lives, probes=calibration_probes, calibrate_on="life",
)


def doom_runners() -> dict[str, Callable]:
    """The stage name -> runner(cfg, run) mapping for `run_stages` (CarRacing's, with `DOOM`)."""
    return carracing_runners(DOOM)


def doom_verifiers() -> dict[str, Callable]:
    """The stage name -> verify(cfg, run) mapping for `run_stages(..., verifiers=)`."""
    return carracing_verifiers(DOOM)


class TauRun(RunFolder):
    """One τ of the table: `controller/` and `evaluate/` (and `stages.json`) in
    `<base>/tau/<τ>/`; every other stage's folder is the base run's."""

    OWN = ("controller", "evaluate")

    def __init__(self, base: RunFolder, tau: float):
        super().__init__(base.root / "tau" / f"{tau:.2f}")
        self.base = base

    def path(self, stage: str) -> Path:
        return super().path(stage) if stage in self.OWN else self.base.path(stage)


def tau_config(cfg: ExperimentConfig, tau: float) -> ExperimentConfig:
    """`cfg` with C trained only in the dream (the paper's table, PAPER.md §2.7, whatever the
    run's `--train-in`) at temperature `tau`."""
    return dataclasses.replace(with_temperature(cfg, tau), train_in="dream")


def _finished(run: RunFolder, cfg: ExperimentConfig, stage: str) -> bool:
    """Whether `stage` finished in `run` with `cfg`'s fingerprint."""
    rec = run.read_stages().get(stage, {})
    return bool(rec.get("done")) and rec.get("fingerprint") == fingerprints(cfg)[stage]


def _train_and_evaluate(cfg: ExperimentConfig, base: RunFolder, tau: float,
                        log: Callable[[str], None]) -> RunFolder:
    """The run folder holding τ's finished controller and evaluation (trained here if need be):
    the base run's when it finished them with this config, else `TauRun(base, tau)`."""
    if _finished(base, cfg, "evaluate") and _finished(base, cfg, "controller"):
        log(f"[dreamjax] tau {tau:.2f}: the run's own controller and evaluation")
        return base
    run = TauRun(base, tau)
    fps = fingerprints(cfg)
    for stage, runner in (("controller", run_controller), ("evaluate", run_evaluate)):
        if _finished(run, cfg, stage):
            continue
        if run.read_stages().get(stage, {}).get("fingerprint", fps[stage]) != fps[stage]:
            for later in run.OWN[run.OWN.index(stage):]:  # another config's: start over
                shutil.rmtree(run.path(later), ignore_errors=True)
        log(f"[dreamjax] tau {tau:.2f}: {stage}")
        run.record(stage, fingerprint=fps[stage], done=False)
        summary = runner(cfg, run, DOOM)
        run.record(stage, done=True, summary=summary)
    return run


def dream_score(cfg: ExperimentConfig, run: RunFolder, base: RunFolder) -> dict:
    """The final C of `run` in `cfg.eval.episodes` dreams at `cfg.dream.temperature` (the
    paper's "virtual score"), capped at `cfg.es.max_steps` steps, and the data policy's
    `survival_calibration` in the same dream; cached in `<base>/tau/<τ>/dream_score.json`."""
    tau = cfg.dream.temperature
    path = TauRun(base, tau).root / "dream_score.json"
    key = fingerprints(cfg)["controller"]
    cached = io.read_json(path) if path.is_file() else {}
    if cached.get("fingerprint") == key and "calibration" in cached:
        return cached
    wm = artifacts.load_world_model(run, cfg.controller)
    params, _ = artifacts.load_controller_params(artifacts.final_controller_path(cfg, run),
                                                 wm.spec)
    dream_params = artifacts.config_dream_params(cfg, run, wm)
    eval_fn = make_mean_eval_fn(DreamEnv(), wm.spec.controller.apply, cfg.eval.episodes,
                                cfg.es.max_steps, cfg.es.compact_every)
    returns, lengths = jax.device_get(eval_fn(stage_key(cfg, "tau-table"), params, dream_params))
    returns = np.asarray(returns, np.float64)
    out = {"fingerprint": key, "tau": tau, "episodes": int(returns.size),
           "mean": float(returns.mean()), "std": float(returns.std()),
           "returns": returns.round(3).tolist(), "lengths": np.asarray(lengths).tolist(),
           "calibration": survival_calibration(cfg, run, dream_params)}
    io.write_json(path, out)
    return out


class _SeedTagged:
    """A collection policy on the evaluation episodes (whose tags are all 0): each episode's
    random stream is keyed by its env seed instead, so the episodes act differently."""

    def __init__(self, policy: DoomRandomPolicy):
        self.policy = policy

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.policy.reset(slot, EpisodeSpec(seed=spec.seed, tag=spec.seed))

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        return self.policy.act(frames, active)


def random_score(cfg: ExperimentConfig, base: RunFolder) -> dict:
    """The random data policy (PAPER.md §2.2) on the evaluation seeds, `<run>/tau/random/`."""
    out_dir = base.root / "tau" / "random"
    path = out_dir / "results.json"
    key = {"eval": to_dict(cfg.eval), "seed": cfg.seed}
    if path.is_file() and io.read_json(path).get("config") == key:
        return io.read_json(path)
    with real_pool(cfg, cfg.eval.max_steps, DOOM) as pool:
        policy = _SeedTagged(DoomRandomPolicy(cfg.seed, pool.num_slots))
        return evaluate(pool, policy, dataclasses.replace(cfg.eval, videos=False), out_dir,
                        meta={"policy": DoomRandomPolicy.name, "config": key})


def _pm(mean: float, std: float) -> str:
    return f"{mean:.0f} ± {std:.0f}"


def render_tau_table(table: dict) -> str:
    """The markdown table: ours beside the paper's, per τ, and the random policy."""
    n = table["random_policy"]["episodes"]
    lines = [
        f"# Doom TakeCover: C trained in the dream at each τ ({table['profile']} profile)",
        "",
        f"Virtual: {table['dream_episodes']} dreams of at most {table['max_steps']} steps; "
        f"actual: real episodes on the evaluation seeds (the paper: 100 trials each, "
        "PAPER.md §2.7).",
        "",
        "The last column is the calibration of each dream: how long the §2.2 data policy lives "
        "in it against in the real game (its collected episodes of more than 100 steps).",
        "",
        "| τ | virtual (ours) | actual (ours) | virtual (paper) | actual (paper) | data policy: "
        "dream / real life |",
        "|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        pv, pa = PAPER_TAU_TABLE.get(r["tau"], ("", ""))
        cal = (f"{r['data_policy_dream_mean']:.0f} / {r['data_policy_real_mean']:.0f}"
               if "data_policy_dream_mean" in r else "")
        lines.append(f"| {r['tau']:.2f} | {_pm(r['dream_mean'], r['dream_std'])} | "
                     f"**{_pm(r['real_mean'], r['real_std'])}** ({r['episodes']} episodes) | "
                     f"{pv} | {pa} | {cal} |")
    rnd = table["random_policy"]
    lines.append(f"| random policy | N/A | {_pm(rnd['real_mean'], rnd['real_std'])} ({n} "
                 f"episodes) | N/A | {PAPER_RANDOM} | |")
    return "\n".join(lines) + "\n"


def table_taus(cfg: ExperimentConfig) -> tuple[float, ...]:
    """The paper's τ (`TAUS`) and the run's own `--dream.temperature`, ascending."""
    return tuple(sorted({*TAUS, float(cfg.dream.temperature)}))


def tau_table(cfg: ExperimentConfig, log: Callable[[str], None] = print,
              taus: tuple[float, ...] | None = None) -> dict:
    """Train and evaluate C at every τ of `taus` (default `table_taus(cfg)`) on the run's V and
    M (which must be done), score the random policy, write `tau_table.json` and
    `tau_table.md`; resumable."""
    taus = table_taus(cfg) if taus is None else taus
    base = RunFolder(cfg.run_dir)
    rows = []
    with base.lock():
        for tau in taus:
            tcfg = tau_config(cfg, tau)
            run = _train_and_evaluate(tcfg, base, tau, log)
            ev = io.read_json(run.path("evaluate") / "results.json")
            dream = dream_score(tcfg, run, base)
            cal = dream["calibration"]
            rows.append({"tau": tau, "dream_mean": dream["mean"], "dream_std": dream["std"],
                         "real_mean": ev["mean"], "real_std": ev["std"],
                         "data_policy_dream_mean": cal["dream_mean"],
                         "data_policy_real_mean": cal["real_mean"],
                         "episodes": ev["episodes"], "dream_episodes": dream["episodes"],
                         "folder": "." if run is base else str(run.root.relative_to(base.root)),
                         **artifacts.model_ids(run)})
            log(f"[dreamjax] tau {tau:.2f}: dream {_pm(dream['mean'], dream['std'])}, real "
                f"{_pm(ev['mean'], ev['std'])}")
        rnd = random_score(cfg, base)
        table = {
            "game": DOOM.name,
            "profile": cfg.profile,
            "rows": rows,
            "random_policy": {"real_mean": rnd["mean"], "real_std": rnd["std"],
                              "episodes": rnd["episodes"], "seeds": rnd["seeds"]},
            "dream_episodes": cfg.eval.episodes,
            "max_steps": cfg.es.max_steps,
            "paper": {"rows": {f"{t:.2f}": {"virtual": v, "actual": a}
                               for t, (v, a) in PAPER_TAU_TABLE.items()},
                      "random_policy": PAPER_RANDOM},
            "config": to_dict(cfg),
        }
        io.write_json(base.root / TAU_TABLE, table)
        io.write_bytes(base.root / "tau_table.md", render_tau_table(table))
    return table
