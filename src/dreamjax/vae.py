"""V: the convolutional VAE of World Models (PAPER.md §1.3, §2.3).

Two implementations of the same function with the same parameter tree:

- `reference`: Flax `nn.Conv` / `nn.ConvTranspose` (stride 2, 'VALID').
- `fast`: each strided conv and transposed conv, and (through custom VJPs) each of their input
  and kernel gradients, is reshapes/slices/pads around one 2-D matmul: a stride-2 kxk conv is
  a (k/2)x(k/2) stride-1 conv on the space-to-depth input (im2col + GEMM); a stride-2
  transposed conv is a sub-pixel stride-1 conv to 4*Co channels + depth-to-space (odd k
  zero-padded to even, output cropped). The input gradient of one is the forward of the other.
  No dilated convolution anywhere (XLA:CPU runs those in a slow generic loop); about 6x faster
  than `reference` to train on CPU (`benchmarks/vae.py`).

Kernels keep the `nn.Conv` / `nn.ConvTranspose` layout (kh, kw, in, out), so a checkpoint loads
into either implementation.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

FRAME_SHAPE = (64, 64, 3)
ENC_FEATURES = (32, 64, 128, 256)  # kernel 4, stride 2 (PAPER.md §1.3)
DEC_LAYERS = ((128, 5), (64, 5), (32, 6), (3, 6))  # (features, kernel), stride 2 (PAPER.md §1.3)
Impl = Literal["auto", "fast", "reference"]

_kernel_init = nn.initializers.glorot_uniform()  # TF default (PAPER.md §3)
_bias_init = nn.initializers.zeros


def resolve_impl(impl: Impl) -> str:
    """'auto' -> 'fast' on CPU, 'reference' elsewhere.

    On CPU the reference lowers transposed convs and strided-conv input gradients to dilated
    convs (slow generic loop). On GPU, cuDNN runs `nn.Conv`/`nn.ConvTranspose` directly; it has
    not been benchmarked against `fast` there, so the reference is the safe choice.
    """
    if impl == "auto":
        return "fast" if jax.default_backend() == "cpu" else "reference"
    if impl not in ("fast", "reference"):
        raise ValueError(f"dreamjax.vae: impl must be 'auto', 'fast' or 'reference', got {impl!r}")
    return impl


def _space_to_depth(x: jax.Array) -> jax.Array:
    """(B, 2H, 2W, C) -> (B, H, W, 4C) with [.., (ry, rx, c)] = x[2h + ry, 2w + rx, c]."""
    B, H2, W2, C = x.shape
    x = x.reshape(B, H2 // 2, 2, W2 // 2, 2, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H2 // 2, W2 // 2, 4 * C)


def _depth_to_space(y: jax.Array) -> jax.Array:
    """(B, H, W, 4C) -> (B, 2H, 2W, C); inverse of `_space_to_depth`."""
    B, H, W, C4 = y.shape
    y = y.reshape(B, H, W, 2, 2, C4 // 4).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(B, 2 * H, 2 * W, C4 // 4)


def _fit(x: jax.Array, H: int, W: int) -> jax.Array:
    """Crop or zero-pad (at the end) the spatial dims of x (B, h, w, C) to (H, W)."""
    x = x[:, :H, :W]
    return jnp.pad(x, ((0, 0), (0, H - x.shape[1]), (0, W - x.shape[2]), (0, 0)))


def _patches(x: jax.Array, K: int, Ho: int, Wo: int) -> jax.Array:
    """Stride-1 KxK patches: x (B, >=Ho+K-1, >=Wo+K-1, C) -> (B*Ho*Wo, K*K*C), (uy, ux, c)."""
    B, C = x.shape[0], x.shape[-1]
    cols = [x[:, uy : uy + Ho, ux : ux + Wo] for uy in range(K) for ux in range(K)]
    return jnp.concatenate(cols, axis=-1).reshape(B * Ho * Wo, K * K * C)


def _patches_s2(x: jax.Array, K: int, Ho: int, Wo: int) -> jax.Array:
    """Stride-2 (2K)x(2K) patches via space-to-depth: (B*Ho*Wo, K*K*4*C) in (my, mx, ry, rx, c)
    order, where kernel tap t = 2m + r reads x[2o + t]; x is cropped/zero-padded to fit."""
    xs = _space_to_depth(_fit(x, 2 * (Ho + K - 1), 2 * (Wo + K - 1)))
    return _patches(xs, K, Ho, Wo)


def _kernel_s2(w: jax.Array) -> jax.Array:
    """(2K, 2K, Ci, Co) kernel -> (K*K*4*Ci, Co) matrix matching `_patches_s2`."""
    K2, _, Ci, Co = w.shape
    K = K2 // 2
    return w.reshape(K, 2, K, 2, Ci, Co).transpose(0, 2, 1, 3, 4, 5).reshape(K * K * 4 * Ci, Co)


def _unkernel_s2(m: jax.Array, K: int, Ci: int, Co: int) -> jax.Array:
    """Inverse of `_kernel_s2`: (K*K*4*Ci, Co) -> (2K, 2K, Ci, Co)."""
    m = m.reshape(K, K, 2, 2, Ci, Co).transpose(0, 2, 1, 3, 4, 5)
    return m.reshape(2 * K, 2 * K, Ci, Co)


def _pad_even(w: jax.Array) -> jax.Array:
    """Zero-pad a (k, k, Ci, Co) kernel at the end to an even size (2K, 2K, Ci, Co)."""
    e = w.shape[0] % 2
    return jnp.pad(w, ((0, e), (0, e), (0, 0), (0, 0)))


def _conv_s2_impl(x: jax.Array, w: jax.Array, Ho: int, Wo: int):
    """y[o] = sum_t x[2o + t] w[t], w (2K, 2K, Ci, Co): (B, Ho, Wo, Co) and the patches."""
    K, Co = w.shape[0] // 2, w.shape[-1]
    cols = _patches_s2(x, K, Ho, Wo)
    return (cols @ _kernel_s2(w)).reshape(x.shape[0], Ho, Wo, Co), cols


def _deconv_s2_impl(x: jax.Array, wf: jax.Array, Ho: int, Wo: int) -> jax.Array:
    """out[2i + t] += x[i] wf[t], wf (2K, 2K, Ci, Co): (B, Ho, Wo, Co), Ho <= 2(H + K - 1).

    Sub-pixel form: out[2q + r] = sum_m x[q - m] wf[2m + r], a stride-1 KxK conv of the
    (K-1)-padded input to 4*Co channels, then depth-to-space.
    """
    B, H, W, Ci = x.shape
    K, Co = wf.shape[0] // 2, wf.shape[-1]
    Hq, Wq = H + K - 1, W + K - 1
    xp = jnp.pad(x, ((0, 0), (K - 1, K - 1), (K - 1, K - 1), (0, 0)))
    # g[uy, ux, ci, (ry, rx, co)] = wf[2(K-1-uy) + ry, 2(K-1-ux) + rx, ci, co]
    g = wf.reshape(K, 2, K, 2, Ci, Co)[::-1, :, ::-1].transpose(0, 2, 4, 1, 3, 5)
    y = _patches(xp, K, Hq, Wq) @ g.reshape(K * K * Ci, 4 * Co)
    return _fit(_depth_to_space(y.reshape(B, Hq, Wq, 4 * Co)), Ho, Wo)


@jax.custom_vjp
def conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """== nn.Conv(kernel_size=(k, k), strides=2, padding='VALID') without bias, k even.

    x (B, H, W, Ci), w (k, k, Ci, Co) -> (B, (H-k)//2+1, (W-k)//2+1, Co). Forward: im2col on
    the space-to-depth input + one matmul; input gradient: `conv_transpose_s2`'s forward.
    """
    return _conv_s2_fwd(x, w)[0]


def _conv_s2_fwd(x, w):
    k = w.shape[0]
    assert k % 2 == 0 and w.shape[1] == k and w.shape[2] == x.shape[-1], (x.shape, w.shape)
    Ho, Wo = (x.shape[1] - k) // 2 + 1, (x.shape[2] - k) // 2 + 1
    return _conv_s2_impl(x, w, Ho, Wo)[0], (x, w)


def _conv_s2_bwd(res, dy):
    x, w = res
    K2, _, Ci, Co = w.shape
    B, Ho, Wo, _ = dy.shape
    H, W = x.shape[1], x.shape[2]
    cols = _patches_s2(x, K2 // 2, Ho, Wo)
    dw = _unkernel_s2(cols.T @ dy.reshape(-1, Co), K2 // 2, Ci, Co)
    # dx[2o + t] += dy[o] w[t]^T
    dx = _deconv_s2_impl(dy, w.transpose(0, 1, 3, 2), H, W)
    return dx, dw


conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """== nn.ConvTranspose(kernel_size=(k, k), strides=2, padding='VALID') without bias.

    x (B, H, W, Ci), w (k, k, Ci, Co) -> (B, 2(H-1)+k, 2(W-1)+k, Co). lax.conv_transpose
    (no kernel transposition) correlates the dilated input with w, i.e. out[2i + t] += x[i] wf[t]
    with wf the spatially flipped kernel (odd k: zero-padded to even). Forward: sub-pixel conv;
    gradients: im2col of the output gradient + two matmuls (input grad = `conv_s2`'s forward).
    A 1x1 input (the first decoder layer) is a dense layer.
    """
    B, H, W, Ci = x.shape
    if H == 1 and W == 1:
        k = w.shape[0]
        y = x.reshape(B, Ci) @ w[::-1, ::-1].transpose(2, 0, 1, 3).reshape(Ci, -1)
        return y.reshape(B, k, k, -1)
    return _conv_transpose_s2(x, w)


@jax.custom_vjp
def _conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_transpose_s2_fwd(x, w)[0]


def _conv_transpose_s2_fwd(x, w):
    k = w.shape[0]
    assert w.shape[1] == k and w.shape[2] == x.shape[-1], (x.shape, w.shape)
    B, H, W, Ci = x.shape
    Ho, Wo = 2 * (H - 1) + k, 2 * (W - 1) + k
    return _deconv_s2_impl(x, _pad_even(w[::-1, ::-1]), Ho, Wo), (x, w)


def _conv_transpose_s2_bwd(res, dout):
    x, w = res
    B, H, W, Ci = x.shape
    k, Co = w.shape[0], w.shape[-1]
    wf = _pad_even(w[::-1, ::-1])
    K = wf.shape[0] // 2
    cols = _patches_s2(dout, K, H, W)  # (B*H*W, K*K*4*Co): dout[2i + t]
    # dx[i] = sum_t dout[2i + t] wf[t]^T ; dwf[t] = sum_i x[i]^T dout[2i + t]
    dx = (cols @ _kernel_s2(wf.transpose(0, 1, 3, 2))).reshape(B, H, W, Ci)
    dwf = _unkernel_s2(
        (x.reshape(-1, Ci).T @ cols).reshape(Ci, -1, Co).transpose(1, 0, 2).reshape(-1, Co),
        K,
        Ci,
        Co,
    )
    return dx, dwf[:k, :k][::-1, ::-1]


_conv_transpose_s2.defvjp(_conv_transpose_s2_fwd, _conv_transpose_s2_bwd)


class _FastConv(nn.Module):
    """Same parameters as nn.Conv(features, (4, 4), strides=2, padding='VALID')."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _kernel_init, (4, 4, x.shape[-1], self.features))
        bias = self.param("bias", _bias_init, (self.features,))
        return conv_s2(x, kernel) + bias


class _FastConvTranspose(nn.Module):
    """Same parameters as nn.ConvTranspose(features, (k, k), strides=2, padding='VALID')."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", _kernel_init, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", _bias_init, (self.features,))
        return conv_transpose_s2(x, kernel) + bias


class ConvVAE(nn.Module):
    """ConvVAE (PAPER.md §1.3): 64x64x3 frames in [0, 1] <-> z (z_dim); 4,348,547 params at z=32."""

    z_dim: int = 32
    impl: Impl = "auto"

    def setup(self):
        impl = resolve_impl(self.impl)
        if impl == "fast":
            self.enc = [_FastConv(f, name=f"enc_conv{i}") for i, f in enumerate(ENC_FEATURES)]
            self.dec = [
                _FastConvTranspose(f, k, name=f"dec_deconv{i}")
                for i, (f, k) in enumerate(DEC_LAYERS)
            ]
        else:
            self.enc = [
                nn.Conv(
                    f,
                    (4, 4),
                    strides=(2, 2),
                    padding="VALID",
                    kernel_init=_kernel_init,
                    bias_init=_bias_init,
                    name=f"enc_conv{i}",
                )
                for i, f in enumerate(ENC_FEATURES)
            ]
            self.dec = [
                nn.ConvTranspose(
                    f,
                    (k, k),
                    strides=(2, 2),
                    padding="VALID",
                    kernel_init=_kernel_init,
                    bias_init=_bias_init,
                    name=f"dec_deconv{i}",
                )
                for i, (f, k) in enumerate(DEC_LAYERS)
            ]
        dense = dict(kernel_init=_kernel_init, bias_init=_bias_init)
        self.enc_mu = nn.Dense(self.z_dim, name="enc_mu", **dense)
        self.enc_logvar = nn.Dense(self.z_dim, name="enc_logvar", **dense)
        self.dec_dense = nn.Dense(1024, name="dec_dense", **dense)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, 64, 64, 3) float in [0, 1] -> (mu, logvar), each (B, Z)."""
        assert x.shape[1:] == FRAME_SHAPE, x.shape
        h = x
        for layer in self.enc:
            h = nn.relu(layer(h))
        h = h.reshape(h.shape[0], -1)  # (B, 2*2*256) in (H, W, C) order
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, Z) -> reconstruction (B, 64, 64, 3) in (0, 1)."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, z.shape
        h = self.dec_dense(z).reshape(z.shape[0], 1, 1, 1024)
        for layer in self.dec[:-1]:
            h = nn.relu(layer(h))
        return nn.sigmoid(self.dec[-1](h))

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x (B, 64, 64, 3) -> (recon (B, 64, 64, 3), mu (B, Z), logvar (B, Z)).

        z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from `key`.
        """
        mu, logvar = self.encode(x)
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar


def init_vae(key: jax.Array, z_dim: int = 32, impl: Impl = "auto"):
    """Parameters of `ConvVAE(z_dim)` (identical tree for every impl)."""
    model = ConvVAE(z_dim=z_dim, impl=impl)
    x = jnp.zeros((1, *FRAME_SHAPE), jnp.float32)
    return jax.jit(model.init)(key, x, jax.random.PRNGKey(0))


def vae_loss(
    recon: jax.Array,
    x: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    kl_tolerance: float = 0.5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """World Models VAE loss (PAPER.md §1.3); recon, x (B, 64, 64, 3), mu, logvar (B, Z).

    r_loss = batch mean of per-frame summed squared error; kl = batch mean of
    max(KL(q(z|x) || N(0, I)), kl_tolerance * Z) per sample; loss = r_loss + kl.
    """
    assert recon.shape == x.shape and mu.shape == logvar.shape, (recon.shape, x.shape)
    r_loss = jnp.mean(jnp.sum(jnp.square(x - recon), axis=(1, 2, 3)))
    kl = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)
    kl = jnp.mean(jnp.maximum(kl, kl_tolerance * mu.shape[-1]))
    return r_loss + kl, {"r_loss": r_loss, "kl": kl}


def vae_loss_fn(
    params, batch_uint8: jax.Array, key: jax.Array, *, model: ConvVAE, kl_tolerance: float = 0.5
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`dreamjax.train.fit` loss: uint8 frames (B, 64, 64, 3) -> (loss, {"r_loss", "kl"})."""
    assert batch_uint8.shape[1:] == FRAME_SHAPE, batch_uint8.shape
    x = batch_uint8.astype(jnp.float32) / 255.0
    recon, mu, logvar = model.apply(params, x, key)
    return vae_loss(recon, x, mu, logvar, kl_tolerance)
