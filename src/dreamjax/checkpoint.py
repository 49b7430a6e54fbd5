"""Orbax checkpoints: save / restore / resume of a training state pytree plus JSON metadata.

A checkpoint folder holds one sub-folder per saved step (`<ckpt_dir>/<step>/`), each with two
orbax items: `state` (the arrays, e.g. `{"params", "opt_state"}`) and `meta` (a JSON dict).
Orbax writes a step into `<step>.orbax-checkpoint-tmp-<time>/` and renames it when complete, so a
write killed half-way leaves only a temporary folder that every function here ignores: the
previous step stays the latest one. A step that exists but cannot be read is skipped by
`restore_readable`, which moves it aside and falls back to the previous one. Saving is
synchronous (the arrays are on disk when `save` returns), which keeps buffer donation in the
training loop safe. Leaves must be arrays or scalars; store a typed PRNG key as
`jax.random.key_data(key)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from dreamjax.errors import ArtifactError

PyTree = Any

DEFAULT_MAX_TO_KEEP = 3


class CheckpointError(ArtifactError, RuntimeError):
    """A checkpoint folder that exists but cannot be read (corrupt, or another structure)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence orbax's INFO chatter (it logs through the `absl` logger) for one call."""
    logger = logging.getLogger("absl")
    old = logger.level
    logger.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(old)


def _handlers() -> dict:
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


def _manager(
    ckpt_dir: str | Path, *, read_only: bool, max_to_keep: int | None = None
) -> ocp.CheckpointManager:
    """A synchronous manager; `read_only` only means "do not create the folder" (orbax's own
    read-only mode warns on every open)."""
    path = Path(ckpt_dir).absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: checkpoint folder is not a directory")
    if read_only and not path.is_dir():
        raise FileNotFoundError(f"{path}: checkpoint folder does not exist")
    policy = checkpoint_managers.LatestN(n=max_to_keep) if max_to_keep else None
    options = ocp.CheckpointManagerOptions(
        create=not read_only,
        enable_async_checkpointing=False,
        preservation_policy=policy,
    )
    return ocp.CheckpointManager(path, options=options, item_handlers=_handlers())


MAX_CAUSE_CHARS = 160
"""Longest cause quoted in an error line (tensorstore appends kilobytes of spec JSON)."""


def _first_line(err: BaseException) -> str:
    """`Type: first line of the message`, without tensorstore's spec dump, capped in length."""
    text = str(err).strip().splitlines()
    line = (text[0] if text else "").split(" [tensorstore_spec", 1)[0]
    if len(line) > MAX_CAUSE_CHARS:
        line = line[: MAX_CAUSE_CHARS - 3] + "..."
    return f"{type(err).__name__}: {line}"


def save(
    ckpt_dir: str | Path,
    step: int,
    state_pytree: PyTree,
    metadata: dict | None = None,
    *,
    max_to_keep: int | None = DEFAULT_MAX_TO_KEEP,
) -> Path:
    """Write `state_pytree` (arrays) and `metadata` (JSON dict) as checkpoint `step`.

    Keeps the newest `max_to_keep` steps (None keeps all). Returns the step's folder. Raises
    ValueError if the step already exists or the metadata is not JSON-serialisable.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f"{ckpt_dir}: checkpoint step must be >= 0, got {step}")
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"{ckpt_dir}: checkpoint metadata is not JSON-serialisable: {e}") from e
    with _quiet(), _manager(ckpt_dir, read_only=False, max_to_keep=max_to_keep) as mgr:
        if step in mgr.all_steps():
            raise ValueError(f"{mgr.directory}: checkpoint step {step} already exists")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_pytree), meta=ocp.args.JsonSave(meta)
        )
        mgr.save(step, args=args, force=True)
        mgr.wait_until_finished()
        return Path(mgr.directory) / str(step)


def all_steps(ckpt_dir: str | Path) -> list[int]:
    """Finished checkpoint steps in `ckpt_dir`, ascending ([] if the folder does not exist)."""
    if not Path(ckpt_dir).exists():
        return []
    with _quiet(), _manager(ckpt_dir, read_only=True) as mgr:
        return sorted(int(s) for s in mgr.all_steps())


def latest_step(ckpt_dir: str | Path) -> int | None:
    """The newest finished step in `ckpt_dir`, or None if there is none (or no folder)."""
    steps = all_steps(ckpt_dir)
    return steps[-1] if steps else None


def _resolve_step(ckpt_dir: str | Path, step: int | None) -> int:
    steps = all_steps(ckpt_dir)
    if not Path(ckpt_dir).is_dir():
        raise FileNotFoundError(f"{Path(ckpt_dir).absolute()}: checkpoint folder does not exist")
    if not steps:
        raise FileNotFoundError(f"{Path(ckpt_dir).absolute()}: no finished checkpoint in folder")
    if step is None:
        return steps[-1]
    if int(step) not in steps:
        raise FileNotFoundError(
            f"{Path(ckpt_dir).absolute()}: no checkpoint step {step} (have {steps})"
        )
    return int(step)


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    """Restore target for one leaf: its shape/dtype, placed like it (or on the default device)."""
    if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None:
        return x
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
    return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)


def _place_like(target: PyTree, sharding: Any) -> PyTree:
    """`target` with each leaf's restore sharding replaced by `sharding` (one `Sharding` for
    every leaf, or a pytree of them shaped like `target`)."""
    if isinstance(sharding, jax.sharding.Sharding):
        sharding = jax.tree.map(lambda _: sharding, target)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), _abstract(x).dtype, sharding=s),
        target, sharding)


def _restore(ckpt_dir: str | Path, step: int, target: PyTree | None,
             sharding: Any = None) -> tuple[PyTree, dict]:
    if target is not None and sharding is not None:
        target = _place_like(target, sharding)
    with _quiet(), _manager(ckpt_dir, read_only=True) as mgr:
        where = Path(mgr.directory) / str(step)
        try:
            if target is None:
                tree = mgr.item_metadata(step)["state"]
                if tree is None:
                    raise CheckpointError(f"{where}: checkpoint has no readable state")
                target = jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree.tree
                )
            abstract = jax.tree.map(_abstract, target)
            out = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except CheckpointError:
            raise
        except Exception as e:  # orbax raises many types; report one line naming the path
            raise CheckpointError(f"{where}: cannot restore checkpoint ({_first_line(e)})") from e
        return out.state, dict(out.meta or {})


def restore(
    ckpt_dir: str | Path, target_pytree: PyTree, step: int | None = None, *,
    sharding: Any = None,
) -> tuple[PyTree, dict]:
    """Restore step `step` (default: latest) onto the structure of `target_pytree`.

    Returns `(state, metadata)`. The leaves of `target_pytree` may be arrays or
    `jax.ShapeDtypeStruct`s; restored arrays are placed like the target's (default device for
    NumPy leaves), or with `sharding`: one `jax.sharding.Sharding` (e.g. a `NamedSharding` of a
    device mesh) for every leaf, or a pytree of them shaped like the target; each device reads
    only its shards. Missing folder/step -> FileNotFoundError, unreadable or mismatched
    checkpoint -> CheckpointError, each one line naming the path.
    """
    step = _resolve_step(ckpt_dir, step)
    return _restore(ckpt_dir, step, target_pytree, sharding)


def restore_readable(ckpt_dir: str | Path, target_pytree: PyTree) -> tuple[PyTree, dict, int]:
    """Restore the newest step that can be read: `(state, metadata, step)`.

    Each newer step that cannot be read (`CheckpointError`) is moved aside to
    `<ckpt_dir>/<step>.corrupt` (kept for inspection, no longer a step, so training can write
    that step again), with one warning line on stderr naming it. If no step is readable nothing
    is moved and `CheckpointError` names the folder and the first step's error.
    """
    steps = all_steps(ckpt_dir)
    if not steps:
        _resolve_step(ckpt_dir, None)  # the one-line FileNotFoundError for a missing/empty folder
    bad: list[tuple[int, CheckpointError]] = []
    for step in reversed(steps):
        try:
            state, meta = _restore(ckpt_dir, step, target_pytree)
        except CheckpointError as e:
            bad.append((step, e))
            continue
        for s, e in bad:
            moved = _move_aside(ckpt_dir, s)
            print(f"warning: {e}; moved it to {moved}, resuming from step {step}",
                  file=sys.stderr)
        return state, meta, step
    raise CheckpointError(
        f"{Path(ckpt_dir).absolute()}: no readable checkpoint (steps {steps}; newest: "
        f"{bad[0][1]})"
    )


def _move_aside(ckpt_dir: str | Path, step: int) -> Path:
    """Rename step `step`'s folder to `<step>.corrupt` (or `.corrupt.<n>` if that exists)."""
    src = Path(ckpt_dir).absolute() / str(step)
    dst, n = src.with_name(f"{step}.corrupt"), 1
    while dst.exists():
        dst, n = src.with_name(f"{step}.corrupt.{n}"), n + 1
    os.replace(src, dst)
    return dst


def restore_raw(ckpt_dir: str | Path, step: int | None = None) -> tuple[PyTree, dict]:
    """Restore without a target: the saved structure with dicts for mappings and lists for
    sequences (tuples and optax states come back as lists), arrays on the default device."""
    step = _resolve_step(ckpt_dir, step)
    return _restore(ckpt_dir, step, None)


def restore_params(ckpt_dir: str | Path, step: int | None = None) -> PyTree:
    """The `params` entry of a checkpoint saved as a dict with a `params` key, no target needed.

    Flax Linen params are nested dicts of arrays, which restore exactly without a target.
    """
    state, _ = restore_raw(ckpt_dir, step)
    if not isinstance(state, dict) or "params" not in state:
        raise CheckpointError(f"{Path(ckpt_dir).absolute()}: checkpoint state has no 'params'")
    return state["params"]


def tree_hash(pytree: PyTree) -> str:
    """sha256 (hex) of a pytree's leaf paths, dtypes, shapes and bytes.

    Identifies a trained model: equal for equal values whether the tree came from training or
    from a checkpoint (tuples and lists hash alike), different if any bit differs.
    """
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(pytree)
    for path, leaf in leaves:
        arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(jax.tree_util.keystr(path, simple=True, separator="/").encode())
        h.update(f"|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
