"""dreamjax.train.fit on a tiny test-only linear regression model (not a fake of V or M: the
loop's contracts do not depend on the model)."""

import functools
import gc
import json
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamjax import checkpoint
from dreamjax.errors import ArtifactError
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


def _read_scalars(folder):
    """{tag: [(step, value)]} from TensorBoard event files (TFRecord framing of Event protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_scalars_match_metrics_log(tmp_path):
    res = _fit(tmp_path, "tb", 20, log_every=5, tensorboard_dir=tmp_path / "tb" / "events")
    scalars = _read_scalars(tmp_path / "tb" / "events")
    assert [s for s, _ in scalars["tb/loss"]] == [5, 10, 15, 20]
    np.testing.assert_allclose([v for _, v in scalars["tb/loss"]],
                               [r["loss"] for r in res.history], rtol=1e-6)


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
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 8 in nan ") as err:
        _fit(tmp_path, "nan", 20, batches=_batches(poison_at=7), log_every=5,
             nan_hint="lower --x.learning-rate")
    msg = str(err.value)
    assert "\n" not in msg
    ckpt = tmp_path / "nan" / "ckpt"
    assert "loss=nan" in msg and "grad_norm=" in msg
    assert f"last good checkpoint: step 6 in {ckpt / '6'}" in msg
    assert "resumes from step 6" in msg and msg.endswith("; lower --x.learning-rate")
    assert checkpoint.latest_step(ckpt) == 6
    state, meta = checkpoint.restore(ckpt, {"params": _params(),
                                            "opt_state": optax.adam(0.05).init(_params())})
    assert meta["step"] == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
    assert [r["step"] for r in _lines(tmp_path / "nan" / "metrics.jsonl")] == [5]


def test_nan_before_any_checkpoint_says_so(tmp_path):
    """A NaN before the first checkpoint: the line says a rerun starts from step 0 (no
    'last checkpoint: None'), and no checkpoint is written."""
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 2 in early ") as err:
        _fit(tmp_path, "early", 20, batches=_batches(poison_at=1), log_every=5)
    msg = str(err.value)
    assert "\n" not in msg and "None" not in msg
    assert "no checkpoint yet (a rerun starts from step 0)" in msg
    assert checkpoint.latest_step(tmp_path / "early" / "ckpt") is None


def _corrupt(step_dir):
    """Break a saved step's array store (what a torn copy or a bad disk leaves)."""
    shutil.rmtree(step_dir / "state" / "d")
    shutil.rmtree(step_dir / "state" / "ocdbt.process_0")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    """The newest checkpoint is unreadable: one warning line names it, it is moved aside, and
    training resumes from the previous step, ending bit-identical to an uninterrupted run."""
    full = _fit(tmp_path, "full", 12)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "bad", 12, batches=_batches(stop_at=10))
    ckpt = tmp_path / "bad" / "ckpt"
    assert checkpoint.all_steps(ckpt) == [3, 6, 9]
    _corrupt(ckpt / "9")
    capsys.readouterr()
    res = _fit(tmp_path, "bad", 12)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1
    assert warning[0].startswith(f"warning: {ckpt.absolute() / '9'}: cannot restore")
    assert "resuming from step 6" in warning[0]
    assert (ckpt / "9.corrupt").is_dir()
    assert checkpoint.all_steps(ckpt) == [6, 9, 12]  # step 9 written again by the resumed run
    assert checkpoint.tree_hash(res.params) == checkpoint.tree_hash(full.params)
    assert [r["step"] for r in res.history] == list(range(1, 13))
    time.sleep(0.5)  # let tensorstore finish the failed read (see test_checkpoint.py)
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_names_folder_and_stage(tmp_path):
    """Every checkpoint unreadable: one line naming the folder and the stage to rerun; nothing
    is moved, so the folder is left as it was for the user to inspect or delete."""
    _fit(tmp_path, "gone", 6)
    ckpt = tmp_path / "gone" / "ckpt"
    for step in checkpoint.all_steps(ckpt):
        _corrupt(ckpt / str(step))
    with pytest.raises(ArtifactError, match=r"no readable checkpoint") as err:
        _fit(tmp_path, "gone", 9)
    msg = str(err.value)
    assert isinstance(err.value, checkpoint.CheckpointError) and "\n" not in msg
    assert msg.startswith(str(ckpt.absolute()))
    assert f"delete {ckpt} and rerun the gone stage" in msg
    assert checkpoint.all_steps(ckpt) == [3, 6]
    assert not list(ckpt.glob("*.corrupt*"))
    time.sleep(0.5)
    gc.collect()


def test_running_out_of_batches_is_an_error(tmp_path):
    def short(start):
        return iter([_batch(i) for i in range(start, 3)])

    with pytest.raises(ValueError, match="ran out after 3 batches; 5 needed"):
        _fit(tmp_path, "short", 5, batches=short, ckpt_dir=None, metrics_path=None)


def test_callers_params_are_not_donated(tmp_path):
    params = _params()
    _fit(tmp_path, "don", 2, params=params, ckpt_dir=None)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.zeros((4, 1)))


def _carry_loss_fn(params, carry, batch, key):
    """A loss whose value depends on a carried running mean of the inputs."""
    carry = 0.9 * carry + 0.1 * jnp.mean(batch["x"], axis=0)
    loss, metrics = _loss_fn(params, batch, key)
    loss = loss + jnp.sum((params["w"][:, 0] - carry) ** 2)
    return loss, (metrics, carry)


def test_carry_is_checkpointed_and_resumed_bit_identically(tmp_path):
    kw = dict(loss_fn=_carry_loss_fn, carry=jnp.zeros(4))
    full = _fit(tmp_path, "cfull", 8, **kw)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "cres", 8, batches=_batches(stop_at=4), **kw)
    res = _fit(tmp_path, "cres", 8, **kw)
    assert checkpoint.tree_hash(res.params) == checkpoint.tree_hash(full.params)
    assert checkpoint.tree_hash(res.carry) == checkpoint.tree_hash(full.carry)
    expect = jnp.zeros(4)
    for i in range(8):
        expect = 0.9 * expect + 0.1 * _batch(i)["x"].mean(axis=0)
    np.testing.assert_allclose(np.asarray(full.carry), np.asarray(expect), rtol=1e-5)


# ----------------------------------------------------------------------------- stage wrappers


def _write_series(folder, lengths, z_dim=3, seed=0):
    """Series files whose mu[t] = (episode, t, noise...) so positions can be traced."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for e, T in enumerate(lengths):
        mu = rng.normal(size=(T, z_dim)).astype(np.float16)
        mu[:, 0], mu[:, 1] = e, np.arange(T)
        term = np.zeros(T, bool)
        term[-1] = True
        np.savez(folder / f"ep_{e:06d}.npz", mu=mu,
                 logvar=np.full((T, z_dim), -2.0, np.float16),
                 actions=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
                 rewards=rng.normal(size=T).astype(np.float32), terminated=term,
                 truncated=np.zeros(T, bool), seed=np.int64(e), vae_id=np.asarray("v0"))
    (folder / "series.json").write_text(json.dumps({"vae_id": "v0"}))
    return sorted(folder.glob("ep_*.npz"))


def test_tbptt_batches_tile_the_stream(tmp_path):
    from dreamjax.data.batches import TBPTTBatches

    lengths = [9, 5, 12, 7, 6]
    files = _write_series(tmp_path / "s", lengths)
    B, L = 2, 4
    tb = TBPTTBatches(files, B, L, seed=3)
    S = sum(lengths) // B
    assert tb.stream_len == S and tb.steps_per_epoch == (S - 1) // L
    for e in range(2):
        perm = np.random.default_rng([3, e]).permutation(len(files))
        stream = np.concatenate([np.stack([np.full(lengths[i], i), np.arange(lengths[i])], 1)
                                 for i in perm])[: B * S].reshape(B, S, 2)
        chunks = [tb.batch(e * tb.steps_per_epoch + j) for j in range(tb.steps_per_epoch)]
        for j, c in enumerate(chunks):
            np.testing.assert_array_equal(c["mu"][..., :2], stream[:, j * L:j * L + L + 1])
            np.testing.assert_array_equal(c["restarts"], c["mu"][..., 1] == 0)
            np.testing.assert_array_equal(c["mask"], 1 - c["restarts"][:, 1:])
            last = np.take(lengths, c["mu"][..., 0].astype(int)) - 1
            np.testing.assert_array_equal(c["dones"], c["mu"][..., 1] == last)
            assert c["reset"].tolist() == [j == 0] * B
            if j:
                np.testing.assert_array_equal(c["mu"][:, 0], chunks[j - 1]["mu"][:, -1])
    it = iter(TBPTTBatches(files, B, L, seed=3, start_step=5))
    for k in range(5, 8):
        got = next(it)
        for name, arr in tb.batch(k).items():
            np.testing.assert_array_equal(got[name], arr)
    with pytest.raises(ValueError, match="need at least seq_len"):
        TBPTTBatches(files, 8, 4, seed=0)


def _reference_tbptt_loss_fn(params, carry, batch, key, *, model, done_weight=10.0,
                             reward_weight=1.0):
    """REFERENCE (the removed `train.tbptt_loss_fn`, kept here only to test its replacement):
    a `lax.scan` of `MDNRNN.step` with the resets applied by hand, autodiff for the gradient."""
    from dreamjax.models.mdnrnn import MDNRNN, LSTMState, done_loss, mdn_log_prob, reward_loss

    mu = jnp.asarray(batch["mu"], jnp.float32)
    B, T1, Z = mu.shape
    T = T1 - 1
    z = mu + jnp.exp(jnp.asarray(batch["logvar"], jnp.float32) / 2.0) * jax.random.normal(
        key, mu.shape, jnp.float32)
    actions = jnp.asarray(batch["actions"], jnp.float32)
    restarts = jnp.asarray(batch["restarts"], jnp.float32)
    mask = jnp.asarray(batch["mask"], jnp.float32)
    head_mask = jnp.asarray(batch.get("step_mask", batch["mask"]), jnp.float32)
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
        r_loss = reward_loss(out.reward_parts, jnp.asarray(batch["rewards"])[:, :T],
                             head_mask)
        loss, metrics["reward_loss"] = loss + reward_weight * r_loss, r_loss
    if model.done_head:
        d_loss = done_loss(out.done_logit, jnp.asarray(batch["dones"])[:, :T], head_mask,
                           done_weight)
        loss, metrics["done_loss"] = loss + d_loss, d_loss
    return loss, (metrics, state)


def _assert_trees_close(a, b, rtol=2e-5, atol_frac=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        scale = float(np.abs(np.asarray(y)).max()) or 1.0
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                                   atol=atol_frac * scale)


@pytest.mark.parametrize("restart_input", [False, True], ids=["car", "doom"])
def test_carry_loss_equals_reference_tbptt_loss(tmp_path, restart_input):
    """On TBPTT chunks (epoch-start reset, episode starts inside a chunk, a non-zero carried
    state) the one M loss equals the reference: value, metrics, final state, and gradients with
    respect to the params and to the carried state."""
    from dreamjax.data.batches import TBPTTBatches
    from dreamjax.models.mdnrnn import MDNRNN, LSTMState, init_mdnrnn, mdnrnn_carry_loss_fn

    model = MDNRNN(z_dim=3, hidden=8, n_mix=2, reward_head=True, done_head=True,
                   restart_input=restart_input)
    params = init_mdnrnn(jax.random.key(0), model)
    files = _write_series(tmp_path / "s", [9, 5, 12, 7, 6, 11])
    tb = TBPTTBatches(files, 2, 6, seed=3)
    k1, k2 = jax.random.split(jax.random.key(4))
    carry = LSTMState(c=jax.random.normal(k1, (2, 8)), h=jax.random.normal(k2, (2, 8)))
    key = jax.random.key(1)
    new = jax.jit(jax.value_and_grad(functools.partial(mdnrnn_carry_loss_fn, model=model),
                                     argnums=(0, 1), has_aux=True))
    ref = jax.jit(jax.value_and_grad(functools.partial(_reference_tbptt_loss_fn, model=model),
                                     argnums=(0, 1), has_aux=True))
    seen_restart = seen_reset = False
    for j in range(tb.steps_per_epoch + 1):  # the last one is the next epoch's first chunk
        batch = tb.batch(j)
        seen_restart |= bool(batch["restarts"][:, 1:-1].any())
        seen_reset |= bool(batch["reset"].any())
        (loss, (metrics, state)), grads = new(params, carry, batch, key)
        (r_loss, (r_metrics, r_state)), r_grads = ref(params, carry, batch, key)
        np.testing.assert_allclose(loss, r_loss, rtol=1e-5)
        _assert_trees_close(metrics, r_metrics)
        _assert_trees_close(state, r_state)
        _assert_trees_close(grads, r_grads, rtol=2e-4)
        carry = state
    assert seen_restart and seen_reset


def test_carry_loss_on_plain_windows_and_carried_chunks(tmp_path):
    """Without an episode start inside, a chunk from the zero state is a plain window (the
    zero-state loss); two chunks with the state carried equal one scan over both."""
    from dreamjax.data.batches import TBPTTBatches
    from dreamjax.models.mdnrnn import MDNRNN, init_mdnrnn, mdnrnn_carry_loss_fn, mdnrnn_loss_fn

    model = MDNRNN(z_dim=3, hidden=8, n_mix=2, reward_head=True, done_head=True)
    params = init_mdnrnn(jax.random.key(0), model)
    files = _write_series(tmp_path / "s", [40, 40])
    tb = TBPTTBatches(files, 2, 5, seed=0)
    b0 = tb.batch(0)
    assert not b0["restarts"][:, 1:].any()  # no episode boundary inside: plain windows
    key = jax.random.key(1)
    zero = model.initial_state((2,))
    carried = jax.jit(functools.partial(mdnrnn_carry_loss_fn, model=model))
    loss, (metrics, state) = carried(params, zero, b0, key)
    ref_loss, ref_metrics = jax.jit(functools.partial(mdnrnn_loss_fn, model=model))(params, b0, key)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for k, v in ref_metrics.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-5)
    # Carried state over chunks 0, 1 == one scan over both chunks' inputs (z = mu exactly).
    b1 = tb.batch(1)
    for b in (b0, b1):
        b["logvar"][:] = -np.inf
    _, (_, s0) = carried(params, zero, b0, key)
    _, (_, s1) = carried(params, s0, b1, key)
    z = np.concatenate([b0["mu"][:, :5], b1["mu"][:, :5]], 1)
    a = np.concatenate([b0["actions"][:, :5], b1["actions"][:, :5]], 1)
    s_ref, _ = model.apply(params, zero, z, a)
    np.testing.assert_allclose(s1.h, s_ref.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s1.c, s_ref.c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tbptt", [False, True])
def test_train_mdnrnn_writes_done_and_params(tmp_path, tbptt):
    from dreamjax.config import MDNRNNConfig
    from dreamjax.models.mdnrnn import MDNRNN
    from dreamjax.pipeline.training import train_mdnrnn

    _write_series(tmp_path / "series", [30, 25, 40])
    cfg = MDNRNNConfig(hidden=8, n_mix=2, reward_head=True, done_head=True, batch_size=2,
                       seq_len=6, steps=4, checkpoint_every=2, log_every=2, tbptt=tbptt)
    out = tmp_path / "mdnrnn"
    res = train_mdnrnn(jax.random.key(0), tmp_path / "series", out, cfg, z_dim=3,
                       progress=False)
    done = json.loads((out / "DONE.json").read_text())
    assert done["steps"] == 4 and done["vae_id"] == "v0" and done["tbptt"] == tbptt
    assert done["mdnrnn_id"] == checkpoint.tree_hash(res.params)
    assert np.isfinite(done["final"]["loss"])
    params = checkpoint.restore_params(out / done["checkpoint"])
    assert checkpoint.tree_hash(params) == done["mdnrnn_id"]
    assert MDNRNN(**done["model"]).hidden == 8  # the recorded fields rebuild M
    assert [r["step"] for r in _lines(out / "metrics.jsonl")] == [2, 4]
    with pytest.raises(ValueError, match="expected z_dim=4"):
        train_mdnrnn(jax.random.key(0), tmp_path / "series", out, cfg, z_dim=4, progress=False)


@pytest.mark.slow
def test_train_vae_writes_done_and_params(tmp_path):
    from dreamjax.config import VAEConfig
    from dreamjax.data.episodes import episode_path, save_episode
    from dreamjax.pipeline.training import train_vae

    rng = np.random.default_rng(0)
    (tmp_path / "eps").mkdir()
    for e, T in enumerate([10, 7]):
        save_episode(episode_path(tmp_path / "eps", e), {
            "frames": rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8),
            "actions": np.zeros((T, 3), np.float32), "rewards": np.zeros(T, np.float32),
            "terminated": np.zeros(T, bool), "truncated": np.zeros(T, bool),
            "seed": e, "policy": "test"})
    cfg = VAEConfig(z_dim=4, batch_size=4, epochs=1.5, checkpoint_every=3, log_every=2,
                    shuffle_episodes=1)
    out = tmp_path / "vae"
    res = train_vae(jax.random.key(0), tmp_path / "eps", out, cfg, progress=False)
    done = json.loads((out / "DONE.json").read_text())
    assert res.step == done["steps"] == 7  # ceil(1.5 * 17 / 4)
    assert done["vae_id"] == checkpoint.tree_hash(checkpoint.restore_params(out / "params"))
    assert set(done["final"]) >= {"loss", "r_loss", "kl", "grad_norm"}
    assert [r["step"] for r in _lines(out / "metrics.jsonl")] == [2, 4, 6, 7]
