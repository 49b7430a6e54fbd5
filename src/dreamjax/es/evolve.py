"""CMA-ES over controllers (PAPER.md §1.6), in the dream and in the real environment.

In the dream (`train_controller_dream`), one generation -- ask -> P x R dream rollouts -> tell --
is one compiled function, and `ESConfig.chunk` generations run under one `lax.scan` between
checkpoints. Generation g uses the key `fold_in(key, g)`, so chunking, interrupting and resuming
do not change the result. Every `eval_every` generations (and at the end) the distribution MEAN is
evaluated on `eval_episodes` fixed rollouts (the reference code's `es.current_param()`, PAPER.md
§0, §1.6) and the best mean so far is saved.

In the real env (`train_controller_real`), ask and tell are jitted and the fitness comes from
`EnvPool.run` with a `WorldModelPolicy` (V encode -> C act -> M step for every slot at once).

Paper settings (PAPER.md §1.6): population 64, sigma_0 = 0.1, mean starts at zeros, fitness =
mean return of 16 rollouts (evosax minimises -return), candidates i and i + P/2 share seeds.
`CMA_ES` here is evosax's CMA-ES with pycma's lazy eigendecomposition (`LazyCMA_ES`): like the
reference's pycma 2.2.0 it refreshes B, D only every 1 / (c1 + c_mu) / N / 10 generations (every
3rd generation for N = 867) instead of every generation. Other evosax strategies are selectable
by name (`ESConfig.strategy`, e.g. "Sep_CMA_ES").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms import algorithms as evosax_algorithms
from evosax.algorithms.distribution_based import cma_es
from flax import struct
from tqdm import tqdm

from dreamjax.config import ControllerConfig, ESConfig
from dreamjax.dream.env import DreamEnv, DreamParams, check_dream_config
from dreamjax.dream.rollout import fitness_from_returns, population_rollouts
from dreamjax.models.controller import (
    Controller,
    controller_for,
    from_paper_vector,
    make_obs,
    num_params,
    obs_dim_for_mode,
    obs_mode,
    ravel_params,
    to_paper_vector,
    unravel_fn,
    zeros_params,
)
from dreamjax.models.mdnrnn import MDNRNN

EVAL_KEY_TAG = 0x5EED
"""fold_in tag of the fixed key behind every evaluation of the mean (the same episodes each time,
like the reference's fixed seeds 0..63)."""


# ----------------------------------------------------------------------------------------------
# Strategies


@struct.dataclass
class LazyCMAState(cma_es.State):
    """evosax CMA-ES state plus the generation of the last eigendecomposition (-1: never)."""

    eigen_generation: jax.Array


class LazyCMA_ES(cma_es.CMA_ES):  # noqa: N801 (evosax naming)
    """evosax `CMA_ES` that refreshes the eigendecomposition C = B D² Bᵀ lazily, as pycma does.

    B, D are recomputed when `generation - last > eigen_gap` (pycma's `lazy_update_gap`,
    default 1 / (c1 + c_mu) / N / 10); between refreshes sampling uses the last B, D. With
    `eigen_gap=0` it is exactly evosax's `CMA_ES`. The O(N³) `eigh` of an 867 x 867 matrix costs
    0.3-0.8 s on a 2-core CPU, as much as a tenth of a dream generation.
    """

    def __init__(self, population_size: int, solution: Any, eigen_gap: float | None = None,
                 **kwargs: Any):
        super().__init__(population_size, solution, **kwargs)
        if eigen_gap is None:
            p = self._default_params
            eigen_gap = float(1.0 / (p.c_1 + p.c_mu) / self.num_dims / 10.0)
        if eigen_gap < 0:
            raise ValueError(f"LazyCMA_ES: eigen_gap must be >= 0, got {eigen_gap}")
        self.eigen_gap = float(eigen_gap)

    def _init(self, key: jax.Array, params: cma_es.Params) -> LazyCMAState:
        base = super()._init(key, params)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return LazyCMAState(**fields, eigen_generation=jnp.int32(-1))

    def _ask(self, key: jax.Array, state: LazyCMAState, params: cma_es.Params):
        due = (state.generation_counter - state.eigen_generation) > self.eigen_gap
        C, B, D = jax.lax.cond(
            due, cma_es.eigen_decomposition, lambda c: (c, state.B, state.D), state.C
        )
        z = jax.random.normal(key, (self.population_size, self.num_dims))
        population = state.mean + state.std * ((z * D) @ B.T)
        eigen_generation = jnp.where(due, state.generation_counter, state.eigen_generation)
        return population, state.replace(C=C, B=B, D=D,
                                         eigen_generation=eigen_generation.astype(jnp.int32))


def make_strategy(name: str, popsize: int, solution: Any, **kwargs: Any) -> Any:
    """An evosax strategy by name; "CMA_ES" is `LazyCMA_ES` (pycma's lazy eigen updates),
    "CMA_ES_evosax" evosax's own (eigendecomposition every generation)."""
    if popsize < 2:
        raise ValueError(f"--es.popsize must be >= 2, got {popsize}")
    if name == "CMA_ES":
        return LazyCMA_ES(popsize, solution, **kwargs)
    if name == "CMA_ES_evosax":
        return cma_es.CMA_ES(popsize, solution, **kwargs)
    if name not in evosax_algorithms:
        choices = ", ".join(["CMA_ES", "CMA_ES_evosax", *sorted(evosax_algorithms)])
        raise ValueError(f"--es.strategy: unknown strategy {name!r}; choose one of {choices}")
    return evosax_algorithms[name](population_size=popsize, solution=solution, **kwargs)


def strategy_params(strategy: Any, sigma_init: float) -> Any:
    """The strategy's default params with the initial step size sigma_0 (`std_init`)."""
    params = strategy.default_params
    if not hasattr(params, "std_init"):
        raise ValueError(f"--es.strategy {type(strategy).__name__} has no std_init to set "
                         "--es.sigma-init on")
    return params.replace(std_init=jnp.asarray(sigma_init, jnp.float32))


def strategy_sigma(es_state: Any) -> jax.Array:
    """A scalar step size for logs: mean of `std` (NaN if the state has none)."""
    std = getattr(es_state, "std", None)
    return jnp.float32(jnp.nan) if std is None else jnp.mean(std)


# ----------------------------------------------------------------------------------------------
# Generations (generic over the fitness function)

Evaluate = Callable[[jax.Array, Any, Any], tuple[jax.Array, dict]]
"""evaluate(key, population (P, ...) pytree, args) -> (fitness (P,), aux metrics dict of (P,))."""


def es_generation(
    key: jax.Array, strategy: Any, es_state: Any, es_params: Any, evaluate: Evaluate, args: Any
) -> tuple[Any, dict]:
    """ask -> evaluate -> tell. Returns the new state and per-generation metrics (scalars)."""
    k_ask, k_eval, k_tell = jax.random.split(key, 3)
    population, es_state = strategy.ask(k_ask, es_state, es_params)
    fitness, aux = evaluate(k_eval, population, args)
    es_state, _ = strategy.tell(k_tell, population, fitness, es_state, es_params)
    metrics = {
        "best_fitness": jnp.min(fitness),
        "mean_fitness": jnp.mean(fitness),
        "worst_fitness": jnp.max(fitness),
        "sigma": strategy_sigma(es_state),
        **{k: jnp.mean(v) for k, v in aux.items()},
    }
    return es_state, metrics


def make_chunk_fn(strategy: Any, evaluate: Evaluate, chunk: int) -> Callable:
    """Jitted `chunk_fn(key, es_state, es_params, args, start, stop) -> (es_state, metrics)`.

    Runs generations start .. start + chunk - 1 under one `lax.scan`; generation g uses key
    `fold_in(key, g)` and is skipped (state unchanged) when g >= stop. metrics: dict of (chunk,)
    arrays; rows with g >= stop are not meaningful.
    """
    if chunk < 1:
        raise ValueError(f"--es.chunk must be >= 1, got {chunk}")

    def chunk_fn(key, es_state, es_params, args, start, stop):
        shapes = jax.eval_shape(
            lambda: es_generation(key, strategy, es_state, es_params, evaluate, args)[1]
        )

        def run(es_state, g):
            return es_generation(jax.random.fold_in(key, g), strategy, es_state, es_params,
                                 evaluate, args)

        def skip(es_state, g):
            return es_state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(es_state, g):
            return jax.lax.cond(g < stop, run, skip, es_state, g)

        return jax.lax.scan(body, es_state, start + jnp.arange(chunk))

    return jax.jit(chunk_fn)


def dream_evaluate(
    env: DreamEnv, policy: Callable, num_rollouts: int, num_steps: int, antithetic: bool = True
) -> Evaluate:
    """Fitness of a population in the dream: -mean return of `num_rollouts` rollouts each;
    args = DreamParams. aux: mean_return, best_return, mean_length per candidate."""

    def evaluate(key, population, dream_params):
        res = population_rollouts(key, env, dream_params, policy, population, num_rollouts,
                                  num_steps, antithetic=antithetic)
        fitness = fitness_from_returns(res)
        mean_ret = jnp.mean(res.returns, axis=-1)
        aux = {"mean_return": mean_ret, "mean_length": jnp.mean(res.lengths, axis=-1)}
        return fitness, aux

    return evaluate


def make_mean_eval_fn(env: DreamEnv, policy: Callable, num_episodes: int, num_steps: int):
    """Jitted `(key, params, dream_params) -> (returns (E,), lengths (E,))` for one controller."""

    def eval_fn(key, params, dream_params):
        pop = jax.tree.map(lambda x: x[None], params)
        res = population_rollouts(key, env, dream_params, policy, pop, num_episodes, num_steps,
                                  antithetic=False)
        return res.returns[0], res.lengths[0]

    return jax.jit(eval_fn)


# ----------------------------------------------------------------------------------------------
# Files


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _read_jsonl(path: Path, upto_generation: int) -> list[dict]:
    """Records of a JSONL log with generation <= upto_generation (drops a torn last line)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("generation", 0) <= upto_generation:
            out.append(rec)
    return out


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _append_jsonl(path: Path, records: Sequence[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()


def save_controller(path: str | Path, controller: Controller, params: Any, meta: dict) -> None:
    """Write a controller to an .npz: `flat` (evosax order), `paper_flat` (reference layout),
    `meta` (JSON: the controller fields, obs_dim, plus `meta`)."""
    path = Path(path)
    info = {
        "action_dim": controller.action_dim,
        "hidden": controller.hidden,
        "use_bias": controller.use_bias,
        **meta,
    }
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(
        tmp,
        flat=np.asarray(ravel_params(params), np.float32),
        paper_flat=to_paper_vector(controller, params),
        meta=np.array(json.dumps(info)),
    )
    os.replace(tmp, path)


def load_controller(path: str | Path) -> tuple[Controller, Any, dict]:
    """Read `save_controller`'s .npz -> (controller, params, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved controller")
    with np.load(path) as f:
        if "paper_flat" not in f or "meta" not in f:
            raise ValueError(f"{path}: not a dreamjax controller file (needs paper_flat, meta)")
        meta = json.loads(str(f["meta"]))
        flat = f["paper_flat"]
    controller = Controller(meta["action_dim"], meta["hidden"], meta["use_bias"])
    params = from_paper_vector(controller, int(meta["obs_dim"]), flat)
    return controller, params, meta


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


def _result_from_dir(out_dir: Path) -> ControllerResult:
    done = json.loads((out_dir / "DONE.json").read_text())
    controller, params, _ = load_controller(out_dir / "best.npz")
    n = int(done["generations"])
    return ControllerResult(
        controller, params, float(done["best_eval_return"]), int(done["best_generation"]), n,
        _read_jsonl(out_dir / "log.jsonl", n), _read_jsonl(out_dir / "evals.jsonl", n), out_dir,
    )


def _check_es_cfg(es_cfg: ESConfig, generations: int) -> None:
    for name in ("popsize", "rollouts", "max_steps", "eval_episodes", "chunk"):
        if getattr(es_cfg, name) < 1:
            raise ValueError(f"--es.{name.replace('_', '-')} must be >= 1, "
                             f"got {getattr(es_cfg, name)}")
    if generations < 0 or es_cfg.eval_every < 0:
        raise ValueError("--es generations and --es.eval-every must be >= 0")
    if es_cfg.popsize % 2:
        raise ValueError(f"--es.popsize must be even (candidates i and i+P/2 share seeds), got "
                         f"{es_cfg.popsize}")
    if not es_cfg.sigma_init > 0:
        raise ValueError(f"--es.sigma-init must be > 0, got {es_cfg.sigma_init}")


def _eval_points(generations: int, eval_every: int) -> list[int]:
    pts = list(range(eval_every, generations + 1, eval_every)) if eval_every > 0 else []
    if not pts or pts[-1] != generations:
        pts.append(generations)
    return pts


# ----------------------------------------------------------------------------------------------
# Dream training


@functools.lru_cache(maxsize=8)
def _dream_programs(
    strategy_name: str, popsize: int, controller: Controller, o_dim: int, rollouts: int,
    num_steps: int, chunk: int, eval_episodes: int,
) -> tuple[Any, Callable, Callable]:
    """(strategy, jitted chunk_fn, jitted mean eval_fn), cached so that a resumed or repeated
    run in the same process reuses the compiled programs."""
    env = DreamEnv()
    strategy = make_strategy(strategy_name, popsize, zeros_params(controller, o_dim))
    evaluate = dream_evaluate(env, controller.apply, rollouts, num_steps)
    chunk_fn = make_chunk_fn(strategy, evaluate, chunk)
    eval_fn = make_mean_eval_fn(env, controller.apply, eval_episodes, num_steps)
    return strategy, chunk_fn, eval_fn


@dataclasses.dataclass
class _Best:
    """The best evaluated distribution mean so far (return, generation, flat params)."""

    ret: float
    gen: int
    flat: Any


def _record_eval_and_checkpoint(
    out_dir: Path, gen: int, rets: Any, lens: Any, es_state: Any, key: jax.Array, best: _Best,
    controller: Controller, mean_params: Any, meta: dict,
) -> None:
    """Log one evaluation of the mean (None to skip), keep the best, checkpoint the ES state."""
    from dreamjax import checkpoint

    if rets is not None:
        ev = {"generation": gen, "eval_return": float(np.mean(rets)),
              "eval_std": float(np.std(rets)), "eval_length": float(np.mean(lens))}
        if ev["eval_return"] > best.ret:
            best.ret, best.gen, best.flat = ev["eval_return"], gen, es_state.mean
            save_controller(out_dir / "best.npz", controller, mean_params,
                            {**meta, "generation": gen, "eval_return": best.ret})
        ev["best_return"] = best.ret
        _append_jsonl(out_dir / "evals.jsonl", [ev])
    checkpoint.save(
        out_dir / "ckpt", gen,
        {"es_state": es_state, "key": jax.random.key_data(key), "best_flat": best.flat},
        {"generation": gen, "best_return": best.ret, "best_gen": best.gen},
    )


def _resume_es(
    out_dir: Path, key: jax.Array, init_state: Any, n_params: int
) -> tuple[int, Any, _Best]:
    """(generation, ES state, best) from `out_dir/ckpt`, or the initial ones; the JSONL logs are
    cut back to that generation. A checkpoint trained with another key is refused."""
    from dreamjax import checkpoint

    ckpt_dir = out_dir / "ckpt"
    tree = {"es_state": init_state, "key": jax.random.key_data(key),
            "best_flat": jnp.zeros((n_params,), jnp.float32)}
    gen, best_return, best_gen = 0, -float("inf"), -1
    if checkpoint.latest_step(ckpt_dir) is not None:
        tree, meta = checkpoint.restore(ckpt_dir, tree)
        if not np.array_equal(np.asarray(tree["key"]), np.asarray(jax.random.key_data(key))):
            raise ValueError(f"{ckpt_dir}: checkpoint was trained with another key; resume with "
                             "the same seed or delete the folder")
        gen, best_return, best_gen = meta["generation"], meta["best_return"], meta["best_gen"]
    for name in ("log.jsonl", "evals.jsonl"):
        _write_jsonl(out_dir / name, _read_jsonl(out_dir / name, gen))
    return gen, tree["es_state"], _Best(best_return, best_gen, tree["best_flat"])


def train_controller_dream(
    key: jax.Array,
    dream_params: DreamParams,
    out_dir: str | Path,
    es_cfg: ESConfig,
    ctrl_cfg: ControllerConfig,
    *,
    generations: int | None = None,
    callback: Callable[[list[dict]], None] | None = None,
    progress: bool = True,
) -> ControllerResult:
    """Train C by CMA-ES entirely inside the dream (PAPER.md §2.6); resumable.

    `dream_params` gives M, the latent bank and τ; its step limit `max_steps_in_episode` is also
    the rollout length. Its obs mode is set from `ctrl_cfg.kind`. `generations` defaults to
    `es_cfg.dream_generations`. Writes to `out_dir`: `ckpt/` (ES state, key, generation, best),
    `log.jsonl` (per generation: best/mean/worst fitness = -return, mean_return, mean_length,
    sigma, wall time), `evals.jsonl` (mean evaluations), `best.npz` (best evaluated mean,
    `save_controller`) and finally `DONE.json`. A finished folder is returned as is; an
    unfinished one resumes from its last checkpoint (same result as an uninterrupted run).
    `callback(records)` is called after each chunk with that chunk's log records.
    """
    out_dir = Path(out_dir)
    if (out_dir / "DONE.json").is_file():
        return _result_from_dir(out_dir)
    generations = es_cfg.dream_generations if generations is None else int(generations)
    _check_es_cfg(es_cfg, generations)
    model = dream_params.model
    mode = obs_mode(ctrl_cfg.kind)
    dream_params = dream_params.replace(obs_mode=mode)
    check_dream_config(model, dream_params.obs_mode, dream_params.reward_mode)
    controller = controller_for(ctrl_cfg.kind, model.z_dim, model.hidden,
                                action_dim=model.action_dim, hidden_units=ctrl_cfg.hidden)
    o_dim = obs_dim_for_mode(mode, model.z_dim, model.hidden)
    num_steps = int(dream_params.max_steps_in_episode)

    strategy, chunk_fn, eval_fn = _dream_programs(
        es_cfg.strategy, es_cfg.popsize, controller, o_dim, es_cfg.rollouts, num_steps,
        es_cfg.chunk, es_cfg.eval_episodes,
    )
    solution = zeros_params(controller, o_dim)
    es_params = strategy_params(strategy, es_cfg.sigma_init)
    eval_key = jax.random.fold_in(key, EVAL_KEY_TAG)
    unravel = unravel_fn(controller, o_dim)

    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    n_params = num_params(controller, o_dim)
    init_state = strategy.init(jax.random.fold_in(key, 0x1417), solution, es_params)
    gen, es_state, best = _resume_es(out_dir, key, init_state, n_params)
    ctrl_meta = {"kind": ctrl_cfg.kind, "obs_dim": o_dim}

    points = _eval_points(generations, es_cfg.eval_every)
    steps_per_gen = es_cfg.popsize * es_cfg.rollouts * num_steps
    bar = tqdm(total=generations, initial=gen, desc="dream CMA-ES", unit="gen",
               disable=not progress)
    try:
        while gen < generations:
            stop = min(gen + es_cfg.chunk, next(p for p in points if p > gen))
            t0 = time.perf_counter()
            es_state, metrics = chunk_fn(key, es_state, es_params, dream_params, gen, stop)
            metrics = jax.device_get(metrics)
            dt = (time.perf_counter() - t0) / (stop - gen)
            records = [
                {"generation": g + 1, **{k: float(v[i]) for k, v in metrics.items()},
                 "wall_s": round(dt, 4), "dream_steps_per_s": round(steps_per_gen / dt, 1)}
                for i, g in enumerate(range(gen, stop))
            ]
            for r in records:
                r["best_return"] = -r["best_fitness"]
            _append_jsonl(log_path, records)
            gen = stop
            mean_params, rets, lens = unravel(es_state.mean), None, None
            if gen in points:
                rets, lens = jax.device_get(eval_fn(eval_key, mean_params, dream_params))
            _record_eval_and_checkpoint(out_dir, gen, rets, lens, es_state, key, best,
                                        controller, mean_params, ctrl_meta)
            bar.update(len(records))
            bar.set_postfix(gen=gen, best=f"{records[-1]['best_return']:.1f}",
                            mean=f"{records[-1]['mean_return']:.1f}")
            if callback is not None:
                callback(records)
    finally:
        bar.close()

    if best.gen < 0:  # zero generations: the initial mean is the result
        mean_params = unravel(es_state.mean)
        rets, _ = jax.device_get(eval_fn(eval_key, mean_params, dream_params))
        best.ret, best.gen = float(np.mean(rets)), 0
        save_controller(out_dir / "best.npz", controller, mean_params,
                        {**ctrl_meta, "generation": 0, "eval_return": best.ret})
    history = _read_jsonl(log_path, generations)
    done = {
        "kind": ctrl_cfg.kind,
        "obs_dim": o_dim,
        "num_params": n_params,
        "generations": generations,
        "best_eval_return": best.ret,
        "best_generation": best.gen,
        "strategy": es_cfg.strategy,
        "es": dataclasses.asdict(es_cfg),
        "dream": {"temperature": float(dream_params.temperature), "max_steps": num_steps,
                  "obs_mode": dream_params.obs_mode, "reward_mode": dream_params.reward_mode,
                  "model": {f: getattr(model, f) for f in
                            ("z_dim", "action_dim", "hidden", "n_mix", "restart_input",
                             "reward_head", "done_head")}},
        "mean_wall_s_per_generation": float(np.mean([r["wall_s"] for r in history]))
        if history else None,
    }
    _write_atomic(out_dir / "DONE.json", json.dumps(done, indent=2))
    return _result_from_dir(out_dir)


# ----------------------------------------------------------------------------------------------
# Real environment


@partial(jax.jit, static_argnames=("vae_model", "mdn_model", "controller", "mode"))
def _policy_tick(
    base_key, vae_params, mdn_params, ctrl_params_batch, c, h, fresh, cand, seeds, tags, steps,
    frames, active, *, vae_model, mdn_model, controller, mode,
):
    """One tick for all S slots: encode -> sample z -> act on [z, h] -> step M (active slots).

    c, h (S, H); fresh, active (S,) bool; cand, seeds, tags, steps (S,); frames (S, 64, 64, 3)
    uint8. Slot s's noise key is fold_in(base_key, seed, tag, step): an episode replays exactly.
    """
    from dreamjax.models.mdnrnn import LSTMState
    from dreamjax.models.vae import ConvVAE

    keep = (~fresh)[:, None].astype(jnp.float32)
    state = LSTMState(c=c * keep, h=h * keep)
    mu, logvar = vae_model.apply(vae_params, frames.astype(jnp.float32) / 255.0,
                                 method=ConvVAE.encode)

    def noise(s, t, n):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base_key, s), t), n)
        return jax.random.normal(k, (mu.shape[-1],), jnp.float32)

    z = mu + jnp.exp(logvar / 2.0) * jax.vmap(noise)(seeds, tags, steps)
    obs = make_obs(mode, z, state.c, state.h)
    slot_params = jax.tree.map(lambda p: p[cand], ctrl_params_batch)
    a = jax.vmap(controller.apply)(slot_params, obs)
    extra = (fresh.astype(jnp.float32),) if mdn_model.restart_input else ()
    new, _ = mdn_model.apply(mdn_params, state, z, a, *extra, method=MDNRNN.step)
    act = active[:, None]
    return a, jnp.where(act, new.c, state.c), jnp.where(act, new.h, state.h)


class WorldModelPolicy:
    """`BatchPolicy` (dreamjax.envs.pool) acting with V, M and C for every pool slot at once.

    ctrl_params_batch: C's params with a leading candidate axis (P, ...); slot s plays candidate
    `spec.tag` of the episode it was reset to. Each tick: V encodes the frames to a sampled z
    (PAPER.md §1.5), C acts on [z, h] (or the obs mode's features), then M advances with (z, a).
    Noise is keyed by (seed, tag, step) of the episode, so a re-run episode is identical.
    """

    def __init__(
        self,
        vae_model: Any,
        vae_params: Any,
        mdn_model: MDNRNN,
        mdn_params: Any,
        controller: Controller,
        ctrl_params_batch: Any,
        *,
        obs_mode: str = "zh",
        seed: int = 0,
    ):
        leaves = jax.tree.leaves(ctrl_params_batch)
        if not leaves or any(x.ndim < 1 for x in leaves):
            raise ValueError("WorldModelPolicy: ctrl_params_batch needs a leading candidate axis")
        self.num_candidates = int(leaves[0].shape[0])
        self.vae_model, self.vae_params = vae_model, vae_params
        self.mdn_model, self.mdn_params = mdn_model, mdn_params
        self.controller, self.ctrl_params_batch = controller, ctrl_params_batch
        self.obs_mode = obs_mode
        self.base_key = jax.random.key(seed)
        self._resize(0)

    def _resize(self, n: int) -> None:
        old = getattr(self, "cand", np.zeros(0, np.int32)).shape[0]
        if old >= n and old > 0:
            return
        n = max(n, 1)
        H = self.mdn_model.hidden

        def grow(a, fill, dtype):
            out = np.full((n, *np.shape(a)[1:]), fill, dtype)
            out[: np.shape(a)[0]] = np.asarray(a)
            return out

        self.cand = grow(getattr(self, "cand", np.zeros(0)), 0, np.int32)
        self.seeds = grow(getattr(self, "seeds", np.zeros(0)), 0, np.uint32)
        self.tags = grow(getattr(self, "tags", np.zeros(0)), 0, np.uint32)
        self.steps = grow(getattr(self, "steps", np.zeros(0)), 0, np.uint32)
        self.fresh = grow(getattr(self, "fresh", np.zeros(0, bool)), True, bool)
        self.c = jnp.asarray(grow(getattr(self, "c", np.zeros((0, H))), 0.0, np.float32))
        self.h = jnp.asarray(grow(getattr(self, "h", np.zeros((0, H))), 0.0, np.float32))

    def reset(self, slot: int, spec: Any) -> None:
        """Slot `slot` starts episode `spec`: zero its LSTM state, play candidate `spec.tag`."""
        if not 0 <= spec.tag < self.num_candidates:
            raise ValueError(f"WorldModelPolicy: spec.tag {spec.tag} is not a candidate index "
                             f"(have {self.num_candidates})")
        self._resize(slot + 1)
        self.cand[slot] = spec.tag
        self.seeds[slot] = np.uint32(spec.seed % 2**32)
        self.tags[slot] = np.uint32(spec.tag)
        self.steps[slot] = 0
        self.fresh[slot] = True

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3) uint8, active (S,) bool -> (S, A) raw actions in [-1, 1]."""
        frames = np.asarray(frames)
        S = frames.shape[0]
        if frames.shape[1:] != (64, 64, 3) or np.shape(active) != (S,):
            raise ValueError(f"WorldModelPolicy.act: need frames (S, 64, 64, 3) and active (S,), "
                             f"got {frames.shape} and {np.shape(active)}")
        self._resize(S)
        active = np.asarray(active, bool)
        # copies: JAX may alias host buffers, and these are mutated after the call
        host = [x[:S].copy() for x in (self.fresh, self.cand, self.seeds, self.tags, self.steps)]
        a, c, h = _policy_tick(
            self.base_key, self.vae_params, self.mdn_params, self.ctrl_params_batch,
            self.c[:S], self.h[:S], *host, frames.copy(), active.copy(),
            vae_model=self.vae_model, mdn_model=self.mdn_model, controller=self.controller,
            mode=self.obs_mode,
        )
        n = self.c.shape[0]
        self.c = c if n == S else self.c.at[:S].set(c)
        self.h = h if n == S else self.h.at[:S].set(h)
        self.steps[:S] += active.astype(np.uint32)
        self.fresh[:S] &= ~active
        return np.asarray(a)


def train_controller_real(
    key: jax.Array,
    pool: Any,
    policy_factory: Callable[[Any], Any],
    out_dir: str | Path,
    es_cfg: ESConfig,
    ctrl_cfg: ControllerConfig,
    *,
    z_dim: int = 32,
    hidden_size: int = 256,
    action_dim: int = 3,
    generations: int | None = None,
    eval_seed_start: int = 0,
    init_params: Any = None,
    progress: bool = True,
) -> ControllerResult:
    """CMA-ES in the real env (PAPER.md §1.6): jitted ask/tell, fitness from `pool.run`.

    policy_factory(ctrl_params_batch (P, ...)) -> a BatchPolicy (e.g. a `WorldModelPolicy`)
    playing candidate `spec.tag`. Each generation runs P x R episodes (EpisodeSpec.tag =
    candidate); candidates i and i + P/2 get the same R env seeds, drawn from `key` and the
    generation. Every `eval_every` generations (and at the end) the mean plays `eval_episodes`
    episodes on seeds eval_seed_start.. and the best is kept. Checkpoints every generation; same
    files as `train_controller_dream`. `init_params` (a param pytree, e.g. the dream-trained
    controller) is the initial CMA-ES mean; zeros by default (PAPER.md §1.6).
    """
    from dreamjax.envs.pool import EpisodeSpec

    out_dir = Path(out_dir)
    if (out_dir / "DONE.json").is_file():
        return _result_from_dir(out_dir)
    generations = es_cfg.generations if generations is None else int(generations)
    _check_es_cfg(es_cfg, generations)
    controller = controller_for(ctrl_cfg.kind, z_dim, hidden_size, action_dim=action_dim,
                                hidden_units=ctrl_cfg.hidden)
    o_dim = obs_dim_for_mode(obs_mode(ctrl_cfg.kind), z_dim, hidden_size)
    solution = zeros_params(controller, o_dim)
    strategy = make_strategy(es_cfg.strategy, es_cfg.popsize, solution)
    es_params = strategy_params(strategy, es_cfg.sigma_init)
    ask = jax.jit(strategy.ask)
    tell = jax.jit(strategy.tell)
    unravel = unravel_fn(controller, o_dim)
    P, R, half = es_cfg.popsize, es_cfg.rollouts, es_cfg.popsize // 2
    key_words = [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]

    def run_episodes(pop_params, specs):
        results = pool.run(specs, policy_factory(pop_params))
        rets = np.zeros(jax.tree.leaves(pop_params)[0].shape[0])
        counts = np.zeros_like(rets)
        lens = []
        for r in results:
            rets[r.spec.tag] += r.total_reward
            counts[r.spec.tag] += 1
            lens.append(r.length)
        return rets / np.maximum(counts, 1), np.asarray([r.total_reward for r in results]), lens

    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    n_params = num_params(controller, o_dim)
    init_state = strategy.init(
        jax.random.fold_in(key, 0x1417), solution if init_params is None else init_params, es_params
    )
    gen, es_state, best = _resume_es(out_dir, key, init_state, n_params)
    ctrl_meta = {"kind": ctrl_cfg.kind, "obs_dim": o_dim}
    points = _eval_points(generations, es_cfg.eval_every)
    eval_specs = [EpisodeSpec(seed=eval_seed_start + i, tag=0) for i in range(es_cfg.eval_episodes)]

    bar = tqdm(total=generations, initial=gen, desc="real CMA-ES", unit="gen", disable=not progress)
    try:
        while gen < generations:
            t0 = time.perf_counter()
            k = jax.random.fold_in(key, gen)
            k_ask, _, k_tell = jax.random.split(k, 3)
            pop, es_state = ask(k_ask, es_state, es_params)
            rng = np.random.default_rng([*key_words, gen])
            seeds = rng.integers(0, 2**31 - 1, size=(half, R))
            specs = [EpisodeSpec(seed=int(seeds[i % half, r]), tag=i)
                     for i in range(P) for r in range(R)]
            mean_ret, _, lens = run_episodes(pop, specs)
            fitness = jnp.asarray(-mean_ret, jnp.float32)
            es_state, _ = tell(k_tell, pop, fitness, es_state, es_params)
            gen += 1
            dt = time.perf_counter() - t0
            rec = {"generation": gen, "best_fitness": float(-mean_ret.max()),
                   "mean_fitness": float(-mean_ret.mean()),
                   "worst_fitness": float(-mean_ret.min()),
                   "sigma": float(strategy_sigma(es_state)), "mean_return": float(mean_ret.mean()),
                   "best_return": float(mean_ret.max()), "mean_length": float(np.mean(lens)),
                   "wall_s": round(dt, 3), "env_steps_per_s": round(float(np.sum(lens)) / dt, 1)}
            _append_jsonl(log_path, [rec])
            mean_params, rets, lens = unravel(es_state.mean), None, None
            if gen in points:
                one = jax.tree.map(lambda x: x[None], mean_params)
                _, rets, lens = run_episodes(one, eval_specs)
            _record_eval_and_checkpoint(out_dir, gen, rets, lens, es_state, key, best,
                                        controller, mean_params, ctrl_meta)
            bar.update(1)
            bar.set_postfix(gen=gen, best=f"{rec['best_return']:.1f}",
                            mean=f"{rec['mean_return']:.1f}")
    finally:
        bar.close()
    if best.gen < 0:
        raise ValueError("--es.generations must be > 0 for real-env training")
    done = {
        "kind": ctrl_cfg.kind, "obs_dim": o_dim, "num_params": n_params,
        "generations": generations, "best_eval_return": best.ret, "best_generation": best.gen,
        "strategy": es_cfg.strategy, "es": dataclasses.asdict(es_cfg), "trained_in": "real",
    }
    _write_atomic(out_dir / "DONE.json", json.dumps(done, indent=2))
    return _result_from_dir(out_dir)
