"""The one resumable ES generation loop over controllers, with a pluggable fitness (PAPER.md §1.6).

A `Fitness` runs generations (`run`) and plays the distribution mean (`evaluate_mean`); the dream
(`dreamjax.es.dream`: a jitted chunk of generations under `lax.scan`) and the real env
(`dreamjax.es.real`: ask -> `EnvPool` episodes -> tell on the host) are the two. The loop around
them is shared: resume from the checkpoint, the evaluation schedule of the mean (every
`eval_every` generations and at the end, on the fixed key `fold_in(key, EVAL_KEY_TAG)`, like the
reference's `es.current_param()` on fixed seeds), the best mean so far, and the files of
`out_dir`:

- `ckpt/`: ES state, key, generation, best mean (orbax; after every `run` call);
- `log.jsonl`: one record per generation (`generation`, best/mean/worst fitness = -return,
  `best_return`, `mean_return`, `mean_length`, `sigma`, `wall_s`, and a throughput);
- `evals.jsonl`: one record per evaluation of the mean (`eval_return`, `eval_std`,
  `eval_length`, `best_return`);
- `best.npz`: the best evaluated mean (`dreamjax.es.controller_io`);
- `DONE.json`: written last; a folder with it is returned as is;
- with `tensorboard_dir` (optional tensorboardX): TensorBoard scalars `controller/<key>` of every
  generation's record (best, mean and worst return, σ, ...) at step = generation, and
  `controller/eval_return`, `eval_std`, `eval_length`, `best_eval_return` at each evaluation of
  the mean. The pipeline writes each phase to `run/tensorboard/controller_<phase>`, so the
  dream's and the real env's curves overlay under the same tags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dreamjax import checkpoint
from dreamjax.config import ESConfig
from dreamjax.errors import ConfigError
from dreamjax.es.controller_io import load_controller, save_controller
from dreamjax.es.strategies import check_strategy
from dreamjax.io import append_jsonl, read_json, read_jsonl, truncate_jsonl, write_json
from dreamjax.models.controller import Controller, ControllerSpec
from dreamjax.train import tensorboard_writer

EVAL_KEY_TAG = 0x5EED
"""fold_in tag of the fixed key behind every evaluation of the mean (the same episodes each time,
like the reference's fixed seeds 0..63)."""

INIT_KEY_TAG = 0x1417
"""fold_in tag of the key that initialises the ES state."""


class Fitness(Protocol):
    """What the loop needs from a place to evaluate controllers in."""

    name: str
    """"dream" or "real": the progress bar and DONE.json's `trained_in`."""
    chunk: int
    """The most generations one `run` call covers (the loop checkpoints after each call)."""
    spec: ControllerSpec
    """The controller trained (kind, module, obs mode and size)."""
    strategy: Any
    es_params: Any

    def run(self, key: jax.Array, es_state: Any, start: int, stop: int) -> tuple[Any, list[dict]]:
        """Generations start .. stop - 1 (generation g with `generation_keys(key, g)`) -> the new
        ES state and one log record per generation (`generation` = g + 1, and at least
        `best_return`, `mean_return` and `wall_s`)."""

    def evaluate_mean(self, key: jax.Array, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """One controller (a param pytree) -> (returns (E,), lengths (E,)) of its evaluation."""

    def done_info(self) -> dict:
        """Extra entries for DONE.json."""


@dataclasses.dataclass
class ControllerResult:
    """What a controller-training stage returns."""

    controller: Controller
    params: Any
    """The best evaluated distribution mean (param pytree)."""
    best_return: float
    """Its mean return over the evaluation episodes."""
    best_generation: int
    generations: int
    history: list[dict]
    """Per-generation records (the fitness log)."""
    evals: list[dict]
    """Evaluation records of the mean."""
    out_dir: Path


def result_from_dir(out_dir: Path) -> ControllerResult:
    """The `ControllerResult` of a finished folder (one with DONE.json)."""
    done = read_json(out_dir / "DONE.json")
    controller, params, _ = load_controller(out_dir / "best.npz")
    n = int(done["generations"])
    return ControllerResult(
        controller, params, float(done["best_eval_return"]), int(done["best_generation"]), n,
        _records_upto(out_dir / "log.jsonl", n), _records_upto(out_dir / "evals.jsonl", n),
        out_dir,
    )


def _records_upto(path: Path, generation: int) -> list[dict]:
    return [r for r in read_jsonl(path) if int(r.get("generation", 0)) <= generation]


def check_es_config(es_cfg: ESConfig, generations: int) -> None:
    """Refuse (`ConfigError`) ES settings the loop cannot run, before any work."""
    for name in ("popsize", "rollouts", "max_steps", "eval_episodes", "chunk"):
        if getattr(es_cfg, name) < 1:
            raise ConfigError(f"--es.{name.replace('_', '-')} must be >= 1, "
                              f"got {getattr(es_cfg, name)}")
    if generations < 0 or es_cfg.eval_every < 0:
        raise ConfigError("--es generations and --es.eval-every must be >= 0")
    if es_cfg.popsize % 2:
        raise ConfigError(f"--es.popsize must be even (candidates i and i+P/2 share seeds), "
                          f"got {es_cfg.popsize}")
    check_strategy(es_cfg.strategy, es_cfg.sigma_init)


def eval_points(generations: int, eval_every: int) -> list[int]:
    """The generations after which the mean is evaluated: every `eval_every`, and the last."""
    pts = list(range(eval_every, generations + 1, eval_every)) if eval_every > 0 else []
    if not pts or pts[-1] != generations:
        pts.append(generations)
    return pts


@dataclasses.dataclass
class _Best:
    """The best evaluated distribution mean so far (return, generation, flat params)."""

    ret: float
    gen: int
    flat: Any


def _record_eval_and_checkpoint(
    out_dir: Path, gen: int, rets: Any, lens: Any, es_state: Any, key: jax.Array, best: _Best,
    controller: Controller, mean_params: Any, meta: dict,
) -> dict | None:
    """Log one evaluation of the mean (None to skip), keep the best, checkpoint the ES state;
    returns the evaluation's record (None if skipped)."""
    ev = None
    if rets is not None:
        ev = {"generation": gen, "eval_return": float(np.mean(rets)),
              "eval_std": float(np.std(rets)), "eval_length": float(np.mean(lens))}
        if ev["eval_return"] > best.ret:
            best.ret, best.gen, best.flat = ev["eval_return"], gen, es_state.mean
            save_controller(out_dir / "best.npz", controller, mean_params,
                            {**meta, "generation": gen, "eval_return": best.ret})
        ev["best_return"] = best.ret
        append_jsonl(out_dir / "evals.jsonl", [ev])
    checkpoint.save(
        out_dir / "ckpt", gen,
        {"es_state": es_state, "key": jax.random.key_data(key), "best_flat": best.flat},
        {"generation": gen, "best_return": best.ret, "best_gen": best.gen},
    )
    return ev


EVAL_SCALARS = {"eval_return": "eval_return", "eval_std": "eval_std",
                "eval_length": "eval_length", "best_return": "best_eval_return"}
"""An evaluation record's entries -> their TensorBoard names (`controller/<name>`)."""


def _write_scalars(writer: Any, records: list[dict], ev: dict | None) -> None:
    """TensorBoard scalars of one `run` call: each record's numbers at its generation, and the
    evaluation of the mean `ev` (if any) at its generation."""
    for r in records:
        for k, v in r.items():
            if k != "generation" and isinstance(v, int | float) and not isinstance(v, bool):
                writer.add_scalar(f"controller/{k}", float(v), int(r["generation"]))
    if ev is not None:
        for k, name in EVAL_SCALARS.items():
            writer.add_scalar(f"controller/{name}", float(ev[k]), int(ev["generation"]))
    writer.flush()


def _resume(out_dir: Path, key: jax.Array, init_state: Any, n_params: int
            ) -> tuple[int, Any, _Best]:
    """(generation, ES state, best) from `out_dir/ckpt`, or the initial ones; the JSONL logs are
    cut back to that generation. A checkpoint trained with another key is refused."""
    ckpt_dir = out_dir / "ckpt"
    tree = {"es_state": init_state, "key": jax.random.key_data(key),
            "best_flat": jnp.zeros((n_params,), jnp.float32)}
    gen, best_return, best_gen = 0, -float("inf"), -1
    if checkpoint.latest_step(ckpt_dir) is not None:
        tree, meta = checkpoint.restore(ckpt_dir, tree)
        if not np.array_equal(np.asarray(tree["key"]), np.asarray(jax.random.key_data(key))):
            raise ConfigError(f"{ckpt_dir}: checkpoint was trained with another key; resume with "
                              "the same seed or delete the folder")
        gen, best_return, best_gen = meta["generation"], meta["best_return"], meta["best_gen"]
    for name in ("log.jsonl", "evals.jsonl"):
        truncate_jsonl(out_dir / name, "generation", gen)
    return gen, tree["es_state"], _Best(best_return, best_gen, tree["best_flat"])


def train_controller(
    key: jax.Array,
    make_fitness: Callable[[], Fitness],
    out_dir: str | Path,
    es_cfg: ESConfig,
    *,
    generations: int,
    init_mean: Any = None,
    callback: Callable[[list[dict]], None] | None = None,
    progress: bool = True,
    tensorboard_dir: str | Path | None = None,
) -> ControllerResult:
    """Run (or resume) ES training in `out_dir` for `generations` generations; see the module
    docstring. A finished folder is returned as is; else the settings are checked
    (`ConfigError`) before `make_fitness()` builds the fitness and anything is written.

    `init_mean` (a param pytree) is the initial mean, zeros by default (PAPER.md §1.6). With zero
    generations the initial mean is evaluated and is the result. `callback(records)` is called
    after each `fitness.run` call with its log records. `tensorboard_dir`: where the TensorBoard
    scalars go (module docstring; needs tensorboardX), None for none.
    """
    out_dir = Path(out_dir)
    if (out_dir / "DONE.json").is_file():
        return result_from_dir(out_dir)
    check_es_config(es_cfg, generations)
    fitness = make_fitness()
    spec = fitness.spec
    n_params = spec.num_params
    if init_mean is None:
        init_mean = spec.zeros()
    eval_key = jax.random.fold_in(key, EVAL_KEY_TAG)
    meta = {"kind": spec.kind, "obs_dim": spec.obs_dim}

    out_dir.mkdir(parents=True, exist_ok=True)
    init_state = fitness.strategy.init(jax.random.fold_in(key, INIT_KEY_TAG), init_mean,
                                       fitness.es_params)
    gen, es_state, best = _resume(out_dir, key, init_state, n_params)
    points = eval_points(generations, es_cfg.eval_every)
    writer = tensorboard_writer(tensorboard_dir)
    bar = tqdm(total=generations, initial=gen, desc=f"{fitness.name} CMA-ES", unit="gen",
               disable=not progress)
    try:
        while gen < generations:
            stop = min(gen + fitness.chunk, next(p for p in points if p > gen))
            es_state, records = fitness.run(key, es_state, gen, stop)
            append_jsonl(out_dir / "log.jsonl", records)
            gen = stop
            mean_params, rets, lens = spec.unravel(es_state.mean), None, None
            if gen in points:
                rets, lens = fitness.evaluate_mean(eval_key, mean_params)
            ev = _record_eval_and_checkpoint(out_dir, gen, rets, lens, es_state, key, best,
                                             spec.controller, mean_params, meta)
            if writer is not None:
                _write_scalars(writer, records, ev)
            bar.update(len(records))
            bar.set_postfix(gen=gen, best=f"{records[-1]['best_return']:.1f}",
                            mean=f"{records[-1]['mean_return']:.1f}")
            if callback is not None:
                callback(records)
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    if best.gen < 0:  # zero generations: the initial mean is the result
        mean_params = spec.unravel(es_state.mean)
        rets, _ = fitness.evaluate_mean(eval_key, mean_params)
        best.ret, best.gen = float(np.mean(rets)), 0
        save_controller(out_dir / "best.npz", spec.controller, mean_params,
                        {**meta, "generation": 0, "eval_return": best.ret})
    history = _records_upto(out_dir / "log.jsonl", generations)
    done = {
        "kind": spec.kind,
        "obs_dim": spec.obs_dim,
        "num_params": n_params,
        "generations": generations,
        "best_eval_return": best.ret,
        "best_generation": best.gen,
        "strategy": es_cfg.strategy,
        "es": dataclasses.asdict(es_cfg),
        "trained_in": fitness.name,
        **fitness.done_info(),
        "mean_wall_s_per_generation": float(np.mean([r["wall_s"] for r in history]))
        if history else None,
    }
    write_json(out_dir / "DONE.json", done)
    return result_from_dir(out_dir)
