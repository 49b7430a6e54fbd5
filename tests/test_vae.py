"""V: ConvVAE architecture, fast == reference, loss values, and that it learns real frames."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamjax.models.ops.conv import conv_s2, conv_transpose_s2
from dreamjax.models.vae import (
    ConvVAE,
    init_vae,
    resolve_impl,
    vae_loss,
    vae_loss_fn,
)


def _n_params(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.fixture(scope="module")
def params32():
    return init_vae(jax.random.PRNGKey(0), 32)


def test_param_count_z32_matches_paper(params32):
    """PAPER.md §1.3: 4,348,547 parameters at z = 32."""
    assert _n_params(params32) == 4_348_547


def test_param_count_z64_matches_paper():
    """PAPER.md §2.3: 4,446,915 parameters at z = 64 (shapes only, no init compute)."""
    shapes = jax.eval_shape(functools.partial(init_vae, z_dim=64), jax.random.PRNGKey(0))
    assert _n_params(shapes) == 4_446_915


def test_param_tree_is_identical_across_impls(params32):
    """A checkpoint loads into either impl: same names, shapes (HWIO kernels)."""
    key = jax.random.PRNGKey(0)
    ref = jax.eval_shape(functools.partial(init_vae, z_dim=32, impl="reference"), key)
    fast = jax.eval_shape(functools.partial(init_vae, z_dim=32, impl="fast"), key)
    as_shapes = functools.partial(jax.tree.map, lambda a: a.shape)
    assert as_shapes(ref) == as_shapes(fast) == as_shapes(params32)
    assert params32["params"]["dec_deconv1"]["kernel"].shape == (5, 5, 128, 64)


def test_init_is_glorot_uniform_with_zero_bias(params32):
    """PAPER.md §3: glorot-uniform kernels (bound sqrt(6 / (fan_in + fan_out))), zero biases."""
    k = params32["params"]["enc_conv1"]["kernel"]  # (4, 4, 32, 64)
    bound = np.sqrt(6.0 / (16 * 32 + 16 * 64))
    assert float(jnp.max(jnp.abs(k))) <= bound
    assert float(jnp.max(jnp.abs(k))) > 0.9 * bound
    for layer in params32["params"].values():
        assert not np.any(np.asarray(layer["bias"]))


def test_shapes_and_ranges(params32):
    model = ConvVAE(32)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 64, 64, 3))
    recon, mu, logvar = jax.jit(model.apply)(params32, x, jax.random.PRNGKey(2))
    assert recon.shape == (3, 64, 64, 3) and mu.shape == logvar.shape == (3, 32)
    assert float(recon.min()) > 0.0 and float(recon.max()) < 1.0
    mu2, logvar2 = jax.jit(functools.partial(model.apply, method=ConvVAE.encode))(params32, x)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(logvar, logvar2)
    dec = jax.jit(functools.partial(model.apply, method=ConvVAE.decode))(params32, mu)
    assert dec.shape == (3, 64, 64, 3)


def test_impl_resolution():
    assert resolve_impl("auto") == "fast"
    assert resolve_impl("reference") == "reference"
    with pytest.raises(ValueError, match="impl"):
        resolve_impl("cudnn")


def _assert_equals_layer(fast, layer, x_shape: tuple, k: int, seed: int) -> tuple:
    """fast(x, w) == the bias-free Flax `layer` with kernel w: forward, input and kernel grads.
    Returns the output shape."""
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, (k, k, x_shape[-1], layer.features))
    ref = lambda x, w: layer.apply({"params": {"kernel": w}}, x)  # noqa: E731
    y = jax.jit(ref)(x, w)
    g = jax.random.normal(kg, y.shape)
    np.testing.assert_allclose(jax.jit(fast)(x, w), y, rtol=1e-4, atol=1e-4)
    dref = jax.jit(lambda x, w, g: jax.vjp(ref, x, w)[1](g))(x, w, g)
    dfast = jax.jit(lambda x, w, g: jax.vjp(fast, x, w)[1](g))(x, w, g)
    for a, b in zip(dfast, dref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    return y.shape


def _conv(co: int, k: int):
    import flax.linen as nn

    return nn.Conv(co, (k, k), strides=(2, 2), padding="VALID", use_bias=False)


def _conv_transpose(co: int, k: int):
    import flax.linen as nn

    return nn.ConvTranspose(co, (k, k), strides=(2, 2), padding="VALID", use_bias=False)


@pytest.mark.parametrize(
    "x_shape, k, co",
    [((2, 31, 31, 5), 4, 6), ((2, 6, 6, 3), 4, 2)],  # odd and even input sizes
)
def test_conv_s2_equals_nn_conv(x_shape, k, co):
    """Fast strided conv == nn.Conv('VALID', stride 2): forward, input and kernel gradients."""
    _assert_equals_layer(conv_s2, _conv(co, k), x_shape, k, seed=3)


@pytest.mark.parametrize(
    "x_shape, k, co",
    [((2, 1, 1, 7), 5, 4), ((2, 5, 5, 6), 5, 3), ((2, 13, 13, 4), 6, 5)],  # 1x1, odd, even k
)
def test_conv_transpose_s2_equals_nn_conv_transpose(x_shape, k, co):
    """Fast transposed conv == nn.ConvTranspose('VALID', stride 2), odd and even kernels."""
    shape = _assert_equals_layer(conv_transpose_s2, _conv_transpose(co, k), x_shape, k, seed=4)
    assert shape[1] == 2 * (x_shape[1] - 1) + k


@pytest.mark.parametrize("im2col", [True, False])
@pytest.mark.parametrize("chunk_floats", [1 << 30, 3000])  # whole batch; chunks of 1-2 frames
def test_stride1_forms_equal_lax_conv(monkeypatch, im2col, chunk_floats):
    """`_corr`, `_full` and `_corr_wgrad` equal XLA's stride-1 convolution and its kernel
    gradient, in both forms, on the whole batch and in batch chunks (5 frames: the last chunk
    is zero-padded)."""
    from jax import lax

    from dreamjax.models.ops import conv as vae

    monkeypatch.setattr(vae, "_CHUNK_FLOATS", chunk_floats)
    monkeypatch.setattr(vae, "_CHUNK_BACKENDS", (jax.default_backend(),))
    kx, kg, kd = jax.random.split(jax.random.PRNGKey(9), 3)
    x = jax.random.normal(kx, (5, 7, 6, 4))
    g = jax.random.normal(kg, (3, 3, 4, 6))
    dn = ("NHWC", "HWIO", "NHWC")
    corr = lambda x, g: lax.conv_general_dilated(x, g, (1, 1), "VALID", dimension_numbers=dn)  # noqa: E731
    full = lambda x, g: lax.conv_general_dilated(  # noqa: E731
        x, g[::-1, ::-1], (1, 1), [(2, 2), (2, 2)], dimension_numbers=dn
    )
    y = corr(x, g)
    np.testing.assert_allclose(
        jax.jit(lambda x, g: vae._corr(x, g, 5, 4, im2col))(x, g), y, rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        jax.jit(lambda x, g: vae._full(x, g, im2col))(x, g), full(x, g), rtol=1e-5, atol=1e-4
    )
    dy = jax.random.normal(kd, y.shape)
    dg = jax.vjp(lambda g: corr(x, g), g)[1](dy)[0]
    np.testing.assert_allclose(
        jax.jit(lambda x, dy: vae._corr_wgrad(x, dy, 3))(x, dy), dg, rtol=1e-5, atol=1e-4
    )


def test_chunked_layers_equal_reference(monkeypatch):
    """The VAE's conv and transposed-conv layers run in batch chunks (budget forced small: one
    frame per chunk) and equal nn.Conv / nn.ConvTranspose, forward and both gradients."""
    from dreamjax.models.ops import conv as vae

    monkeypatch.setattr(vae, "_CHUNK_FLOATS", 5000)
    monkeypatch.setattr(vae, "_CHUNK_BACKENDS", (jax.default_backend(),))
    assert vae._n_chunks(3, 4000) == 3 and vae._n_chunks(100, 400) == 10
    cases = [
        (conv_s2, _conv(6, 4), (3, 15, 15, 4), 4),
        (conv_transpose_s2, _conv_transpose(5, 5), (3, 5, 5, 6), 5),
        (conv_transpose_s2, _conv_transpose(3, 6), (3, 9, 9, 4), 6),
    ]
    for fast, layer, x_shape, k in cases:
        _assert_equals_layer(fast, layer, x_shape, k, seed=10)


def test_fast_model_equals_reference_model(params32):
    """Whole VAE: fast and reference impls agree on outputs, loss and every parameter gradient."""
    x = jax.random.randint(jax.random.PRNGKey(5), (4, 64, 64, 3), 0, 256).astype(jnp.uint8)
    key = jax.random.PRNGKey(6)
    outs = {}
    for impl in ("fast", "reference"):
        fn = functools.partial(vae_loss_fn, model=ConvVAE(32, impl=impl), kl_tolerance=0.5)
        outs[impl] = jax.jit(jax.value_and_grad(fn, has_aux=True))(params32, x, key)
    (lf, mf), gf = outs["fast"]
    (lr, mr), gr = outs["reference"]
    np.testing.assert_allclose(lf, lr, rtol=1e-5)
    np.testing.assert_allclose(mf["r_loss"], mr["r_loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gr), strict=True):
        scale = float(jnp.max(jnp.abs(b))) + 1e-8
        np.testing.assert_allclose(a / scale, b / scale, atol=1e-4)


def test_fast_gradient_has_no_dilated_convolution(params32):
    """The point of `fast`: no (slow on XLA:CPU) dilated convolution in forward or backward."""
    fn = functools.partial(vae_loss_fn, model=ConvVAE(32, impl="fast"), kl_tolerance=0.5)
    x = jnp.zeros((2, 64, 64, 3), jnp.uint8)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: fn(p, x, jax.random.PRNGKey(0))[0]))(params32))
    assert "conv_general_dilated" not in jaxpr


def test_kl_zero_at_prior_and_floor_applies():
    """mu = 0, logvar = 0 has KL 0; the floor kl_tolerance * Z = 16 nats is what the loss adds."""
    x = jnp.full((2, 64, 64, 3), 0.25)
    recon = jnp.full((2, 64, 64, 3), 0.5)
    z = jnp.zeros((2, 32))
    loss, m = vae_loss(recon, x, z, z, kl_tolerance=0.5)
    r = 64 * 64 * 3 * 0.25**2
    np.testing.assert_allclose(m["r_loss"], r, rtol=1e-6)
    np.testing.assert_allclose(m["kl"], 16.0, rtol=1e-6)
    np.testing.assert_allclose(loss, r + 16.0, rtol=1e-6)
    _, m0 = vae_loss(recon, x, z, z, kl_tolerance=0.0)
    assert float(m0["kl"]) == 0.0


def test_kl_matches_closed_form_above_floor():
    """Analytic KL(N(mu, e^logvar) || N(0, 1)) per sample, floored per sample, then batch mean."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 32)) * np.array([[3.0], [0.1], [2.0], [0.0], [1.0]])
    logvar = rng.normal(size=(5, 32)) * 0.5
    var = np.exp(logvar)
    per = 0.5 * np.sum(var + mu**2 - 1.0 - logvar, axis=1)
    expected = np.mean(np.maximum(per, 16.0))
    x = jnp.zeros((5, 64, 64, 3))
    _, m = vae_loss(x, x, jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32))
    np.testing.assert_allclose(m["kl"], expected, rtol=1e-5)
    assert per.min() < 16.0 < per.max()  # both sides of the floor exercised


def test_loss_fn_jit_equals_eager(params32):
    x = jax.random.randint(jax.random.PRNGKey(7), (2, 64, 64, 3), 0, 256).astype(jnp.uint8)
    fn = functools.partial(vae_loss_fn, model=ConvVAE(32), kl_tolerance=0.5)
    key = jax.random.PRNGKey(8)
    eager, em = fn(params32, x, key)
    jitted, jm = jax.jit(fn)(params32, x, key)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    np.testing.assert_allclose(jm["kl"], em["kl"], rtol=1e-5)


def _carracing_frames(n: int) -> np.ndarray:
    from dreamjax.envs.carracing import make_raw_env, preprocess

    env = make_raw_env(fast=False)  # gymnasium's own actions and 96x96 frames
    try:
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        frames = []
        for _ in range(n):
            a = np.array([rng.uniform(-1, 1), rng.uniform(0, 1), 0.0], np.float32)
            obs, *_ = env.step(a)
            frames.append(preprocess(obs))
    finally:
        env.close()
    return np.stack(frames)


def test_loss_decreases_on_real_carracing_frames(params32):
    """30 Adam steps (lr 1e-3) on 16 real CarRacing frames cut the reconstruction loss."""
    frames = jnp.asarray(_carracing_frames(50)[::3][:16])
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == jnp.uint8
    fn = functools.partial(vae_loss_fn, model=ConvVAE(32), kl_tolerance=0.5)
    tx = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state, key):
        (loss, m), g = jax.value_and_grad(fn, has_aux=True)(params, frames, key)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, m["r_loss"]

    params, opt_state = params32, tx.init(params32)
    losses = []
    for i in range(30):
        params, opt_state, r = step(params, opt_state, jax.random.PRNGKey(i))
        losses.append(float(r))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
