"""Hyperparameter sweeps as one compiled program: `python -m dreamjax.experiments.sweep`.

On the world model of `--run-dir` (trained there first with the profile's collect -> vae ->
encode -> mdnrnn stages if the folder has no M), K dream CMA-ES runs, one per (seed, sigma_0,
temperature, strategy settings) of the grid, run as one vmapped program
(`dreamjax.es.sweep.run_es_sweep`), sharded over the local devices when there are several; and,
with `--mdnrnn-learning-rates`, K Ms (seeds x learning rates) trained as one program on the
folder's series (`train_mdnrnn_sweep`). Writes, in the run folder:

- `sweep.json`: one row per ES member: its settings and final fitness (the last generation's
  best and mean return, and the final mean's return on its fixed evaluation episodes);
- `sweep.md`: that table (and the M sweep's), `sweep.png`: each member's fitness curve;
- `sweep/curves.json`: every member's per-generation best and mean return;
- `sweep/mdnrnn/`: the M sweep's training folder (`members/<k>` params), `sweep/mdnrnn.json`.

`--profile smoke --run-dir DIR` runs a small grid on the smoke world model in a few minutes.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import jax
from jax.sharding import Mesh

from dreamjax import io
from dreamjax.config import (
    ControllerConfig,
    ESConfig,
    ExperimentConfig,
    MDNRNNConfig,
    profile_config,
)
from dreamjax.dream.env import DreamParams, make_dream_params
from dreamjax.errors import ConfigError
from dreamjax.es.loop import check_es_config
from dreamjax.es.sharding import local_mesh
from dreamjax.es.sweep import es_grid, mdnrnn_grid, run_es_sweep, train_mdnrnn_sweep
from dreamjax.experiments import cli
from dreamjax.pipeline import artifacts, viz
from dreamjax.pipeline.carracing import carracing_runners, carracing_verifiers
from dreamjax.pipeline.run import RunFolder, run_stages

PROG = "python -m dreamjax.experiments.sweep"
WM_STAGES = ("collect", "vae", "encode", "mdnrnn")
"""The pipeline stages that make the world model a sweep runs on."""


@dataclass(frozen=True)
class SweepConfig:
    """A sweep over a run folder's world model."""

    profile: Literal["smoke", "laptop", "paper"] = "smoke"
    """The pipeline profile whose stages train the world model when the run folder has none,
    and whose ES and M settings are the defaults below."""
    run_dir: str = "runs/sweep"
    """The run folder: its M and latent bank are used (trained first if missing); the sweep's
    files are written there."""
    seed: int = 0
    """Master seed of the world-model stages (when they run)."""
    seeds: tuple[int, ...] = (0, 1)
    """ES seeds: member key = jax.random.key(seed)."""
    sigmas: tuple[float, ...] = (0.1, 0.3)
    """Initial CMA-ES step sizes sigma_0."""
    temperatures: tuple[float, ...] = (1.0, 1.15)
    """Dream temperatures τ."""
    strategy_settings: tuple[str, ...] = ("",)
    """Strategy settings, one grid value each: comma-separated name=value scalar params of the
    strategy (e.g. `c_mean=0.5`), "" for its defaults."""
    generations: int = 0
    """Dream generations per member; 0: the profile's --es.dream-generations."""
    devices: int = 0
    """Local devices to shard members and candidates over; 0: all of them."""
    mdnrnn_seeds: tuple[int, ...] = (0, 1)
    """Seeds of the M sweep."""
    mdnrnn_learning_rates: tuple[float, ...] = ()
    """Learning rates of the M sweep; empty: no M sweep."""
    es: ESConfig = field(default_factory=ESConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    mdnrnn: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    """The M sweep's training settings (its learning rate comes from the grid)."""

    def pipeline(self) -> ExperimentConfig:
        """The profile's pipeline config that trains the world model in `run_dir`."""
        return dataclasses.replace(profile_config(self.profile), run_dir=self.run_dir,
                                   seed=self.seed, stages=WM_STAGES)


def _preset(name: str, mdnrnn_lrs: tuple[float, ...] = ()) -> SweepConfig:
    base = profile_config(name)
    return SweepConfig(profile=name, run_dir=f"runs/sweep-{name}", es=base.es,
                       controller=base.controller, mdnrnn=base.mdnrnn,
                       mdnrnn_learning_rates=mdnrnn_lrs)


def _smoke() -> SweepConfig:
    """2 seeds x 2 sigma_0 x 2 τ dream CMA-ES runs and 2 seeds x 2 learning rates Ms on the
    smoke world model: a few minutes on a 2-core CPU."""
    return _preset("smoke", (1e-3, 3e-3))


def _laptop() -> SweepConfig:
    """The same grid of dream CMA-ES runs on the laptop world model."""
    return _preset("laptop")


def _paper() -> SweepConfig:
    """The same grid at the paper's ES sizes (for a GPU/TPU host)."""
    return _preset("paper")


PROFILES = {"smoke": _smoke, "laptop": _laptop, "paper": _paper}


def parse_settings(text: str) -> tuple[tuple[str, float], ...]:
    """`"c_mean=0.5,c_1=0.01"` -> (("c_mean", 0.5), ("c_1", 0.01)); "" -> ()."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, eq, value = item.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            eq = ""
        if not eq or not name.strip():
            raise ConfigError(f"--strategy-settings: {item!r} is not name=number (e.g. "
                              "c_mean=0.5)")
    return tuple(out)


def _dream_params(cfg: SweepConfig, run: RunFolder) -> DreamParams:
    """The run folder's M (member 0 of an ensemble) and latent bank as a dream of the ES
    settings' episode length."""
    mdn, params, _, members = artifacts.load_mdnrnn(run)
    if members > 1:
        params = jax.tree.map(lambda x: x[0], params)
    mu, logvar = artifacts.load_initial_latents(run)
    return make_dream_params(mdn, params, mu, logvar, max_steps=cfg.es.max_steps)


def _mesh(cfg: SweepConfig, members: int) -> Mesh | None:
    """Members over the devices' sweep axis as far as they divide, candidates over the rest;
    None on one device."""
    n = cfg.devices or len(jax.local_devices())
    if n <= 1:
        return None
    sweep = math.gcd(members, n)
    return local_mesh(sweep, n // sweep)


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows)]


def run(cfg: SweepConfig) -> int:
    """Train the world model if the folder has none, run the sweeps, write the files."""
    settings = [parse_settings(s) for s in cfg.strategy_settings]
    members = es_grid(cfg.seeds, cfg.sigmas, cfg.temperatures, settings)
    generations = cfg.generations or cfg.es.dream_generations
    check_es_config(cfg.es, generations)
    run_folder = RunFolder(cfg.run_dir)
    if not (run_folder.path("mdnrnn") / "DONE.json").is_file():
        print(f"[dreamjax] {run_folder.root} has no world model: training it "
              f"({', '.join(WM_STAGES)})", flush=True)
        run_stages(cfg.pipeline(), carracing_runners(), verifiers=carracing_verifiers())
    with run_folder.lock():
        return _sweeps(cfg, run_folder, members, generations)


def _sweeps(cfg: SweepConfig, run_folder: RunFolder, members: list, generations: int) -> int:
    """The ES sweep (and the M sweep) on the run folder's world model, and their files."""
    dream_params = _dream_params(cfg, run_folder)
    mesh = _mesh(cfg, len(members))
    print(f"[dreamjax] {len(members)} dream CMA-ES runs x {generations} generations as one "
          f"program on {1 if mesh is None else mesh.size} device(s)", flush=True)
    t0 = time.perf_counter()
    res = run_es_sweep(dream_params, cfg.es, cfg.controller, members, generations=generations,
                       mesh=mesh)
    wall = time.perf_counter() - t0
    rows = res.rows()
    out = run_folder.root
    io.write_json(out / "sweep.json", rows)
    labels = [", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in m.row().items()) for m in members]
    curves = {"generation": list(range(1, generations + 1)),
              "members": [{"member": k, "label": labels[k],
                           "best_return": (-res.metrics["best_fitness"][k]).tolist(),
                           "mean_return": res.metrics["mean_return"][k].tolist()}
                          for k in range(len(members))]}
    io.write_json(out / "sweep" / "curves.json", curves)
    viz.plot_members(curves, out / "sweep.png")
    lines = [f"# Sweep of {len(members)} dream CMA-ES runs", "",
             f"{generations} generations of {cfg.es.strategy}, population {cfg.es.popsize} x "
             f"{cfg.es.rollouts} rollouts of {cfg.es.max_steps} steps, as one program on "
             f"{1 if mesh is None else mesh.size} device(s): {wall:.1f} s (compile included).",
             "", *_table(rows, list(rows[0])), "", "![fitness curves](sweep.png)"]
    if cfg.mdnrnn_learning_rates:
        z_dim = int(dream_params.model.z_dim)
        _, m_rows = train_mdnrnn_sweep(
            run_folder.path("encode"), out / "sweep" / "mdnrnn", cfg.mdnrnn,
            mdnrnn_grid(cfg.mdnrnn_seeds, cfg.mdnrnn_learning_rates), z_dim=z_dim,
            action_dim=int(dream_params.model.action_dim))
        io.write_json(out / "sweep" / "mdnrnn.json", m_rows)
        lines += ["", f"## Sweep of {len(m_rows)} Ms ({cfg.mdnrnn.steps} steps each)", "",
                  *_table(m_rows, ["member", "seed", "learning_rate", "final_loss",
                                   "final_z_nll"])]
    io.write_bytes(out / "sweep.md", "\n".join(lines) + "\n")
    print(f"[dreamjax] sweep of {len(members)} members in {wall:.1f} s: {out / 'sweep.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        sys.argv[1:] if argv is None else argv, run,
        profiles=PROFILES, default="smoke", prog=PROG, description=__doc__ or "",
    )


if __name__ == "__main__":
    sys.exit(main())
