"""M: the MDN-RNN (PAPER.md §1.4, §2.4, §2.5)."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from dreamjax.models.mdnrnn import (
    MDNRNN,
    LSTMState,
    MDNOutput,
    init_mdnrnn,
    mdn_log_prob,
    mdn_nll,
    mdnrnn_loss_fn,
    reward_loss,
    sample_next_z,
)

SMALL = {"z_dim": 4, "action_dim": 2, "hidden": 16, "n_mix": 3}
HEADS = {**SMALL, "restart_input": True, "reward_head": True, "done_head": True}

loss_jit = jax.jit(mdnrnn_loss_fn, static_argnames=("model", "overshoot", "overshoot_held"))
loss_and_grad = jax.jit(
    jax.value_and_grad(mdnrnn_loss_fn, has_aux=True), static_argnames=("model", "overshoot")
)


def n_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def random_out(key, shape, z_dim, n_mix) -> MDNOutput:
    k1, k2, k3 = jax.random.split(key, 3)
    full = (*shape, z_dim, n_mix)
    return MDNOutput(
        logpi=jax.nn.log_softmax(2.0 * jax.random.normal(k1, full), axis=-1),
        mu=2.0 * jax.random.normal(k2, full),
        logsigma=0.5 * jax.random.normal(k3, full) - 0.5,
    )


def random_seq(key, model: MDNRNN, B: int, T: int):
    kz, ka, kr = jax.random.split(key, 3)
    z = jax.random.normal(kz, (B, T, model.z_dim))
    a = jax.random.uniform(ka, (B, T, model.action_dim), minval=-1.0, maxval=1.0)
    r = (jax.random.uniform(kr, (B, T)) < 0.2).astype(jnp.float32) if model.restart_input else None
    return z, a, r


def test_param_count_carracing():
    """422,368 parameters for z=32, a=3, H=256, K=5 (PAPER.md §1.4)."""
    assert n_params(init_mdnrnn(jax.random.PRNGKey(0), MDNRNN())) == 422_368


def test_param_count_doom():
    """1,678,785 for Doom: z=64, a=1, restart input, H=512, done head (PAPER.md §2.4)."""
    model = MDNRNN(z_dim=64, action_dim=1, hidden=512, restart_input=True, done_head=True)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    assert n_params(params) == 1_678_785
    assert params["params"]["output_w"].shape == (512, 961)
    assert params["params"]["lstm_kernel"].shape == (66 + 512, 2048)


def test_glorot_init_covers_biases():
    """Kernel and biases are glorot-uniform, biases with fan_in = fan_out = n (PAPER.md §3)."""
    p = init_mdnrnn(jax.random.PRNGKey(0), MDNRNN())["params"]
    for name, limit in [
        ("lstm_kernel", math.sqrt(6 / (291 + 1024))),
        ("lstm_bias", math.sqrt(3 / 1024)),
        ("output_w", math.sqrt(6 / (256 + 480))),
        ("output_b", math.sqrt(3 / 480)),
    ]:
        x = np.asarray(p[name])
        assert np.abs(x).max() <= limit
        assert np.abs(x).max() > 0.95 * limit, name
        np.testing.assert_allclose(x.std(), limit / math.sqrt(3), rtol=0.1)


def test_initial_state_is_zero_without_params():
    s = MDNRNN(hidden=8).initial_state((3, 2))
    assert isinstance(s, LSTMState)
    assert s.c.shape == s.h.shape == (3, 2, 8)
    assert not np.any(np.asarray(s.c)) and not np.any(np.asarray(s.h))


def test_step_matches_numpy_tf_lstm():
    """One step equals a NumPy TF LSTM: [x,h]·K + b, i|j|f|o, forget bias 1.0 (PAPER.md §1.4)."""
    model = MDNRNN(**SMALL)
    params = init_mdnrnn(jax.random.PRNGKey(1), model)
    p = jax.tree.map(np.asarray, params["params"])
    key = jax.random.PRNGKey(2)
    z, a, _ = random_seq(key, model, 3, 1)
    z, a = z[:, 0], a[:, 0]
    c0 = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (3, 16)))
    h0 = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (3, 16)))
    state, out = model.apply(params, LSTMState(c=c0, h=h0), z, a, method=MDNRNN.step)

    def sig(x):
        return 1 / (1 + np.exp(-x))

    g = np.concatenate([z, a, h0], -1) @ p["lstm_kernel"] + p["lstm_bias"]
    i, j, f, o = np.split(g, 4, -1)
    c = c0 * sig(f + 1.0) + sig(i) * np.tanh(j)
    h = np.tanh(c) * sig(o)
    np.testing.assert_allclose(state.c, c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.h, h, rtol=1e-5, atol=1e-5)
    y = (h @ p["output_w"] + p["output_b"]).reshape(3, 4, 9)
    np.testing.assert_allclose(out.mu, y[..., 3:6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.logsigma, y[..., 6:], rtol=1e-5, atol=1e-5)
    logpi = y[..., :3] - np.log(np.exp(y[..., :3]).sum(-1, keepdims=True))
    np.testing.assert_allclose(out.logpi, logpi, rtol=1e-5, atol=1e-5)


def test_mdn_nll_matches_scipy():
    """mdn_nll = -mean log Σ_k π_k N(z | μ_k, σ_k) computed with scipy.stats.norm."""
    out = random_out(jax.random.PRNGKey(0), (6, 7), 5, 4)
    z = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (6, 7, 5))
    pi = np.exp(np.asarray(out.logpi, np.float64))
    dens = pi * stats.norm.pdf(
        np.asarray(z, np.float64)[..., None],
        np.asarray(out.mu, np.float64),
        np.exp(np.asarray(out.logsigma, np.float64)),
    )
    ref = np.log(dens.sum(-1))
    np.testing.assert_allclose(mdn_log_prob(out, z), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mdn_nll(out, z), -ref.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [SMALL, HEADS],
    ids=["car", "doom+heads"],
)
def test_scan_equals_loop_of_step(kw):
    """`__call__` (hoisted projection + scan) equals a Python loop over `step` (one body)."""
    model = MDNRNN(**kw)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    B, T = 3, 9
    z, a, r = random_seq(jax.random.PRNGKey(1), model, B, T)
    s0 = LSTMState(
        c=jax.random.normal(jax.random.PRNGKey(2), (B, 16)),
        h=jax.random.normal(jax.random.PRNGKey(3), (B, 16)),
    )
    step = jax.jit(partial(model.apply, method=MDNRNN.step))
    seq = jax.jit(model.apply, static_argnums=5)
    for unroll in (1, 4):
        s_scan, out_scan = seq(params, s0, z, a, r, unroll)
        s, outs = s0, []
        for t in range(T):
            args = (z[:, t], a[:, t]) + (() if r is None else (r[:, t],))
            s, o = step(params, s, *args)
            outs.append(o)
        out_loop = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs)
        np.testing.assert_allclose(s_scan.h, s.h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_scan.c, s.c, rtol=1e-5, atol=1e-5)
        for a_, b_ in zip(jax.tree.leaves(out_scan), jax.tree.leaves(out_loop), strict=True):
            assert a_.shape == b_.shape
            np.testing.assert_allclose(a_, b_, rtol=1e-5, atol=1e-5)


def test_scan_gradient_equals_autodiff_of_step_loop():
    """The hand-written backward of `lstm_scan` equals JAX autodiff through a loop of `step`.

    Covers restarts, all heads, a non-zero initial state, gradients into that state, and an
    unroll that does not divide T.
    """
    model = MDNRNN(**HEADS)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    B, T = 3, 7
    r = jnp.zeros((B, T)).at[0, 2].set(1.0).at[1, 5].set(0.9)
    z, a, _ = random_seq(jax.random.PRNGKey(1), model, B, T)
    keys = jax.random.split(jax.random.PRNGKey(2), 6)
    s0 = LSTMState(c=jax.random.normal(keys[0], (B, 16)), h=jax.random.normal(keys[1], (B, 16)))
    w_mu = jax.random.normal(keys[2], (B, T, 4, 3))
    w_c, w_h = jax.random.normal(keys[3], (B, 16)), jax.random.normal(keys[4], (B, 16))

    def objective(state, out):
        return (
            jnp.sum(w_mu * out.mu)
            + jnp.sum(out.logsigma**2)
            + jnp.sum(out.logpi * w_mu)
            + jnp.sum(out.done_logit)
            + jnp.sum(out.reward)
            + jnp.sum(state.c * w_c)
            + jnp.sum(jnp.tanh(state.h) * w_h)
        )

    def scanned(p, s):
        return objective(*model.apply(p, s, z, a, r, 2))

    def looped(p, s):
        outs = []
        for t in range(T):
            s, o = model.apply(p, s, z[:, t], a[:, t], r[:, t], method=MDNRNN.step)
            outs.append(o)
        return objective(s, jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs))

    g_scan = jax.jit(jax.grad(scanned, argnums=(0, 1)))(params, s0)
    g_loop = jax.jit(jax.grad(looped, argnums=(0, 1)))(params, s0)
    for x, y in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5 * float(jnp.abs(y).max()))


@pytest.mark.parametrize("kw", [SMALL, HEADS], ids=["car", "doom+heads"])
def test_scan_with_resets_equals_loop_of_step_with_manual_resets(kw):
    """`__call__(..., reset_seq=m)` (the fast scan and its hand-written backward pass) equals a
    Python loop that zeroes the state by hand where m > 0.5 and then calls `step`: outputs,
    final state, and gradients into the params and the initial state. With a restart input,
    the restarts reset too (as in `step`); the reset mask here adds other steps (a reset at
    t = 0 included), so both are exercised."""
    model = MDNRNN(**{**kw, "reward_head": True, "done_head": True})
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    B, T = 3, 8
    z, a, r = random_seq(jax.random.PRNGKey(1), model, B, T)
    reset = jnp.zeros((B, T)).at[0, 0].set(1.0).at[1, 3].set(1.0).at[2, 6].set(0.7)
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    s0 = LSTMState(c=jax.random.normal(keys[0], (B, 16)), h=jax.random.normal(keys[1], (B, 16)))
    w_mu, w_h = jax.random.normal(keys[2], (B, T, 4, 3)), jax.random.normal(keys[3], (B, 16))

    def objective(state, out):
        return (jnp.sum(w_mu * out.mu) + jnp.sum(out.logsigma**2) + jnp.sum(out.done_logit)
                + jnp.sum(out.reward) + jnp.sum(state.c) + jnp.sum(jnp.tanh(state.h) * w_h))

    def scanned(p, s):
        state, out = model.apply(p, s, z, a, r, 3, reset_seq=reset)
        return objective(state, out), (state, out)

    def looped(p, s):
        outs = []
        for t in range(T):
            keep = (reset[:, t] <= 0.5)[:, None].astype(jnp.float32)
            s = LSTMState(c=s.c * keep, h=s.h * keep)
            args = (z[:, t], a[:, t]) + (() if r is None else (r[:, t],))
            s, o = model.apply(p, s, *args, method=MDNRNN.step)
            outs.append(o)
        out = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs)
        return objective(s, out), (s, out)

    grad = partial(jax.value_and_grad, argnums=(0, 1), has_aux=True)
    (v_scan, aux_scan), g_scan = jax.jit(grad(scanned))(params, s0)
    (v_loop, aux_loop), g_loop = jax.jit(grad(looped))(params, s0)
    np.testing.assert_allclose(v_scan, v_loop, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(aux_scan), jax.tree.leaves(aux_loop), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    for x, y in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5 * float(jnp.abs(y).max()))
    # a reset (or restart) at t = 0 cuts a row off its initial state: no gradient flows into it
    cut = np.asarray(reset[:, 0] > 0.5) | (np.asarray(r[:, 0] > 0.5) if r is not None else False)
    assert cut[0]
    d_s0 = np.abs(np.asarray(g_scan[1].c)).sum(-1) + np.abs(np.asarray(g_scan[1].h)).sum(-1)
    np.testing.assert_array_equal(d_s0 > 0, ~cut)


def test_jit_equals_eager():
    """`step` and `sample_next_z` agree jitted (as the dream runs them) and eager."""
    model = MDNRNN(**HEADS)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    s = LSTMState(c=jnp.full((4, 16), 0.3), h=jnp.full((4, 16), -0.2))
    z, a, r = jnp.ones((4, 4)), jnp.ones((4, 2)), jnp.array([0.0, 1.0, 0.0, 0.0])
    step = jax.jit(partial(model.apply, method=MDNRNN.step))
    eager_state, eager_out = model.apply(params, s, z, a, r, method=MDNRNN.step)
    jit_state, jit_out = step(params, s, z, a, r)
    for x, y in zip(
        jax.tree.leaves((jit_state, jit_out)),
        jax.tree.leaves((eager_state, eager_out)),
        strict=True,
    ):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    key = jax.random.PRNGKey(3)
    np.testing.assert_allclose(
        jax.jit(sample_next_z)(key, eager_out, 1.15),
        sample_next_z(key, eager_out, 1.15),
        rtol=1e-5,
        atol=1e-6,
    )


def mixture_cdf(x, logpi, mu, sigma):
    return np.sum(np.exp(logpi) * stats.norm.cdf((x[:, None] - mu) / sigma), axis=-1)


@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_sampling_matches_tempered_mixture(tau):
    """Samples follow softmax(logπ/τ)-weighted N(μ_k, σ_k² τ) (PAPER.md §2.5): KS test + mean."""
    logpi = np.log(np.array([0.2, 0.5, 0.3]))
    mu = np.array([-2.0, 0.5, 3.0])
    logsigma = np.log(np.array([0.5, 1.0, 0.3]))
    n = 4000
    out = MDNOutput(
        logpi=jnp.broadcast_to(jnp.asarray(logpi, jnp.float32), (n, 2, 3)),
        mu=jnp.broadcast_to(jnp.asarray(mu, jnp.float32), (n, 2, 3)),
        logsigma=jnp.broadcast_to(jnp.asarray(logsigma, jnp.float32), (n, 2, 3)),
    )
    z = np.asarray(sample_next_z(jax.random.PRNGKey(0), out, tau))
    assert z.shape == (n, 2)
    w = np.exp(logpi / tau)
    w /= w.sum()
    sigma = np.exp(logsigma) * np.sqrt(tau)
    for d in range(2):
        ks = stats.kstest(z[:, d], lambda x: mixture_cdf(np.atleast_1d(x), np.log(w), mu, sigma))
        assert ks.pvalue > 0.01, ks
        assert abs(z[:, d].mean() - (w * mu).sum()) < 0.15
    # dimensions are sampled independently
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.06


def test_low_temperature_collapses_to_best_mean():
    out = random_out(jax.random.PRNGKey(3), (50,), 6, 5)
    z = sample_next_z(jax.random.PRNGKey(4), out, 1e-4)
    best = jnp.argmax(out.logpi, axis=-1)[..., None]
    expected = jnp.take_along_axis(out.mu, best, axis=-1)[..., 0]
    np.testing.assert_allclose(z, expected, atol=0.05)


def synthetic_batch(rng: np.random.Generator, model: MDNRNN, B: int, T: int) -> dict:
    """z deterministic (logvar -30); done iff z_t[0] > 0.5; reward 3.0 if a_t[0] > 0 else -0.1."""
    mu = rng.normal(size=(B, T + 1, model.z_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(B, T + 1, model.action_dim)).astype(np.float32)
    batch = {
        "mu": mu,
        "logvar": np.full_like(mu, -30.0),
        "actions": actions,
        "rewards": np.where(actions[..., 0] > 0, 3.0, -0.1).astype(np.float32),
        "dones": mu[..., 0] > 0.5,
    }
    if model.restart_input:
        batch["restarts"] = np.zeros((B, T + 1), np.float32)
    return batch


def test_reward_and_done_heads_learn_synthetic_signal():
    """With Adam, the heads learn done iff z[0] > 0.5 and a reward set by the action."""
    model = MDNRNN(**HEADS)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    tx = optax.chain(optax.clip(1.0), optax.adam(3e-2))
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)

    @jax.jit
    def apply_updates(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    first = None
    for i in range(300):
        batch = synthetic_batch(rng, model, 16, 8)
        (_, m), grads = loss_and_grad(params, batch, jax.random.PRNGKey(i), model=model)
        params, opt_state = apply_updates(params, opt_state, grads)
        first = first or m
    assert m["reward_loss"] < 0.2 * first["reward_loss"]
    assert m["done_loss"] < 0.3 * first["done_loss"]
    test = synthetic_batch(np.random.default_rng(1), model, 32, 8)
    _, out = model.apply(
        params,
        model.initial_state((32,)),
        test["mu"][:, :8],
        test["actions"][:, :8],
        test["restarts"][:, :8],
    )
    logit, done = np.asarray(out.done_logit), test["dones"][:, :8]
    auc = (logit[done][:, None] > logit[~done][None, :]).mean()
    assert auc > 0.98
    err = np.abs(np.asarray(out.reward) - test["rewards"][:, :8])
    assert err.mean() < 0.25  # a constant predictor scores about 1.55
    assert (err > 1.5).mean() < 0.05


def test_restart_zeroes_state():
    """restart > 0.5 zeroes c and h before the step (PAPER.md §2.4)."""
    model = MDNRNN(**SMALL, restart_input=True, done_head=True)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    z, a = jnp.ones((2, 4)), jnp.ones((2, 2))
    big = LSTMState(c=jnp.full((2, 16), 5.0), h=jnp.full((2, 16), -3.0))
    restart = jnp.array([1.0, 0.0])
    s, out = model.apply(params, big, z, a, restart, method=MDNRNN.step)
    s0, out0 = model.apply(params, model.initial_state((2,)), z, a, restart, method=MDNRNN.step)
    np.testing.assert_allclose(s.h[0], s0.h[0], rtol=1e-6)
    np.testing.assert_allclose(s.c[0], s0.c[0], rtol=1e-6)
    np.testing.assert_allclose(out.done_logit[0], out0.done_logit[0], rtol=1e-6)
    assert not np.allclose(s.h[1], s0.h[1])


def test_mask_ignores_padding():
    """Loss over a padded batch with mask equals the loss of the unpadded batch."""
    model = MDNRNN(**HEADS)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    short = synthetic_batch(np.random.default_rng(0), model, 3, 4)
    long = synthetic_batch(np.random.default_rng(1), model, 3, 7)
    padded = {k: np.concatenate([v, long[k][:, :3]], axis=1) for k, v in short.items()}
    padded["mask"] = np.concatenate([np.ones((3, 4)), np.zeros((3, 3))], axis=1)
    key = jax.random.PRNGKey(0)
    l_short, m_short = loss_jit(params, short, key, model=model)
    l_pad, m_pad = loss_jit(params, padded, key, model=model)
    np.testing.assert_allclose(l_pad, l_short, rtol=1e-5)
    for k in m_short:
        np.testing.assert_allclose(m_pad[k], m_short[k], rtol=1e-5)


def test_loss_resamples_z_and_gradients_are_finite():
    """z is resampled per key (PAPER.md §1.4); gradients are finite even for extreme inputs."""
    model = MDNRNN(**HEADS)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    batch = synthetic_batch(np.random.default_rng(0), model, 16, 8)
    batch["logvar"] = np.zeros_like(batch["logvar"])
    batch["mu"] = batch["mu"] * 30.0
    batch["restarts"][:, 3] = 1.0
    batch["rewards"][:, 2] = -100.0
    (l1, m), grads = loss_and_grad(params, batch, jax.random.PRNGKey(1), model=model)
    (l2, _), _ = loss_and_grad(params, batch, jax.random.PRNGKey(2), model=model)
    assert l1 != l2
    assert set(m) == {"z_nll", "reward_loss", "done_loss"}
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(g)))
        assert np.any(np.asarray(g) != 0)


def test_bad_input_errors():
    model = MDNRNN(**SMALL)
    params = init_mdnrnn(jax.random.PRNGKey(0), model)
    s = model.initial_state((2,))
    with pytest.raises(ValueError, match="mdnrnn.py"):
        model.apply(params, s, jnp.ones((2, 5)), jnp.ones((2, 2)), method=MDNRNN.step)
    with pytest.raises(ValueError, match="restart"):
        model.apply(params, s, jnp.ones((2, 4)), jnp.ones((2, 2)), jnp.ones(2), method=MDNRNN.step)
    batch = synthetic_batch(np.random.default_rng(0), model, 2, 3)
    del batch["actions"]
    with pytest.raises(ValueError, match="actions"):
        mdnrnn_loss_fn(params, batch, jax.random.PRNGKey(0), model=model)


def test_reward_pessimism_weights_over_prediction_analytically():
    """reward_loss with pessimism w: per step BCE(logit, 1[r > 0]) times w where r <= 0, plus
    (v - r)² times w where the matching value v over-predicts r; w = 1 is the symmetric loss."""
    logit = jnp.array([[2.0, -1.0, 0.5, -3.0]])
    v_pos = jnp.array([[3.0, 1.0, 2.0, 4.0]])
    v_neg = jnp.array([[-0.1, 0.2, -0.5, 0.0]])
    parts = jnp.stack([logit, v_pos, v_neg], axis=-1)  # (1, 4, 3)
    rewards = jnp.array([[3.5, -0.1, 2.9, -0.1]])
    mask = jnp.ones((1, 4))
    pos = np.array([1.0, 0.0, 1.0, 0.0])
    lg = np.asarray(logit[0], np.float64)
    bce = np.log1p(np.exp(-lg)) * pos + np.log1p(np.exp(lg)) * (1 - pos)
    v = np.where(pos > 0, v_pos[0], v_neg[0])
    err = v - np.asarray(rewards[0])  # [-0.5, 0.3, -0.9, 0.1]: steps 1 and 3 over-predict
    for w in (1.0, 5.0):
        want = np.mean(bce * np.where(pos > 0, 1.0, w) + err**2 * np.where(err > 0, w, 1.0))
        np.testing.assert_allclose(reward_loss(parts, rewards, mask, w), want, rtol=1e-5)
    np.testing.assert_allclose(reward_loss(parts, rewards, mask), reward_loss(parts, rewards,
                                                                                mask, 1.0))


@pytest.mark.parametrize("heads", [False, True])
def test_overshoot_loss_is_the_teacher_forced_loss_plus_a_loop_of_open_loop_steps(heads):
    """With `overshoot=k` the teacher-forced metrics are exactly those without it (the scan in
    branch intervals == one scan), and `open_loop_nll` equals a hand loop of `MDNRNN.step`: from
    the teacher-forced state at every k-th step, the real z there, then M's own mixture means
    with the real actions, scored against the real z; a branch stops counting at the window's
    end, at an invalid target (mask) and where an episode starts (restarts)."""
    model = MDNRNN(**(HEADS if heads else SMALL))
    params = init_mdnrnn(jax.random.PRNGKey(3), model)
    B, T, k = 3, 10, 4
    batch = synthetic_batch(np.random.default_rng(4), model, B, T)
    mask = np.ones((B, T), np.float32)
    mask[1, 7:] = 0.0
    batch["mask"] = mask
    if heads:
        batch["restarts"][2, 6] = 1.0
    key = jax.random.PRNGKey(5)
    loss0, m0 = loss_jit(params, batch, key, model=model)
    loss1, m1 = loss_jit(params, batch, key, model=model, overshoot=k)
    for name in m0:
        np.testing.assert_allclose(m1[name], m0[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss1, loss0 + m1["open_loop_nll"], rtol=1e-5)

    z = np.asarray(batch["mu"])  # logvar -30: z == mu
    restarts = batch.get("restarts")
    total, count = 0.0, 0
    for b in range(B):
        state = model.initial_state(())
        states = {}
        for t in range(T):
            r = None
            if heads:
                r = jnp.float32(restarts[b, t])
                if restarts[b, t] > 0.5:
                    state = model.initial_state(())
            states[t] = state
            state, _ = model.apply(params, state, z[b, t], batch["actions"][b, t], r,
                                   method=MDNRNN.step)
        for s in range(0, T, k):
            lstm, z_in = states[s], z[b, s]
            if heads and restarts[b, s] > 0.5:
                lstm = model.initial_state(())
            for j in range(k):
                t = s + j
                if t >= T or mask[b, t] == 0 or (j > 0 and heads and restarts[b, t] > 0.5):
                    break
                r = jnp.float32(restarts[b, t] if j == 0 else 0.0) if heads else None
                lstm, out = model.apply(params, lstm, z_in, batch["actions"][b, t], r,
                                        method=MDNRNN.step)
                total += float(jnp.sum(mdn_log_prob(out, z[b, t + 1])))
                count += model.z_dim
                z_in = jnp.sum(jnp.exp(out.logpi) * out.mu, axis=-1)
    np.testing.assert_allclose(m1["open_loop_nll"], -total / count, rtol=1e-4)
    (_, _), grads = loss_and_grad(params, batch, key, model=model, overshoot=k)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_held_only_overshoot_loss_is_the_open_loop_loss_on_the_held_branches():
    """`overshoot_held` scores exactly the branches whose action is the same at every counted
    step: its `open_loop_nll` equals the plain one on the same batch with the other branches'
    targets masked out (a change after a branch's last valid step does not break the hold), and
    with every action held the two losses are one."""
    model = MDNRNN(**SMALL)
    params = init_mdnrnn(jax.random.PRNGKey(3), model)
    B, T, k = 3, 10, 4  # branches start at 0, 4, 8
    batch = synthetic_batch(np.random.default_rng(4), model, B, T)
    actions = np.array(batch["actions"])
    actions[0, 0:4] = actions[0, 0]  # row 0: branch 0 held
    actions[1, 4:7] = actions[1, 4]  # row 1: branch 4 held until its targets end (step 7)
    actions[2, 8:10] = actions[2, 8]  # row 2: branch 8 held to the window's end (steps 8, 9)
    mask = np.ones((B, T), np.float32)
    mask[1, 7:] = 0.0
    batch.update(actions=actions, mask=mask)
    key = jax.random.PRNGKey(5)
    _, held = loss_jit(params, batch, key, model=model, overshoot=k, overshoot_held=True)
    only = mask.copy()
    keep = np.zeros((B, T), bool)
    keep[0, 0:4] = keep[1, 4:8] = keep[2, 8:10] = True
    only[~keep] = 0.0
    _, plain = loss_jit(params, {**batch, "mask": only}, key, model=model, overshoot=k)
    np.testing.assert_allclose(held["open_loop_nll"], plain["open_loop_nll"], rtol=1e-6)
    _, unheld = loss_jit(params, batch, key, model=model, overshoot=k)
    assert abs(float(unheld["open_loop_nll"]) - float(held["open_loop_nll"])) > 1e-3
    still = {**batch, "actions": np.broadcast_to(actions[:, :1], actions.shape).copy()}
    _, a = loss_jit(params, still, key, model=model, overshoot=k, overshoot_held=True)
    _, b = loss_jit(params, still, key, model=model, overshoot=k)
    np.testing.assert_allclose(a["open_loop_nll"], b["open_loop_nll"], rtol=1e-6)
