"""The one training loop V and M share: a jitted step, streaming batches, checkpoints, metrics,
resume (falling back past a corrupt checkpoint) and a NaN guard. The stages that call it
(`train_vae`, `train_mdnrnn`) are in `dreamjax.pipeline.training`.

Step numbering: "step n" is the state after n optimizer updates. Update n (1-based) consumes the
batch with index n-1 from `batches(start_step)` (whose first batch has index `start_step`) and
the key `fold_in(key, n-1)`, and its loss is logged as step n. A checkpoint at step n holds the
state after update n, so a run resumed from it continues with batch n and key `fold_in(key, n)`:
a killed-and-resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

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
from dreamjax.errors import ConfigError, NonFiniteLossError

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


def key_words(key: jax.Array) -> list[int]:
    """A PRNG key (typed or raw uint32) as a list of ints (JSON-able; a NumPy seed)."""
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


def _resume(ckpt_dir: str | Path, template: PyTree, desc: str) -> tuple[PyTree, dict, int]:
    """(state, meta, step) of the newest readable checkpoint; names the stage to rerun if none."""
    try:
        state, meta, step = checkpoint.restore_readable(ckpt_dir, template)
    except checkpoint.CheckpointError as e:
        raise checkpoint.CheckpointError(
            f"{e}; delete {ckpt_dir} and rerun the {desc} stage (it starts again from step 0)"
        ) from None
    return state, meta, int(meta.get("step", step))


def _nan_message(step: int, values: dict, desc: str, ckpt_dir: str | Path | None,
                 hint: str) -> str:
    """The NaN guard's line: where, the values, the checkpoint a rerun resumes from, what to do."""
    last = checkpoint.latest_step(ckpt_dir) if ckpt_dir is not None else None
    if last is None:
        where = "no checkpoint yet (a rerun starts from step 0)"
    else:
        where = (f"last good checkpoint: step {last} in {Path(ckpt_dir) / str(last)} "
                 f"(a rerun resumes from step {last})")
    return (f"non-finite loss at step {step} in {desc} (loss={values['loss']}, "
            f"grad_norm={values['grad_norm']}); {where}; {hint}")


def _batch_items(batch: PyTree) -> int:
    """Leading dimension of the batch's first non-scalar leaf."""
    for leaf in jax.tree.leaves(batch):
        if np.ndim(leaf) > 0:
            return int(np.shape(leaf)[0])
    raise ValueError("fit: a batch must be a pytree of arrays with a leading batch dimension")


def tensorboard_writer(logdir: str | Path | None):
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
    nan_hint: str = "lower the learning rate",
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
    `NonFiniteLossError`, one line naming `desc`, the step, the loss and gradient norm, the last
    good checkpoint (or that there is none yet) and what to do (`nan_hint`, e.g. the flag to
    lower). So a non-finite update n is reported at the first multiple of `log_every` or
    `checkpoint_every` (or `num_steps`) that is >= n, no checkpoint after step n-1 is ever
    written, and the last good checkpoint stays the latest: a rerun resumes from it.

    Corrupt checkpoint: if the newest step in `ckpt_dir` cannot be restored, it is moved aside
    (`checkpoint.restore_readable`, one warning line on stderr) and training resumes from the
    newest readable one; if none is readable, `checkpoint.CheckpointError` (an `ArtifactError`)
    names the folder and says to delete it and rerun `desc`.

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
    key_data = key_words(key)
    with_carry = carry is not None
    params = jax.tree.map(jnp.array, params)  # private copies: the train step donates them
    carry = jax.tree.map(jnp.array, carry) if with_carry else None
    opt_state = tx.init(params)
    start, elapsed_before = 0, 0.0
    if ckpt_dir is not None and checkpoint.latest_step(ckpt_dir) is not None:
        state, meta, start = _resume(ckpt_dir, _train_state(params, opt_state, carry), desc)
        params, opt_state = state["params"], state["opt_state"]
        carry = state.get("carry")
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        if meta.get("key") is not None and meta["key"] != key_data:
            raise ConfigError(
                f"{ckpt_dir}: checkpoint was trained with another key; resume with the same "
                "seed or delete the folder"
            )
        if start > num_steps:
            raise ConfigError(
                f"{ckpt_dir}: checkpoint is at step {start} > num_steps={num_steps}; raise the "
                f"step count or delete the folder to retrain {desc}"
            )

    metrics_file = Path(metrics_path) if metrics_path is not None else None
    history: list[dict] = []
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        history = io.truncate_jsonl(metrics_file, "step", start)
    writer = tensorboard_writer(tensorboard_dir)

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
                    raise NonFiniteLossError(_nan_message(n, values, desc, ckpt_dir, nan_hint))
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
