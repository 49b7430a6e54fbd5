"""Controllers trained by CMA-ES in the real environment (PAPER.md §1.6): the real-env fitness of
the one ES loop (`dreamjax.es.loop`).

Each generation asks (jitted) for P candidates, plays P x R episodes in an `EnvPool` with one
batched policy (`policy_factory(ctrl_params_batch (P, ...)) -> BatchPolicy`, e.g.
`dreamjax.agent.WorldModelPolicy`; slot s plays candidate `spec.tag`), and tells (jitted) the
fitness -mean return. Candidates i and i + P/2 play the same R env seeds, drawn from
`np.random.default_rng([*key_words, generation])` (PAPER.md §1.6). The mean is evaluated on the
fixed seeds `eval_seed_start ..`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.config import ControllerConfig, ESConfig
from dreamjax.envs.pool import EpisodeSpec
from dreamjax.es.generation import generation_keys
from dreamjax.es.loop import ControllerResult, train_controller
from dreamjax.es.strategies import make_strategy, strategy_params, strategy_sigma
from dreamjax.models.controller import ControllerSpec, controller_spec


def generation_seeds(key: jax.Array, generation: int, half: int, rollouts: int) -> np.ndarray:
    """(P/2, R) env seeds of one generation, from the run's key and the generation."""
    key_words = [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]
    rng = np.random.default_rng([*key_words, generation])
    return rng.integers(0, 2**31 - 1, size=(half, rollouts))


class RealFitness:
    """The real env as the ES loop's `Fitness`: one generation per `run` call."""

    name = "real"
    chunk = 1

    def __init__(self, pool: Any, policy_factory: Callable[[Any], Any], spec: ControllerSpec,
                 strategy: Any, es_params: Any, rollouts: int,
                 eval_specs: Sequence[EpisodeSpec]):
        self.pool, self.policy_factory, self.spec = pool, policy_factory, spec
        self.strategy, self.es_params = strategy, es_params
        self.rollouts, self.eval_specs = rollouts, list(eval_specs)
        self._ask, self._tell = jax.jit(strategy.ask), jax.jit(strategy.tell)

    def _episodes(self, pop_params: Any, specs: list[EpisodeSpec]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean return per candidate (P,), return per episode, length per episode)."""
        results = self.pool.run(specs, self.policy_factory(pop_params))
        rets = np.zeros(jax.tree.leaves(pop_params)[0].shape[0])
        counts = np.zeros_like(rets)
        for r in results:
            rets[r.spec.tag] += r.total_reward
            counts[r.spec.tag] += 1
        return (rets / np.maximum(counts, 1), np.asarray([r.total_reward for r in results]),
                np.asarray([r.length for r in results]))

    def run(self, key: jax.Array, es_state: Any, start: int, stop: int) -> tuple[Any, list[dict]]:
        P = self.strategy.population_size
        records = []
        for gen in range(start, stop):
            t0 = time.perf_counter()
            k_ask, _, k_tell = generation_keys(key, gen)
            pop, es_state = self._ask(k_ask, es_state, self.es_params)
            seeds = generation_seeds(key, gen, P // 2, self.rollouts)
            specs = [EpisodeSpec(seed=int(seeds[i % (P // 2), r]), tag=i)
                     for i in range(P) for r in range(self.rollouts)]
            mean_ret, _, lens = self._episodes(pop, specs)
            fitness = jnp.asarray(-mean_ret, jnp.float32)
            es_state, _ = self._tell(k_tell, pop, fitness, es_state, self.es_params)
            dt = time.perf_counter() - t0
            records.append({
                "generation": gen + 1, "best_fitness": float(-mean_ret.max()),
                "mean_fitness": float(-mean_ret.mean()), "worst_fitness": float(-mean_ret.min()),
                "sigma": float(strategy_sigma(es_state)), "mean_return": float(mean_ret.mean()),
                "best_return": float(mean_ret.max()), "mean_length": float(np.mean(lens)),
                "wall_s": round(dt, 3), "env_steps_per_s": round(float(np.sum(lens)) / dt, 1),
            })
        return es_state, records

    def evaluate_mean(self, key: jax.Array, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """The mean on the fixed evaluation seeds (`key` is unused: the seeds are the key)."""
        _, rets, lens = self._episodes(jax.tree.map(lambda x: x[None], params), self.eval_specs)
        return rets, lens

    def done_info(self) -> dict:
        return {}


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
    callback: Callable[[list[dict]], None] | None = None,
    tensorboard_dir: str | Path | None = None,
    progress: bool = True,
) -> ControllerResult:
    """CMA-ES in the real env (PAPER.md §1.6); resumable, same files as
    `train_controller_dream` (`dreamjax.es.loop`).

    policy_factory(ctrl_params_batch (P, ...)) -> a BatchPolicy playing candidate `spec.tag`.
    `generations` defaults to `es_cfg.generations`. Every `eval_every` generations (and at the
    end) the mean plays `eval_episodes` episodes on seeds eval_seed_start.. and the best is
    kept. `init_params` (a param pytree, e.g. the dream-trained controller) is the initial
    CMA-ES mean; zeros by default (PAPER.md §1.6). `callback(records)` is called after each
    generation with its log record; `tensorboard_dir`: the loop's TensorBoard scalars.
    """

    def make_fitness() -> RealFitness:
        spec = controller_spec(ctrl_cfg.kind, z_dim, hidden_size, action_dim=action_dim,
                               hidden_units=ctrl_cfg.hidden)
        strategy = make_strategy(es_cfg.strategy, es_cfg.popsize, spec.zeros())
        eval_specs = [EpisodeSpec(seed=eval_seed_start + i, tag=0)
                      for i in range(es_cfg.eval_episodes)]
        return RealFitness(pool, policy_factory, spec, strategy,
                           strategy_params(strategy, es_cfg.sigma_init), es_cfg.rollouts,
                           eval_specs)

    generations = es_cfg.generations if generations is None else int(generations)
    return train_controller(key, make_fitness, out_dir, es_cfg, generations=generations,
                            init_mean=init_params, callback=callback,
                            tensorboard_dir=tensorboard_dir, progress=progress)
