"""The V and M training stages: each builds its model, batches and loss, runs the one training
loop (`dreamjax.train.fit`) into its stage folder and writes the final params and `DONE.json`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax import checkpoint, io
from dreamjax.agent import check_shapes
from dreamjax.config import MDNRNNConfig, VAEConfig
from dreamjax.data.batches import FrameBatches, SequenceBatches, TBPTTBatches
from dreamjax.data.episodes import list_episodes, load_series
from dreamjax.errors import ArtifactError, ConfigError
from dreamjax.models.mdnrnn import (
    MDNRNN,
    MDNRNN_FIELDS,
    init_mdnrnn,
    mdnrnn_carry_loss_fn,
    mdnrnn_loss_fn,
)
from dreamjax.models.vae import ConvVAE, init_vae, vae_loss_fn
from dreamjax.train import TrainResult, fit, key_words


def data_seed(key: jax.Array) -> int:
    """A data-order seed in [0, 2^31) derived from a key (on the host: nothing to compile)."""
    return int(np.random.default_rng(key_words(key)).integers(0, 2**31 - 1))


def _finish(out: Path, result: TrainResult, info: dict) -> dict:
    """Save the final params as their own checkpoint (`out/params`) and write `out/DONE.json`."""
    if checkpoint.latest_step(out / "params") != result.step:
        checkpoint.save(out / "params", result.step, {"params": result.params},
                        {"step": result.step}, max_to_keep=1)
    last = result.history[-1] if result.history else {}
    done = {
        **info,
        "checkpoint": "params",
        "steps": result.step,
        "final": {k: v for k, v in last.items() if k not in ("step", "elapsed_s")},
        "wall_s": last.get("elapsed_s"),
    }
    io.write_json(out / "DONE.json", done)
    return done


def _fit_stage(key: jax.Array, out: Path, cfg: VAEConfig | MDNRNNConfig, desc: str,
               **kwargs) -> TrainResult:
    """`fit` into a stage folder: `out/ckpt` (resumable state), `out/metrics.jsonl`, the
    stage's checkpoint and log intervals, and a NaN hint naming its learning-rate flag."""
    return fit(
        key,
        ckpt_dir=out / "ckpt",
        metrics_path=out / "metrics.jsonl",
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        desc=desc,
        nan_hint=f"lower --{desc}.learning-rate (now {cfg.learning_rate:g}) and rerun",
        **kwargs,
    )


def train_vae(
    key: jax.Array,
    episodes_dir: str | Path,
    out_dir: str | Path,
    cfg: VAEConfig,
    *,
    progress: bool = True,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train V on every frame in `episodes_dir` (PAPER.md §1.3: Adam, constant lr, no clipping).

    num_steps = ceil(epochs * total_frames / batch_size). Writes `out_dir/ckpt` (resumable
    training state), `out_dir/metrics.jsonl`, `out_dir/params` (final params, a checkpoint
    readable by `checkpoint.restore_params`) and, last, `out_dir/DONE.json` with steps, final
    losses, wall time, `vae_id` (= `checkpoint.tree_hash(params)`) and the model config.
    """
    files = list_episodes(episodes_dir)
    if not files:
        raise ArtifactError(f"{episodes_dir}: no ep_XXXXXX.npz episodes to train V on; rerun the "
                            "collect stage")
    k_init, k_data, k_fit = jax.random.split(key, 3)
    seed = data_seed(k_data)
    total_frames = FrameBatches(files, cfg.batch_size, seed, cfg.shuffle_episodes).num_frames
    num_steps = max(1, math.ceil(cfg.epochs * total_frames / cfg.batch_size))
    model = ConvVAE(z_dim=cfg.z_dim)
    out = Path(out_dir)

    def batches(start: int) -> Iterator[np.ndarray]:
        return iter(FrameBatches(files, cfg.batch_size, seed, cfg.shuffle_episodes,
                                 start_step=start))

    result = _fit_stage(
        k_fit, out, cfg, "vae",
        loss_fn=functools.partial(vae_loss_fn, model=model, kl_tolerance=cfg.kl_tolerance),
        params=jax.jit(init_vae, static_argnums=1)(k_init, cfg.z_dim),  # one compile
        tx=optax.adam(cfg.learning_rate),
        batches=batches,
        num_steps=num_steps,
        progress=progress,
        tensorboard_dir=tensorboard_dir,
    )
    _finish(out, result, {
        "stage": "vae",
        "vae_id": checkpoint.tree_hash(result.params),
        "model": {"z_dim": cfg.z_dim},
        "frames": total_frames,
        "episodes": len(files),
    })
    return result


def ensemble_loss(loss_fn: Callable, num_members: int, with_carry: bool) -> Callable:
    """K independent Ms as one loss: `loss_fn` vmapped over params (and carry) stacked on a
    leading K axis, every member on the same batch with its own key `split(key, K)[k]`.

    The loss is the members' sum, so each member's gradient (and, with elementwise clipping
    and Adam, its update) is the one it would get alone; metrics are the members' means.
    """

    def reduce(loss, metrics):
        return jnp.sum(loss), jax.tree.map(jnp.mean, metrics)

    if with_carry:
        def carry_loss(params, carry, batch, key):
            keys = jax.random.split(key, num_members)
            loss, (metrics, carry) = jax.vmap(loss_fn, in_axes=(0, 0, None, 0))(
                params, carry, batch, keys)
            loss, metrics = reduce(loss, metrics)
            return loss, (metrics, carry)

        return carry_loss

    def window_loss(params, batch, key):
        keys = jax.random.split(key, num_members)
        return reduce(*jax.vmap(loss_fn, in_axes=(0, None, 0))(params, batch, keys))

    return window_loss


def train_mdnrnn(
    key: jax.Array,
    series_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: MDNRNNConfig,
    z_dim: int,
    *,
    action_dim: int = 3,
    restart_input: bool = False,
    init_params: Any = None,
    progress: bool = True,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train M on the latent series in `series_dir` (one folder or several, whose episodes are
    pooled) (PAPER.md §1.4; §2.4 with `cfg.tbptt`).

    optax.chain(clip(grad_clip) by value, adam(lr)), `cfg.steps` steps, one loss
    (`mdnrnn.mdnrnn_carry_loss_fn`). Without `tbptt`, batches are `data.SequenceBatches`
    windows starting from the zero state (`mdnrnn_loss_fn`); with it, `TBPTTBatches` chunks
    with the LSTM state carried across chunks and reset where an episode starts.
    `restart_input` (Doom) needs `tbptt`. With `cfg.ensemble` = K > 1, K Ms train as one
    program (`ensemble_loss`) from K initialisations; their params are stacked (K, ...).
    `init_params` (e.g. the previous round's M, stacked for an ensemble) replaces the
    initialisation: fine-tuning. Writes `out_dir/ckpt`, `out_dir/metrics.jsonl`,
    `out_dir/params` and, last, `out_dir/DONE.json` with the model's MDNRNN fields under
    "model", "ensemble", `mdnrnn_id` and the series' `vae_id`.
    """
    dirs = [series_dir] if isinstance(series_dir, str | Path) else list(series_dir)
    files = [f for d in dirs for f in list_episodes(d)]
    if not files:
        raise ArtifactError(f"{dirs[0]}: no ep_XXXXXX.npz series to train M on; rerun the "
                            "encode stage")
    z_found = load_series(files[0])["mu"].shape[1]
    if z_found != z_dim:
        raise ConfigError(f"{files[0]}: series have Z = {z_found}, expected z_dim={z_dim}; "
                          "rerun the encode stage with this V")
    if restart_input and not cfg.tbptt:
        raise ConfigError("train_mdnrnn: restart_input=True needs --mdnrnn.tbptt (random "
                          "windows carry no episode-start flags)")
    k_init, k_data, k_fit = jax.random.split(key, 3)
    seed = data_seed(k_data)
    model = MDNRNN(z_dim=z_dim, action_dim=action_dim, hidden=cfg.hidden, n_mix=cfg.n_mix,
                   restart_input=restart_input, reward_head=cfg.reward_head,
                   done_head=cfg.done_head)
    B, L = cfg.batch_size, cfg.seq_len
    if cfg.tbptt:
        TBPTTBatches(files, B, L, seed)  # validate sizes before training starts

        def batches(start: int) -> Iterator[dict]:
            return iter(TBPTTBatches(files, B, L, seed, start_step=start))

        loss_fn = functools.partial(mdnrnn_carry_loss_fn, model=model, **cfg.loss_kwargs)
        carry = model.initial_state((B,))
    else:
        def batches(start: int) -> Iterator[dict]:
            return iter(SequenceBatches(files, B, L, seed, start_step=start))

        loss_fn = functools.partial(mdnrnn_loss_fn, model=model, **cfg.loss_kwargs)
        carry = None
    K = cfg.ensemble
    init = jax.jit(init_mdnrnn, static_argnums=1)  # one compile
    if K > 1:
        loss_fn = ensemble_loss(loss_fn, K, carry is not None)
        carry = None if carry is None else jax.tree.map(lambda x: jnp.stack([x] * K), carry)
        params = jax.vmap(init, in_axes=(0, None))(jax.random.split(k_init, K), model)
    else:
        params = init(k_init, model)
    if init_params is not None:
        check_shapes(init_params, params, "train_mdnrnn: init_params", f"M x {K}")
        params = init_params
    out = Path(out_dir)
    result = _fit_stage(
        k_fit, out, cfg, "mdnrnn",
        loss_fn=loss_fn,
        params=params,
        tx=optax.chain(optax.clip(cfg.grad_clip), optax.adam(cfg.learning_rate)),
        batches=batches,
        num_steps=cfg.steps,
        items_per_batch=L,
        progress=progress,
        tensorboard_dir=tensorboard_dir,
        carry=carry,
    )
    manifest = Path(dirs[0]) / "series.json"
    vae_id = io.read_json(manifest).get("vae_id") if manifest.is_file() else None
    _finish(out, result, {
        "stage": "mdnrnn",
        "mdnrnn_id": checkpoint.tree_hash(result.params),
        "vae_id": vae_id,
        "model": {f: getattr(model, f) for f in MDNRNN_FIELDS},
        "ensemble": K,
        "tbptt": cfg.tbptt,
        "episodes": len(files),
    })
    return result
