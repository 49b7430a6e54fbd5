"""dreamjax.train.fit on a tiny test-only linear regression model (not a fake of V or M: the
loop's contracts do not depend on the model)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamjax import checkpoint
from dreamjax.train import NonFiniteLossError, fit

W_TRUE = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)


def _batch(i: int, poison_at: int | None = None) -> dict:
    rng = np.random.default_rng([7, i])
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = x @ W_TRUE + 0.01 * rng.normal(size=(8, 1)).astype(np.float32)
    return {"x": x, "y": y, "poison": np.float32(1.0 if i == poison_at else 0.0)}


def _batches(poison_at=None, stop_at=None):
    """batches(start) for fit; `stop_at` simulates a kill when batch `stop_at` is requested."""

    def make(start):
        i = start
        while True:
            if i == stop_at:
                raise KeyboardInterrupt
            yield _batch(i, poison_at)
            i += 1

    return make


def _loss_fn(params, batch, key):
    """MSE with key-dependent input dropout, so the per-step key matters for the result."""
    keep = jax.random.bernoulli(key, 0.95, batch["x"].shape)
    pred = (batch["x"] * keep / 0.95) @ params["w"] + params["b"]
    mse = jnp.mean((pred - batch["y"]) ** 2)
    loss = jnp.where(batch["poison"] > 0, jnp.nan, mse)
    return loss, {"mse": mse}


def _params():
    return {"w": jnp.zeros((4, 1)), "b": jnp.zeros((1,))}


def _fit(tmp_path, name, num_steps, **kw):
    args = dict(
        loss_fn=_loss_fn,
        params=_params(),
        tx=optax.adam(0.05),
        batches=_batches(),
        num_steps=num_steps,
        ckpt_dir=tmp_path / name / "ckpt",
        metrics_path=tmp_path / name / "metrics.jsonl",
        checkpoint_every=3,
        log_every=1,
        desc=name,
        progress=False,
    )
    args.update(kw)
    return fit(jax.random.key(0), **args)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_decreases_and_metrics_written(tmp_path):
    res = _fit(tmp_path, "a", 60, log_every=10, checkpoint_every=20, items_per_batch=2)
    assert res.step == 60
    rows = _lines(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows == res.history
    assert rows[-1]["loss"] < 0.2 * rows[0]["loss"]
    for r in rows:
        assert set(r) >= {"step", "loss", "mse", "grad_norm", "elapsed_s", "items_per_s"}
        assert r["items_per_s"] > 0
    assert checkpoint.all_steps(tmp_path / "a" / "ckpt") == [20, 40, 60]
    saved = checkpoint.restore_params(tmp_path / "a" / "ckpt")
    assert checkpoint.tree_hash(saved) == checkpoint.tree_hash(res.params)


def test_kill_and_resume_is_bit_identical(tmp_path):
    full = _fit(tmp_path, "full", 10)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed", 10, batches=_batches(stop_at=7))
    ckpt = tmp_path / "resumed" / "ckpt"
    metrics = tmp_path / "resumed" / "metrics.jsonl"
    assert checkpoint.latest_step(ckpt) == 6
    assert [r["step"] for r in _lines(metrics)] == [1, 2, 3, 4, 5, 6, 7]  # 7: past the ckpt
    res = _fit(tmp_path, "resumed", 10)  # a new call resumes from step 6
    assert res.step == 10
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(res.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert checkpoint.tree_hash(full.opt_state) == checkpoint.tree_hash(res.opt_state)
    rows = _lines(metrics)
    assert [r["step"] for r in rows] == list(range(1, 11))
    full_rows = _lines(tmp_path / "full" / "metrics.jsonl")
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows]
    assert res.history == rows


def test_finished_run_is_not_retrained(tmp_path):
    first = _fit(tmp_path, "done", 4)
    again = _fit(tmp_path, "done", 4, batches=_batches(stop_at=0))  # would raise if iterated
    assert checkpoint.tree_hash(again.params) == checkpoint.tree_hash(first.params)
    assert [r["step"] for r in again.history] == [1, 2, 3, 4]


def test_resume_with_another_key_is_refused(tmp_path):
    _fit(tmp_path, "k", 3)
    with pytest.raises(ValueError, match="another key"):
        fit(jax.random.key(1), loss_fn=_loss_fn, params=_params(), tx=optax.adam(0.05),
            batches=_batches(), num_steps=6, ckpt_dir=tmp_path / "k" / "ckpt",
            metrics_path=None, checkpoint_every=3, log_every=1, progress=False)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    # batch 7 is used by update 8; log every 5 and checkpoint every 3: the NaN is found at the
    # step-9 boundary, before the step-9 checkpoint would be written.
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 8 ") as err:
        _fit(tmp_path, "nan", 20, batches=_batches(poison_at=7), log_every=5)
    assert "\n" not in str(err.value)
    ckpt = tmp_path / "nan" / "ckpt"
    assert checkpoint.latest_step(ckpt) == 6
    state, meta = checkpoint.restore(ckpt, {"params": _params(),
                                            "opt_state": optax.adam(0.05).init(_params())})
    assert meta["step"] == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
    assert [r["step"] for r in _lines(tmp_path / "nan" / "metrics.jsonl")] == [5]


def test_running_out_of_batches_is_an_error(tmp_path):
    def short(start):
        return iter([_batch(i) for i in range(start, 3)])

    with pytest.raises(ValueError, match="ran out after 3 batches; 5 needed"):
        _fit(tmp_path, "short", 5, batches=short, ckpt_dir=None, metrics_path=None)


def test_callers_params_are_not_donated(tmp_path):
    params = _params()
    _fit(tmp_path, "don", 2, params=params, ckpt_dir=None)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.zeros((4, 1)))
