"""Controllers trained by CMA-ES entirely inside the dream (PAPER.md §1.6, §2.6): the dream
fitness of the one ES loop (`dreamjax.es.loop`).

One generation -- ask -> P x R dream rollouts -> tell -- is one compiled function, and
`ESConfig.chunk` generations run under one `lax.scan` between checkpoints
(`dreamjax.es.generation.make_chunk_fn`). The mean is evaluated on `eval_episodes` dream rollouts
of one jitted function. Both programs are cached per shape, so a resumed or repeated run in the
same process reuses them; M's weights travel as arguments (`DreamParams`), never as constants.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dreamjax.config import ControllerConfig, ESConfig
from dreamjax.dream.ensemble import dream_rollouts, ensemble_fitness, ensemble_size
from dreamjax.dream.env import DreamEnv, DreamParams, check_dream_config
from dreamjax.errors import ConfigError
from dreamjax.es.generation import Evaluate, make_chunk_fn, make_host_chunk_fn
from dreamjax.es.loop import ControllerResult, train_controller
from dreamjax.es.sharding import check_divides, place, shard_population
from dreamjax.es.strategies import make_strategy, strategy_params
from dreamjax.models.controller import ControllerSpec, controller_spec
from dreamjax.models.mdnrnn import MDNRNN_FIELDS


def dream_evaluate(
    env: DreamEnv, policy: Callable, num_rollouts: int, num_steps: int, antithetic: bool = True,
    fitness_mode: str = "mean", block: int = 0,
) -> Evaluate:
    """Fitness of a population in the dream: -mean return of `num_rollouts` rollouts each (for
    an ensemble, `fitness_mode` "min": the worst member's); args = DreamParams. aux:
    mean_return, mean_length per candidate (P,). `block` > 0: the episodes still alive are
    compacted every `block` steps (`compacted_rollouts`; a host function, not jittable)."""

    def evaluate(key, population, dream_params):
        res = dream_rollouts(key, env, dream_params, policy, population, num_rollouts,
                             num_steps, antithetic=antithetic, block=block)
        return _fitness(res.returns, res.lengths, ensemble_size(dream_params), fitness_mode)

    return evaluate


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fitness(returns: jax.Array, lengths: jax.Array, members: int, mode: str
             ) -> tuple[jax.Array, dict]:
    """(fitness (P,), aux) from a population's returns and lengths (P, R)."""
    aux = {"mean_return": jnp.mean(returns, axis=-1), "mean_length": jnp.mean(lengths, axis=-1)}
    return ensemble_fitness(returns, members, mode), aux


def make_mean_eval_fn(env: DreamEnv, policy: Callable, num_episodes: int, num_steps: int,
                      block: int = 0):
    """`(key, params, dream_params) -> (returns (E,), lengths (E,))` for one controller: jitted,
    or with `block` > 0 and one M compacted every `block` steps (`compacted_rollouts`: the same
    dreams in distribution, not bit for bit; it stops once every episode has ended)."""

    def eval_fn(key, params, dream_params, block=0):
        pop = jax.tree.map(lambda x: x[None], params)
        res = dream_rollouts(key, env, dream_params, policy, pop, num_episodes, num_steps,
                             antithetic=False, block=block)
        return res.returns[0], res.lengths[0]

    fused = jax.jit(eval_fn)
    if not block:
        return fused

    def compacted(key, params, dream_params):
        if ensemble_size(dream_params) > 1:
            return fused(key, params, dream_params)
        return eval_fn(key, params, dream_params, block)

    return compacted


@functools.lru_cache(maxsize=8)
def _dream_programs(
    strategy_name: str, popsize: int, spec: ControllerSpec, rollouts: int, num_steps: int,
    chunk: int, eval_episodes: int, fitness_mode: str = "mean", mesh: Mesh | None = None,
    block: int = 0,
) -> tuple[Any, Callable, Callable]:
    """(strategy, chunk_fn, mean eval_fn), cached so that a resumed or repeated run in the same
    process reuses the compiled programs; with a `mesh`, the population is sharded over its
    `"pop"` axis (`dreamjax.es.sharding`); `block` > 0 (no mesh): the dreams still alive are
    compacted every `block` steps and the generations run in a host loop."""
    env = DreamEnv()
    strategy = make_strategy(strategy_name, popsize, spec.zeros())
    evaluate = dream_evaluate(env, spec.controller.apply, rollouts, num_steps,
                              fitness_mode=fitness_mode, block=block)
    if block:
        chunk_fn = make_host_chunk_fn(strategy, evaluate, chunk)
    else:
        if mesh is not None:
            evaluate = shard_population(evaluate, mesh)
        chunk_fn = make_chunk_fn(strategy, evaluate, chunk)
    eval_fn = make_mean_eval_fn(env, spec.controller.apply, eval_episodes, num_steps, block)
    return strategy, chunk_fn, eval_fn


@dataclasses.dataclass(frozen=True)
class DreamFitness:
    """The dream as the ES loop's `Fitness`: `chunk` generations per jitted call."""

    spec: ControllerSpec
    strategy: Any
    es_params: Any
    chunk: int
    chunk_fn: Callable
    eval_fn: Callable
    dream_params: DreamParams
    steps_per_generation: int
    """P x R x T dream steps: the throughput in the log."""
    name: str = "dream"

    @classmethod
    def build(cls, dream_params: DreamParams, es_cfg: ESConfig, spec: ControllerSpec,
              fitness_mode: str = "mean", mesh: Mesh | None = None) -> DreamFitness:
        """The (cached) programs for this shape; rollouts last `max_steps_in_episode` steps.
        With a `mesh` each device rolls out P / n candidates and M is replicated on it: the
        same records as on one device. With `es.compact_every` > 0, one M and no mesh: the
        dreams still alive are compacted (the same experiment, not bit for bit)."""
        num_steps = int(dream_params.max_steps_in_episode)
        K = ensemble_size(dream_params)
        for flag, n in (("--es.rollouts", es_cfg.rollouts),
                        ("--es.eval-episodes", es_cfg.eval_episodes)):
            if n % K:
                raise ConfigError(f"{flag} ({n}) must be a multiple of the ensemble's {K} "
                                  "members (each dreams as many of a candidate's episodes)")
        if mesh is not None:
            check_divides(mesh, es_cfg.popsize)
            dream_params = place(dream_params, mesh)
        strategy, chunk_fn, eval_fn = _dream_programs(
            es_cfg.strategy, es_cfg.popsize, spec, es_cfg.rollouts, num_steps, es_cfg.chunk,
            es_cfg.eval_episodes, fitness_mode, mesh,
            0 if mesh or K > 1 else es_cfg.compact_every,
        )
        return cls(spec, strategy, strategy_params(strategy, es_cfg.sigma_init), es_cfg.chunk,
                   chunk_fn, eval_fn, dream_params,
                   es_cfg.popsize * es_cfg.rollouts * num_steps)

    def run(self, key: jax.Array, es_state: Any, start: int, stop: int) -> tuple[Any, list[dict]]:
        t0 = time.perf_counter()
        es_state, metrics = self.chunk_fn(key, es_state, self.es_params, self.dream_params,
                                          start, stop)
        metrics = jax.device_get(metrics)
        dt = (time.perf_counter() - t0) / (stop - start)
        records = [
            {"generation": g + 1, **{k: float(v[i]) for k, v in metrics.items()},
             "wall_s": round(dt, 4), "dream_steps_per_s": round(self.steps_per_generation / dt, 1)}
            for i, g in enumerate(range(start, stop))
        ]
        for r in records:
            r["best_return"] = -r["best_fitness"]
        return es_state, records

    def evaluate_mean(self, key: jax.Array, params: Any) -> tuple[np.ndarray, np.ndarray]:
        return jax.device_get(self.eval_fn(key, params, self.dream_params))

    def done_info(self) -> dict:
        dp = self.dream_params
        return {"dream": {"temperature": float(dp.temperature), "ensemble": ensemble_size(dp),
                          "max_steps": int(dp.max_steps_in_episode), "dropout": dp.dropout,
                          "done": dp.done_mode,
                          "obs_mode": dp.obs_mode, "reward_mode": dp.reward_mode,
                          "model": {f: getattr(dp.model, f) for f in MDNRNN_FIELDS}}}


def train_controller_dream(
    key: jax.Array,
    dream_params: DreamParams,
    out_dir: str | Path,
    es_cfg: ESConfig,
    ctrl_cfg: ControllerConfig,
    *,
    generations: int | None = None,
    init_params: Any = None,
    fitness_mode: str = "mean",
    callback: Callable[[list[dict]], None] | None = None,
    tensorboard_dir: str | Path | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> ControllerResult:
    """Train C by CMA-ES entirely inside the dream (PAPER.md §2.6); resumable.

    `init_params` (a param pytree, e.g. the previous round's C) is the initial mean (zeros by
    default); `fitness_mode` is an ensemble dream's "mean" or "min" (`dreamjax.dream.ensemble`).

    `dream_params` gives M, the latent bank and τ; its step limit `max_steps_in_episode` is also
    the rollout length. Its obs mode is set from `ctrl_cfg.kind`. `generations` defaults to
    `es_cfg.dream_generations`. Files, resume and the evaluation schedule are the ES loop's
    (`dreamjax.es.loop`): a finished folder is returned as is, an unfinished one resumes from
    its last checkpoint (same result as an uninterrupted run). `callback(records)` is called
    after each chunk with that chunk's log records; `tensorboard_dir`: the loop's TensorBoard
    scalars (None: none); `mesh`: shard the population over its devices
    (`dreamjax.es.sharding.population_mesh`; same result).
    """

    def make_fitness() -> DreamFitness:
        model = dream_params.model
        spec = controller_spec(ctrl_cfg.kind, model.z_dim, model.hidden,
                               action_dim=model.action_dim, hidden_units=ctrl_cfg.hidden)
        params = dream_params.replace(obs_mode=spec.obs_mode)
        check_dream_config(model, params.obs_mode, params.reward_mode)
        return DreamFitness.build(params, es_cfg, spec, fitness_mode, mesh)

    generations = es_cfg.dream_generations if generations is None else int(generations)
    return train_controller(key, make_fitness, out_dir, es_cfg, generations=generations,
                            init_mean=init_params, callback=callback,
                            tensorboard_dir=tensorboard_dir, progress=progress)
