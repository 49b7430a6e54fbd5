"""V: the convolutional VAE of World Models (PAPER.md §1.3, §2.3).

Two implementations of the same function with the same parameter tree:

- `reference`: Flax `nn.Conv` / `nn.ConvTranspose` (stride 2, 'VALID').
- `fast` (the default): each strided conv and transposed conv, and (through custom VJPs) each
  of their input and kernel gradients, is reshapes/slices/pads around 2-D matmuls, with no
  dilated convolution anywhere (XLA:CPU runs those in a slow generic loop). A stride-2 kxk conv
  is a (k/2)x(k/2) stride-1 correlation of the space-to-depth input; a stride-2 transposed conv
  is a stride-1 full correlation to 4*Co sub-pixel channels + depth-to-space. Each stride-1
  correlation is either im2col + GEMM or one GEMM of every position with all taps + a shifted
  sum, whichever moves fewer bytes per multiply-add, and on CPU it runs in batch chunks sized
  for the cache (the kernels are in `dreamjax.models.ops.conv`). `benchmarks/vae.py`: about 6x
  faster than `reference` to train on a 2-core CPU, and on par with or faster than PyTorch there;
  about 2x faster than `reference` and PyTorch on an H100 at batch 100.

Kernels keep the `nn.Conv` / `nn.ConvTranspose` layout (kh, kw, in, out), so a checkpoint loads
into either implementation.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamjax.models.ops.conv import conv_s2, conv_transpose_s2

FRAME_SHAPE = (64, 64, 3)
ENC_FEATURES = (32, 64, 128, 256)  # kernel 4, stride 2 (PAPER.md §1.3)
DEC_LAYERS = ((128, 5), (64, 5), (32, 6), (3, 6))  # (features, kernel), stride 2 (PAPER.md §1.3)
Impl = Literal["auto", "fast", "reference"]

_kernel_init = nn.initializers.glorot_uniform()  # TF default (PAPER.md §3)
_bias_init = nn.initializers.zeros


def resolve_impl(impl: Impl) -> str:
    """'auto' -> 'fast' (every backend).

    On CPU the reference lowers transposed convs and strided-conv input gradients to dilated
    convs (a slow generic loop); on an H100 the fast impl also trains about 2x faster than the
    reference at batch 100 (and 4x at batch 1000), `benchmarks/vae.py`.
    """
    if impl == "auto":
        return "fast"
    if impl not in ("fast", "reference"):
        raise ValueError(f"ConvVAE: impl must be 'auto', 'fast' or 'reference', got {impl!r}")
    return impl


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
