"""Hyperparameter sweeps as one compiled program: K dream CMA-ES runs on one M, and K Ms.

ES sweep (`run_es_sweep`): K members, each a (seed, sigma_0, temperature τ, strategy settings)
from `es_grid`, run as one `jax.vmap` of the dream's jitted chunk of generations
(`DreamFitness.build`'s `make_chunk_fn` program, the one a single run uses) over stacked ES
states, keys, strategy params and τ; M's weights and the latent bank are shared (not batched).
Member k uses exactly the keys of `train_controller_dream(jax.random.key(seed_k), ...)`: the
state is initialised from `fold_in(key, INIT_KEY_TAG)`, generation g uses `fold_in(key, g)`,
and the final mean is evaluated on `fold_in(key, EVAL_KEY_TAG)` by the single run's own
evaluation program (member by member); so a member equals the same configuration run alone
(see "How equal" below).
Strategy settings are scalar fields of the strategy's params (e.g. CMA-ES `c_mean`, `c_1`):
they keep every member's shapes equal. With a `mesh` (`dreamjax.es.sharding`) the members are
sharded over its `"sweep"` axis and each population over `"pop"`.

How equal: ask and tell run member by member (`MemberwiseStrategy`), the rollouts vmapped, so
a member's first generation is bit-identical to its single run; after that XLA's fusion of the
tell inside the member loop rounds differently (~1e-9). A strategy without an
eigendecomposition (`Sep_CMA_ES`, `OpenES`, ...) stays within float32 tolerance of the single
run; full CMA-ES does not, by its nature: C starts at the identity, and the eigenvectors `eigh`
picks for a repeated eigenvalue are any basis of its eigenspace, so a 1e-9 difference in C
gives another, equally distributed, population from the second generation on.

M sweep (`train_mdnrnn_sweep`): K MDN-RNNs, one per (seed, learning rate), trained by the one
training loop (`dreamjax.train.fit`: checkpoints, resume, NaN guard) as one stacked model: the
loss is the sum of the members' `mdnrnn_loss_fn` (vmapped), whose gradient is each member's own,
and the optimizer is clip -> Adam -> a per-member learning rate. Member k sees the batches,
init and keys of `train_mdnrnn(jax.random.key(seed_k), ...)` (windows from the zero state,
`tbptt=False`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.custom_batching import sequential_vmap
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from dreamjax import checkpoint, io
from dreamjax.config import ControllerConfig, ESConfig, MDNRNNConfig
from dreamjax.data.batches import SequenceBatches
from dreamjax.data.episodes import list_episodes
from dreamjax.dream.env import DreamEnv, DreamParams, check_dream_config
from dreamjax.errors import ArtifactError, ConfigError
from dreamjax.es.dream import DreamFitness, dream_evaluate
from dreamjax.es.generation import make_chunk_fn
from dreamjax.es.loop import EVAL_KEY_TAG, INIT_KEY_TAG, check_es_config
from dreamjax.es.sharding import SWEEP, check_divides, place, shard_population
from dreamjax.es.strategies import strategy_params
from dreamjax.models.controller import ControllerSpec, controller_spec
from dreamjax.models.mdnrnn import MDNRNN, MDNRNN_FIELDS, init_mdnrnn, mdnrnn_loss_fn
from dreamjax.pipeline.training import data_seed
from dreamjax.train import TrainResult, fit


@dataclasses.dataclass(frozen=True)
class ESMember:
    """One member of an ES sweep."""

    seed: int
    sigma_init: float
    temperature: float
    settings: tuple[tuple[str, float], ...] = ()
    """(name, value) of scalar strategy params, e.g. (("c_mean", 0.5),)."""

    def row(self) -> dict:
        return {"seed": self.seed, "sigma_init": self.sigma_init,
                "temperature": self.temperature, **dict(self.settings)}


def es_grid(seeds: Sequence[int], sigmas: Sequence[float], temperatures: Sequence[float],
            settings: Sequence[tuple[tuple[str, float], ...]] = ((),)) -> list[ESMember]:
    """Every combination, seeds varying slowest."""
    return [ESMember(int(s), float(g), float(t), tuple(o))
            for s, g, t, o in itertools.product(seeds, sigmas, temperatures, settings)]


def member_es_params(strategy: Any, member: ESMember) -> Any:
    """The strategy's params with the member's sigma_0 and scalar settings; `ConfigError` for a
    name that is not a scalar field of the strategy's params."""
    params = strategy_params(strategy, member.sigma_init)
    for name, value in member.settings:
        old = getattr(params, name, None)
        if old is None or np.ndim(old) != 0:
            scalars = [f.name for f in dataclasses.fields(params)
                       if np.ndim(getattr(params, f.name)) == 0]
            raise ConfigError(f"sweep: {name!r} is not a scalar setting of "
                              f"{type(strategy).__name__}; choose from {', '.join(scalars)}")
        # the default's kind of leaf (a Python float stays one), so a single run with these
        # settings compiles to the default's program
        value = float(value) if isinstance(old, float) else jnp.asarray(value, jnp.float32)
        params = params.replace(**{name: value})
    return params


@dataclasses.dataclass
class ESSweepResult:
    """What `run_es_sweep` returns; K members, G generations, E evaluation episodes, N params."""

    members: list[ESMember]
    metrics: dict[str, np.ndarray]
    """Per-generation records as arrays (K, G): best/mean/worst fitness, sigma, mean_return,
    mean_length."""
    eval_returns: np.ndarray
    """(K, E) returns of each member's final mean on its fixed evaluation key."""
    means: np.ndarray
    """(K, N) final distribution means (flat controller vectors)."""
    spec: ControllerSpec

    def rows(self) -> list[dict]:
        """One row per member: its settings and its final fitness."""
        out = []
        for k, m in enumerate(self.members):
            out.append({"member": k, **m.row(),
                        "final_best_return": float(-self.metrics["best_fitness"][k, -1]),
                        "final_mean_return": float(self.metrics["mean_return"][k, -1]),
                        "eval_return": float(np.mean(self.eval_returns[k])),
                        "eval_std": float(np.std(self.eval_returns[k]))})
        return out


class MemberwiseStrategy:
    """`strategy` whose `ask` and `tell`, under a `jax.vmap` over sweep members, run member by
    member (`jax.custom_batching.sequential_vmap`): each member's ask and tell are the single
    run's unbatched programs, so member k's first generation is bit-identical to its single run
    and the lazy CMA-ES refreshes each member's eigendecomposition on its own schedule (a
    batched `cond` would compute it every generation). The rollouts between them are vmapped."""

    def __init__(self, strategy: Any):
        self.strategy = strategy
        self.population_size = strategy.population_size
        self.ask = sequential_vmap(strategy.ask)
        self.tell = sequential_vmap(strategy.tell)


@functools.lru_cache(maxsize=8)
def _sweep_programs(strategy: Any, spec: ControllerSpec, rollouts: int, num_steps: int,
                    chunk: int, mesh: Mesh | None) -> tuple[Callable, Callable]:
    """The sweep's jitted programs over K members, cached per shape (`strategy` is
    `DreamFitness.build`'s cached one):

    - init(keys (K,), es_params) -> states;
    - run(keys, states, es_params, taus (K,), dream_params, start, stop) -> (states, metrics
      (K, chunk)): the vmapped `make_chunk_fn` program.
    """
    evaluate = dream_evaluate(DreamEnv(), spec.controller.apply, rollouts, num_steps)
    if mesh is not None:
        evaluate = shard_population(evaluate, mesh)
    chunk_fn = make_chunk_fn(MemberwiseStrategy(strategy), evaluate, chunk)

    def init(keys, es_params):
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, INIT_KEY_TAG))(keys)
        return jax.vmap(strategy.init, in_axes=(0, None, 0))(init_keys, spec.zeros(), es_params)

    def member(key, es_state, es_params, tau, dream_params, start, stop):
        return chunk_fn(key, es_state, es_params, dream_params.replace(temperature=tau), start,
                        stop)

    run = jax.vmap(member, in_axes=(0, 0, 0, 0, None, None, None),
                   spmd_axis_name=None if mesh is None else SWEEP)
    return jax.jit(init), jax.jit(run)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def run_es_sweep(
    dream_params: DreamParams,
    es_cfg: ESConfig,
    ctrl_cfg: ControllerConfig,
    members: Sequence[ESMember],
    *,
    generations: int | None = None,
    mesh: Mesh | None = None,
    callback: Callable[[int], None] | None = None,
) -> ESSweepResult:
    """K dream CMA-ES runs (the module docstring) for `generations` (default
    `es_cfg.dream_generations`), `es_cfg.chunk` generations per call of the one program;
    `es_cfg.sigma_init` is replaced by each member's. `callback(generations_done)` after each
    chunk. `mesh`: shard members over `"sweep"` and candidates over `"pop"`."""
    members = list(members)
    generations = es_cfg.dream_generations if generations is None else int(generations)
    if not members:
        raise ConfigError("sweep: the grid is empty; give at least one seed, sigma and temperature")
    check_es_config(es_cfg, generations)
    if generations < 1:
        raise ConfigError("sweep: needs at least one generation")
    if mesh is not None:
        check_divides(mesh, es_cfg.popsize, len(members))
    model = dream_params.model
    spec = controller_spec(ctrl_cfg.kind, model.z_dim, model.hidden, action_dim=model.action_dim,
                           hidden_units=ctrl_cfg.hidden)
    dream_params = dream_params.replace(obs_mode=spec.obs_mode)
    check_dream_config(model, dream_params.obs_mode, dream_params.reward_mode)
    for m in members:
        if not m.temperature > 0:
            raise ConfigError(f"sweep: temperature must be > 0, got {m.temperature}")
    single = DreamFitness.build(dream_params, es_cfg, spec)
    init, program = _sweep_programs(single.strategy, spec, es_cfg.rollouts,
                                    int(dream_params.max_steps_in_episode), es_cfg.chunk, mesh)
    keys = jnp.stack([jax.random.key(m.seed) for m in members])
    es_params = _stack([member_es_params(single.strategy, m) for m in members])
    taus = jnp.asarray([m.temperature for m in members], jnp.float32)
    if mesh is not None:
        keys, es_params, taus = place((keys, es_params, taus), mesh, P(SWEEP))
        dream_params = place(dream_params, mesh)
    states = init(keys, es_params)

    chunks: list[dict] = []
    for start in range(0, generations, es_cfg.chunk):
        stop = min(start + es_cfg.chunk, generations)
        states, metrics = program(keys, states, es_params, taus, dream_params, start, stop)
        chunks.append({k: np.asarray(v)[:, : stop - start] for k, v in metrics.items()})
        if callback is not None:
            callback(stop)
    metrics = {k: np.concatenate([c[k] for c in chunks], axis=1) for k in chunks[0]}

    means = np.asarray(states.mean)
    returns = [single.eval_fn(jax.random.fold_in(jax.random.key(m.seed), EVAL_KEY_TAG),
                              spec.unravel(jnp.asarray(means[k])),
                              dream_params.replace(temperature=jnp.float32(m.temperature)))[0]
               for k, m in enumerate(members)]
    return ESSweepResult(members, metrics, np.stack(returns), means, spec)


# ----------------------------------------------------------------------------- the M sweep


@dataclasses.dataclass(frozen=True)
class MDNMember:
    """One member of an M sweep."""

    seed: int
    learning_rate: float

    def row(self) -> dict:
        return {"seed": self.seed, "learning_rate": self.learning_rate}


def mdnrnn_grid(seeds: Sequence[int], learning_rates: Sequence[float]) -> list[MDNMember]:
    """Every (seed, learning rate), seeds varying slowest."""
    return [MDNMember(int(s), float(lr)) for s, lr in itertools.product(seeds, learning_rates)]


def _member_scale(factors: jax.Array) -> optax.GradientTransformation:
    """Multiply each leaf's member k (leading axis) by factors[k]."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda u: u * factors.reshape(-1, *([1] * (u.ndim - 1))),
                            updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _sweep_loss(params: Any, batch: dict, key: jax.Array, *, model: MDNRNN,
                **loss_kwargs: float | int) -> tuple[jax.Array, dict]:
    """Sum of the members' `mdnrnn_loss_fn`; metrics per member (`<name>_<k>`). batch:
    "data" (K, ...) windows, "keys" (K, 2) key data, "step" (): member k's loss key is
    fold_in(keys[k], step), what `fit` gives a single run (`key` is unused)."""
    keys = jax.vmap(lambda kd: jax.random.fold_in(jax.random.wrap_key_data(kd), batch["step"]))(
        batch["keys"])
    one = functools.partial(mdnrnn_loss_fn, model=model, **loss_kwargs)
    loss, metrics = jax.vmap(one)(params, batch["data"], keys)
    out = {f"loss_{k}": loss[k] for k in range(loss.shape[0])}
    for name, v in metrics.items():
        out.update({f"{name}_{k}": v[k] for k in range(v.shape[0])})
    return jnp.sum(loss), out


def train_mdnrnn_sweep(
    series_dir: str | Path,
    out_dir: str | Path,
    cfg: MDNRNNConfig,
    members: Sequence[MDNMember],
    *,
    z_dim: int,
    action_dim: int = 3,
    progress: bool = True,
) -> tuple[TrainResult, list[dict]]:
    """Train K Ms (module docstring) on the series in `series_dir`; `cfg.learning_rate` is
    replaced by each member's. Writes `out_dir/ckpt` and `metrics.jsonl` (the loop's; per-member
    metrics `loss_<k>`, `z_nll_<k>`, ...; resumable) and member k's final params as the
    checkpoint `out_dir/members/<k>`. Returns the stacked result and one row per member (its
    settings and final loss)."""
    members = list(members)
    files = list_episodes(series_dir)
    if not files:
        raise ArtifactError(f"{series_dir}: no ep_XXXXXX.npz series to train M on; rerun the "
                            "encode stage")
    if cfg.tbptt:
        raise ConfigError("sweep: the M sweep trains random windows; use --mdnrnn.tbptt False")
    if not members or any(not m.learning_rate > 0 for m in members):
        raise ConfigError("sweep: give at least one M seed and learning rates > 0")
    model = MDNRNN(z_dim=z_dim, action_dim=action_dim, hidden=cfg.hidden, n_mix=cfg.n_mix,
                   reward_head=cfg.reward_head, done_head=cfg.done_head)
    splits = [jax.random.split(jax.random.key(m.seed), 3) for m in members]  # init, data, fit
    seeds = [data_seed(s[1]) for s in splits]
    fit_keys = np.stack([np.asarray(jax.random.key_data(s[2])) for s in splits])
    init = jax.jit(jax.vmap(init_mdnrnn, in_axes=(0, None)), static_argnums=1)
    params = init(jnp.stack([s[0] for s in splits]), model)
    B, L = cfg.batch_size, cfg.seq_len
    for seed in seeds:
        SequenceBatches(files, B, L, seed)  # validate sizes before training starts

    def batches(start: int) -> Iterator[dict]:
        streams = [iter(SequenceBatches(files, B, L, seed, start_step=start)) for seed in seeds]
        for step in itertools.count(start):
            data = jax.tree.map(lambda *xs: np.stack(xs), *[next(s) for s in streams])
            yield {"data": data, "keys": fit_keys, "step": np.int32(step)}

    lrs = jnp.asarray([-m.learning_rate for m in members], jnp.float32)
    out = Path(out_dir)
    result = fit(
        jax.random.key(0),  # unused: each member's key travels in its batch
        loss_fn=functools.partial(_sweep_loss, model=model, **cfg.loss_kwargs),
        params=params,
        tx=optax.chain(optax.clip(cfg.grad_clip), optax.scale_by_adam(), _member_scale(lrs)),
        batches=batches, num_steps=cfg.steps, ckpt_dir=out / "ckpt",
        metrics_path=out / "metrics.jsonl", checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every, desc="mdnrnn", items_per_batch=L, progress=progress,
        nan_hint="lower the sweep's --mdnrnn-learning-rates and rerun",
    )
    last = result.history[-1] if result.history else {}
    rows = []
    for k, m in enumerate(members):
        member_params = jax.tree.map(lambda x, k=k: x[k], result.params)
        folder = out / "members" / str(k)
        if checkpoint.latest_step(folder) != result.step:
            checkpoint.save(folder, result.step, {"params": member_params},
                            {"step": result.step, **m.row()}, max_to_keep=1)
        rows.append({"member": k, **m.row(), "final_loss": last.get(f"loss_{k}"),
                     "final_z_nll": last.get(f"z_nll_{k}"),
                     "mdnrnn_id": checkpoint.tree_hash(member_params)})
    io.write_json(out / "members.json", {"model": {f: getattr(model, f) for f in MDNRNN_FIELDS},
                                         "steps": result.step, "rows": rows})
    return result, rows
