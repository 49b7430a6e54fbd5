"""The one training loop V and M share: a jitted step, streaming batches, checkpoints, metrics,
resume and a NaN guard; plus the two stage wrappers `train_vae` and `train_mdnrnn`.

Step numbering: "step n" is the state after n optimizer updates. Update n (1-based) consumes the
batch with index n-1 from `batches(start_step)` (whose first batch has index `start_step`) and
the key `fold_in(key, n-1)`, and its loss is logged as step n. A checkpoint at step n holds the
state after update n, so a run resumed from it continues with batch n and key `fold_in(key, n)`:
a killed-and-resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from dreamjax import checkpoint, io
from dreamjax.config import MDNRNNConfig, VAEConfig
from dreamjax.errors import NonFiniteLossError

PyTree = Any
LossFn = Callable[..., tuple[jax.Array, Any]]


@dataclass(frozen=True)
class TrainResult:
    """Final state of `fit`; `history` holds every metrics line of the run (resumed ones too)."""

    params: PyTree
    opt_state: PyTree
    step: int
    history: list[dict] = field(default_factory=list)
    carry: PyTree | None = None


def _train_state(params: PyTree, opt_state: PyTree, carry: PyTree | None) -> dict:
    """What a checkpoint holds: {"params", "opt_state"(, "carry")}."""
    state = {"params": params, "opt_state": opt_state}
    if carry is not None:
        state["carry"] = carry
    return state


def _key_data(key: jax.Array) -> list[int]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def _make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, with_carry: bool):
    """jit(params, opt_state, carry, batch, key, step) -> (params, opt_state, carry, loss,
    metrics); donates params, opt_state and carry. `metrics` gains `grad_norm` (global L2 norm
    of the gradient). Without a carry, `carry` is None and loss_fn takes no carry."""

    def train_step(params, opt_state, carry, batch, key, step):
        step_key = jax.random.fold_in(key, step)
        if with_carry:
            def loss(p):
                value, (metrics, new_carry) = loss_fn(p, carry, batch, step_key)
                return value, (metrics, new_carry)
        else:
            def loss(p):
                value, metrics = loss_fn(p, batch, step_key)
                return value, (metrics, None)
        (value, (metrics, carry)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        carry = jax.lax.stop_gradient(carry)
        return params, opt_state, carry, value, metrics

    return jax.jit(train_step, donate_argnums=(0, 1, 2))


def _batch_items(batch: PyTree) -> int:
    """Leading dimension of the batch's first non-scalar leaf."""
    for leaf in jax.tree.leaves(batch):
        if np.ndim(leaf) > 0:
            return int(np.shape(leaf)[0])
    raise ValueError("fit: a batch must be a pytree of arrays with a leading batch dimension")


def _tensorboard_writer(logdir: str | Path | None):
    if logdir is None:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise ImportError(
            f"tensorboard_dir={logdir} needs tensorboardX: pip install 'dreamjax[tensorboard]'"
        ) from e
    return SummaryWriter(str(logdir))


def fit(
    key: jax.Array,
    *,
    loss_fn: LossFn,
    params: PyTree,
    tx: optax.GradientTransformation,
    batches: Callable[[int], Iterable[PyTree]],
    num_steps: int,
    ckpt_dir: str | Path | None,
    metrics_path: str | Path | None,
    checkpoint_every: int,
    log_every: int,
    desc: str = "train",
    items_per_batch: int = 1,
    max_to_keep: int = checkpoint.DEFAULT_MAX_TO_KEEP,
    progress: bool = True,
    tensorboard_dir: str | Path | None = None,
    carry: PyTree | None = None,
) -> TrainResult:
    """Train `params` with `tx` on `loss_fn(params, batch, key) -> (loss, metrics)`.

    `batches(start_step)` returns an iterable of batches starting at batch index `start_step`
    (same data for the same index, so a resumed run sees the same data order). If `ckpt_dir` holds
    a checkpoint, training resumes from it (params, opt_state, step; `params` is then only the
    restore template), the metrics JSONL is cut back to that step and appended to. A checkpoint is
    written every `checkpoint_every` steps and at the end; a metrics line (step, loss and each
    metric averaged over the steps since the last line, grad_norm, elapsed_s, items_per_s)
    every `log_every` steps and at the end. Items are `batch.shape[0] * items_per_batch`;
    `loss_fn`'s metrics must be scalars. The first line's items_per_s includes compile time.

    NaN guard: device values are fetched only at log and checkpoint boundaries (no per-step
    host sync). At every boundary, before anything is saved, every update since the previous
    boundary is checked; the first update whose loss or gradient norm is NaN/inf raises
    `NonFiniteLossError` naming its step. So a non-finite update n is reported at the first
    multiple of `log_every` or `checkpoint_every` (or `num_steps`) that is >= n, no checkpoint
    after step n-1 is ever written, and the last good checkpoint stays the latest.

    Carried state (truncated BPTT): with `carry` given, `loss_fn(params, carry, batch, key) ->
    (loss, (metrics, new_carry))`; `new_carry` (gradient stopped) is fed to the next step, saved
    in checkpoints and restored on resume, and returned in `TrainResult.carry`.

    The caller's `params` (and `carry`) are copied, not donated. `ckpt_dir=None` disables
    checkpoints and resume; `metrics_path=None` disables the JSONL file.
    """
    if num_steps < 0 or checkpoint_every < 1 or log_every < 1 or items_per_batch < 1:
        raise ValueError(
            f"fit({desc}): need num_steps >= 0 and checkpoint_every, log_every, items_per_batch"
            f" >= 1; got {num_steps}, {checkpoint_every}, {log_every}, {items_per_batch}"
        )
    key_data = _key_data(key)
    with_carry = carry is not None
    params = jax.tree.map(jnp.array, params)  # private copies: the train step donates them
    carry = jax.tree.map(jnp.array, carry) if with_carry else None
    opt_state = tx.init(params)
    start, elapsed_before = 0, 0.0
    if ckpt_dir is not None and checkpoint.latest_step(ckpt_dir) is not None:
        state, meta = checkpoint.restore(ckpt_dir, _train_state(params, opt_state, carry))
        params, opt_state = state["params"], state["opt_state"]
        carry = state.get("carry")
        start = int(meta.get("step", checkpoint.latest_step(ckpt_dir)))
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        if meta.get("key") is not None and meta["key"] != key_data:
            raise ValueError(
                f"{ckpt_dir}: checkpoint was trained with another key; resume with the same "
                "seed or delete the folder"
            )
        if start > num_steps:
            raise ValueError(f"{ckpt_dir}: checkpoint is at step {start} > num_steps={num_steps}")

    metrics_file = Path(metrics_path) if metrics_path is not None else None
    history: list[dict] = []
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        history = io.truncate_jsonl(metrics_file, "step", start)
    writer = _tensorboard_writer(tensorboard_dir)

    def save(step: int, last: dict) -> None:
        if ckpt_dir is None or checkpoint.latest_step(ckpt_dir) == step:
            return
        meta = {
            "step": step,
            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            "key": key_data,
            "desc": desc,
            "metrics": last,
        }
        state = _train_state(params, opt_state, carry)
        checkpoint.save(ckpt_dir, step, state, meta, max_to_keep=max_to_keep)

    train_step = _make_train_step(loss_fn, tx, with_carry)
    t_start = time.perf_counter()
    pending: list[tuple[int, jax.Array, dict]] = []  # device values since the last check
    acc: dict[str, float] = {}
    acc_steps, acc_items, t_log = 0, 0, t_start
    last_row: dict = {}
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, unit="step",
               dynamic_ncols=True)
    it: Iterator | None = None
    try:
        if start < num_steps:
            it = iter(batches(start))
        for step in range(start, num_steps):
            try:
                batch = next(it)
            except StopIteration:
                raise ValueError(
                    f"fit({desc}): batches({start}) ran out after {step - start} batches; "
                    f"{num_steps - start} needed"
                ) from None
            acc_items += _batch_items(batch) * items_per_batch
            params, opt_state, carry, loss, metrics = train_step(
                params, opt_state, carry, batch, key, np.int32(step)
            )
            done = step + 1
            pending.append((done, loss, metrics))
            bar.update(1)
            at_log = done % log_every == 0 or done == num_steps
            at_ckpt = done % checkpoint_every == 0 or done == num_steps
            if not (at_log or at_ckpt):
                continue
            for n, loss_v, metrics_v in jax.device_get(pending):
                values = {"loss": float(loss_v), **{k: float(v) for k, v in metrics_v.items()}}
                if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
                    raise NonFiniteLossError(
                        f"non-finite loss at step {n} in {desc} (loss={values['loss']}, "
                        f"grad_norm={values['grad_norm']}); last checkpoint: "
                        f"{checkpoint.latest_step(ckpt_dir) if ckpt_dir else None} in {ckpt_dir}"
                    )
                for k, v in values.items():
                    acc[k] = acc.get(k, 0.0) + v
                acc_steps += 1
            pending.clear()
            if at_log:
                now = time.perf_counter()
                last_row = {
                    "step": done,
                    **{k: v / acc_steps for k, v in acc.items()},
                    "elapsed_s": round(elapsed_before + now - t_start, 3),
                    "items_per_s": acc_items / max(now - t_log, 1e-9),
                }
                history.append(last_row)
                if metrics_file is not None:
                    io.append_jsonl(metrics_file, [last_row])
                if writer is not None:
                    for k, v in last_row.items():
                        if k != "step":
                            writer.add_scalar(f"{desc}/{k}", v, done)
                bar.set_postfix(loss=f"{last_row['loss']:.4g}",
                                items_s=f"{last_row['items_per_s']:.4g}")
                acc, acc_steps, acc_items, t_log = {}, 0, 0, now
            if at_ckpt:
                save(done, last_row)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        close = getattr(it, "close", None)
        if callable(close):
            close()
    if ckpt_dir is not None and start == num_steps == 0:
        save(0, last_row)
    return TrainResult(params=params, opt_state=opt_state, step=num_steps, history=history,
                       carry=carry)


# ----------------------------------------------------------------------------- stage wrappers


def _seed_from_key(key: jax.Array) -> int:
    """A data-order seed in [0, 2^31) derived from a key (on the host: nothing to compile)."""
    return int(np.random.default_rng(_key_data(key)).integers(0, 2**31 - 1))


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
    from dreamjax.data.batches import FrameBatches
    from dreamjax.data.episodes import list_episodes
    from dreamjax.models.vae import ConvVAE, init_vae, vae_loss_fn

    files = list_episodes(episodes_dir)
    if not files:
        raise FileNotFoundError(f"{episodes_dir}: no ep_XXXXXX.npz episodes to train V on")
    k_init, k_data, k_fit = jax.random.split(key, 3)
    seed = _seed_from_key(k_data)
    total_frames = FrameBatches(files, cfg.batch_size, seed, cfg.shuffle_episodes).num_frames
    num_steps = max(1, math.ceil(cfg.epochs * total_frames / cfg.batch_size))
    model = ConvVAE(z_dim=cfg.z_dim)
    out = Path(out_dir)

    def batches(start: int) -> Iterator[np.ndarray]:
        return iter(FrameBatches(files, cfg.batch_size, seed, cfg.shuffle_episodes,
                                 start_step=start))

    result = fit(
        k_fit,
        loss_fn=functools.partial(vae_loss_fn, model=model, kl_tolerance=cfg.kl_tolerance),
        params=jax.jit(init_vae, static_argnums=1)(k_init, cfg.z_dim),  # one compile
        tx=optax.adam(cfg.learning_rate),
        batches=batches,
        num_steps=num_steps,
        ckpt_dir=out / "ckpt",
        metrics_path=out / "metrics.jsonl",
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        desc="vae",
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


def tbptt_loss_fn(params, carry, batch, key, *, model, done_weight=10.0, reward_weight=1.0):
    """M's loss on one `TBPTTBatches` chunk, starting from the carried `LSTMState` `carry`.

    Same terms as `mdnrnn.mdnrnn_loss_fn` (z NLL on a fresh z ~ N(mu, sigma²), reward and done
    heads), but the state is zeroed before the chunk when `reset` and inside it wherever
    `restarts` marks an episode start, whatever `model.restart_input` (which only adds the flag
    as an input). Returns (loss, (metrics, final state)).
    """
    from dreamjax.models.mdnrnn import MDNRNN, LSTMState, done_loss, mdn_log_prob, reward_loss

    mu = jnp.asarray(batch["mu"], jnp.float32)
    B, T1, Z = mu.shape
    T = T1 - 1
    z = mu + jnp.exp(jnp.asarray(batch["logvar"], jnp.float32) / 2.0) * jax.random.normal(
        key, mu.shape, jnp.float32)
    actions = jnp.asarray(batch["actions"], jnp.float32)
    restarts = jnp.asarray(batch["restarts"], jnp.float32)
    mask = jnp.asarray(batch["mask"], jnp.float32)
    assert mask.shape == (B, T) and restarts.shape == (B, T1), (mask.shape, restarts.shape)
    keep0 = (~jnp.asarray(batch["reset"], bool))[:, None].astype(jnp.float32)
    state = LSTMState(c=carry.c * keep0, h=carry.h * keep0)

    def body(state, xs):
        z_t, a_t, r_t = xs  # (B, Z), (B, A), (B,)
        keep = (r_t <= 0.5)[:, None].astype(jnp.float32)
        state = LSTMState(c=state.c * keep, h=state.h * keep)
        extra = (r_t,) if model.restart_input else ()
        return model.apply(params, state, z_t, a_t, *extra, method=MDNRNN.step)

    xs = (jnp.swapaxes(z[:, :T], 0, 1), jnp.swapaxes(actions[:, :T], 0, 1),
          jnp.swapaxes(restarts[:, :T], 0, 1))
    state, out = jax.lax.scan(body, state, xs)
    out = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)  # fields (B, T, ...)
    z_nll = -jnp.sum(mdn_log_prob(out, z[:, 1:]) * mask[..., None]) / (
        jnp.maximum(jnp.sum(mask), 1.0) * Z)
    loss, metrics = z_nll, {"z_nll": z_nll}
    if model.reward_head:
        r_loss = reward_loss(out.reward_parts, jnp.asarray(batch["rewards"])[:, :T], mask)
        loss, metrics["reward_loss"] = loss + reward_weight * r_loss, r_loss
    if model.done_head:
        d_loss = done_loss(out.done_logit, jnp.asarray(batch["dones"])[:, :T], mask, done_weight)
        loss, metrics["done_loss"] = loss + d_loss, d_loss
    return loss, (metrics, state)


def train_mdnrnn(
    key: jax.Array,
    series_dir: str | Path,
    out_dir: str | Path,
    cfg: MDNRNNConfig,
    z_dim: int,
    *,
    action_dim: int = 3,
    restart_input: bool = False,
    progress: bool = True,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train M on the latent series in `series_dir` (PAPER.md §1.4; §2.4 with `cfg.tbptt`).

    optax.chain(clip(grad_clip) by value, adam(lr)), `cfg.steps` steps. Without `tbptt`, batches
    are `data.SequenceBatches` windows starting from the zero state (`mdnrnn.mdnrnn_loss_fn`);
    with it, `TBPTTBatches` chunks with the LSTM state carried across chunks
    (`tbptt_loss_fn`). `restart_input` (Doom) needs `tbptt`. Writes `out_dir/ckpt`,
    `out_dir/metrics.jsonl`, `out_dir/params` and, last, `out_dir/DONE.json` with the model's
    MDNRNN fields under "model", `mdnrnn_id` and the series' `vae_id`.
    """
    from dreamjax.data.batches import SequenceBatches, TBPTTBatches
    from dreamjax.data.episodes import list_episodes, load_series
    from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn, mdnrnn_loss_fn

    files = list_episodes(series_dir)
    if not files:
        raise FileNotFoundError(f"{series_dir}: no ep_XXXXXX.npz series to train M on")
    z_found = load_series(files[0])["mu"].shape[1]
    if z_found != z_dim:
        raise ValueError(f"{files[0]}: series have Z = {z_found}, expected z_dim={z_dim}")
    if restart_input and not cfg.tbptt:
        raise ValueError("train_mdnrnn: restart_input=True needs --mdnrnn.tbptt (random windows "
                         "carry no episode-start flags)")
    k_init, k_data, k_fit = jax.random.split(key, 3)
    seed = _seed_from_key(k_data)
    model = MDNRNN(z_dim=z_dim, action_dim=action_dim, hidden=cfg.hidden, n_mix=cfg.n_mix,
                   restart_input=restart_input, reward_head=cfg.reward_head,
                   done_head=cfg.done_head)
    B, L = cfg.batch_size, cfg.seq_len
    if cfg.tbptt:
        TBPTTBatches(files, B, L, seed)  # validate sizes before training starts

        def batches(start: int) -> Iterator[dict]:
            return iter(TBPTTBatches(files, B, L, seed, start_step=start))

        loss_fn = functools.partial(tbptt_loss_fn, model=model, done_weight=cfg.done_weight)
        carry = model.initial_state((B,))
    else:
        def batches(start: int) -> Iterator[dict]:
            return iter(SequenceBatches(files, B, L, seed, start_step=start))

        loss_fn = functools.partial(mdnrnn_loss_fn, model=model, done_weight=cfg.done_weight)
        carry = None
    out = Path(out_dir)
    result = fit(
        k_fit,
        loss_fn=loss_fn,
        params=jax.jit(init_mdnrnn, static_argnums=1)(k_init, model),  # one compile
        tx=optax.chain(optax.clip(cfg.grad_clip), optax.adam(cfg.learning_rate)),
        batches=batches,
        num_steps=cfg.steps,
        ckpt_dir=out / "ckpt",
        metrics_path=out / "metrics.jsonl",
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        desc="mdnrnn",
        items_per_batch=L,
        progress=progress,
        tensorboard_dir=tensorboard_dir,
        carry=carry,
    )
    manifest = Path(series_dir) / "series.json"
    vae_id = json.loads(manifest.read_text()).get("vae_id") if manifest.is_file() else None
    fields = ("z_dim", "action_dim", "hidden", "n_mix", "restart_input", "reward_head",
              "done_head")
    _finish(out, result, {
        "stage": "mdnrnn",
        "mdnrnn_id": checkpoint.tree_hash(result.params),
        "vae_id": vae_id,
        "model": {f: getattr(model, f) for f in fields},
        "tbptt": cfg.tbptt,
        "episodes": len(files),
    })
    return result
