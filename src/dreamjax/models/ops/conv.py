"""Convolutions as GEMMs for V on CPU (PAPER.md §1.3 layers), with hand-written gradients.

A stride-2 kxk conv is a (k/2)x(k/2) stride-1 correlation of the space-to-depth input; a stride-2
transposed conv is a stride-1 full correlation to 4*Co sub-pixel channels + depth-to-space (odd k
has its own path without zero taps). Each stride-1 correlation is either im2col + GEMM or one GEMM
of every position with all taps + a shifted sum, whichever moves fewer bytes per multiply-add
(`_prefer_im2col`); on CPU it runs in batch chunks sized for the cache (`_CHUNK_FLOATS`). No
dilated convolution is used anywhere: XLA:CPU runs those (transposed convs, input gradients of
strided convs) in a slow generic loop. `_dense_taps` (inside `conv_transpose_s2`) is the
1x1-input decoder layer as one GEMM per tap. Kernels keep the `nn.Conv` / `nn.ConvTranspose`
layout (kh, kw, in, out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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


def _s2d(x: jax.Array, H: int, W: int) -> jax.Array:
    """x (B, h, w, C) cropped/zero-padded to (2H, 2W), space-to-depth: (B, H, W, 4C).

    Materialised (optimization barrier): fused into its consumers' slices, XLA:CPU recomputes
    the transpose's index arithmetic per element, several times slower than one copy.
    """
    return lax.optimization_barrier(_space_to_depth(_fit(x, 2 * H, 2 * W)))


def _patches(x: jax.Array, K: int, Ho: int, Wo: int) -> jax.Array:
    """Stride-1 KxK patches (im2col): x (B, >=Ho+K-1, >=Wo+K-1, C) -> (B*Ho*Wo, K*K*C)."""
    B, C = x.shape[0], x.shape[-1]
    cols = [x[:, uy : uy + Ho, ux : ux + Wo] for uy in range(K) for ux in range(K)]
    return jnp.concatenate(cols, axis=-1).reshape(B * Ho * Wo, K * K * C)


_CHUNK_FLOATS = 1 << 20
"""Floats (4 MiB) in the largest intermediate of one batch chunk: the batch-heavy part of a
layer runs chunk by chunk so that its intermediates stay in the CPU's last-level cache."""


_CHUNK_BACKENDS = ("cpu",)
"""Backends whose layers run in batch chunks."""


def _n_chunks(batch: int, floats_per_frame: int) -> int:
    """Number of batch chunks that keeps a chunk's intermediate within `_CHUNK_FLOATS` on CPU
    (1 elsewhere: an accelerator wants the whole batch at once). Prefers a chunk size that
    divides the batch (no zero-padded frames) when one is at least half the largest size."""
    if jax.default_backend() not in _CHUNK_BACKENDS:
        return 1
    largest = max(1, _CHUNK_FLOATS // floats_per_frame)
    if largest >= batch:
        return 1
    for c in range(largest, max(1, largest // 2) - 1, -1):
        if batch % c == 0:
            return batch // c
    return -(-batch // largest)


def _split(x: jax.Array, n: int) -> jax.Array:
    """(B, ...) -> (n, ceil(B / n), ...), zero-padded at the end."""
    c = -(-x.shape[0] // n)
    if n * c > x.shape[0]:
        x = jnp.pad(x, ((0, n * c - x.shape[0]),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape(n, c, *x.shape[1:])


def _map_chunks(f, n: int, *xs: jax.Array) -> jax.Array:
    """f(*xs) computed on n batch chunks (lax.map) and concatenated; f is per-frame."""
    if n == 1:
        return f(*xs)
    y = lax.map(lambda a: f(*a), tuple(_split(x, n) for x in xs))
    return y.reshape(-1, *y.shape[2:])[: xs[0].shape[0]]


def _sum_chunks(f, n: int, *xs: jax.Array) -> jax.Array:
    """f(*xs) for f a sum over the batch, accumulated over n batch chunks (lax.scan)."""
    if n == 1:
        return f(*xs)
    parts = tuple(_split(x, n) for x in xs)
    zero = jnp.zeros_like(jax.eval_shape(f, *(p[0] for p in parts)))
    return lax.scan(lambda acc, a: (acc + f(*a), None), zero, parts)[0]


def _tap_matrix(g: jax.Array) -> jax.Array:
    """(K, K, C, N) kernel -> (C, K*K*N): one GEMM multiplies a position by every tap."""
    K, _, C, N = g.shape
    return g.transpose(2, 0, 1, 3).reshape(C, K * K * N)


_IM2COL_FLOAT_COST = 150.0
"""Cost of writing and reading back one im2col float, in multiply-adds (XLA:CPU, 2 cores)."""
_TAP_FLOAT_COST = 75.0
"""Cost of writing and reading back one per-tap product float, in multiply-adds."""


def _prefer_im2col(Ho: int, Wo: int, H: int, W: int, C: int, N: int) -> bool:
    """Whether im2col + GEMM is cheaper than per-tap GEMM + shifted sum for a stride-1
    correlation of (H, W, C) to (Ho, Wo, N): multiply-adds plus memory traffic, per tap."""
    im2col = Ho * Wo * C * (_IM2COL_FLOAT_COST + N)
    taps = H * W * N * (_TAP_FLOAT_COST + C)
    return im2col <= taps


def _corr(x: jax.Array, g: jax.Array, Ho: int, Wo: int, im2col: bool | None = None) -> jax.Array:
    """Stride-1 correlation y[o] = sum_m x[o + m] g[m]: x (B, >=Ho+K-1, >=Wo+K-1, C),
    g (K, K, C, N) -> (B, Ho, Wo, N).

    Two exact forms, chosen by `_prefer_im2col` (memory traffic bounds these layers on CPU as
    much as multiply-adds do): im2col + one GEMM, or one GEMM of every input position with all
    taps followed by a shifted sum (more multiply-adds, no im2col copy). Runs in batch chunks.
    """
    B, _, _, C = x.shape
    K, N = g.shape[0], g.shape[-1]
    x = x[:, : Ho + K - 1, : Wo + K - 1]
    if im2col is None:
        im2col = _prefer_im2col(Ho, Wo, Ho + K - 1, Wo + K - 1, C, N)
    if im2col:
        gm = g.reshape(K * K * C, N)

        def f(xc):
            return (_patches(xc, K, Ho, Wo) @ gm).reshape(xc.shape[0], Ho, Wo, N)

        return _map_chunks(f, _n_chunks(B, Ho * Wo * K * K * C), x)
    gm = _tap_matrix(g)

    def f(xc):
        z = (xc.reshape(-1, C) @ gm).reshape(*xc.shape[:3], K * K, N)
        return sum(z[:, i : i + Ho, j : j + Wo, i * K + j] for i in range(K) for j in range(K))

    return _map_chunks(f, _n_chunks(B, x.shape[1] * x.shape[2] * K * K * N), x)


def _full(x: jax.Array, g: jax.Array, im2col: bool | None = None) -> jax.Array:
    """Full (scatter) correlation out[i + m] += x[i] g[m]: x (B, H, W, C), g (K, K, C, N)
    -> (B, H+K-1, W+K-1, N); the adjoint of `_corr` in x. Same choice of form as `_corr`."""
    B, H, W, C = x.shape
    K, N = g.shape[0], g.shape[-1]
    Ho, Wo = H + K - 1, W + K - 1
    if im2col is None:
        im2col = _prefer_im2col(Ho, Wo, H, W, C, N)
    if im2col:
        xp = jnp.pad(x, ((0, 0), (K - 1, K - 1), (K - 1, K - 1), (0, 0)))
        return _corr(xp, g[::-1, ::-1], Ho, Wo, im2col=True)
    gm = _tap_matrix(g)

    def f(xc):
        z = (xc.reshape(-1, C) @ gm).reshape(*xc.shape[:3], K * K, N)
        pads = [
            ((0, 0), (i, K - 1 - i), (j, K - 1 - j), (0, 0)) for i in range(K) for j in range(K)
        ]
        return sum(jnp.pad(z[:, :, :, t], p) for t, p in enumerate(pads))

    return _map_chunks(f, _n_chunks(B, H * W * K * K * N), x)


def _corr_wgrad(x: jax.Array, dy: jax.Array, K: int) -> jax.Array:
    """Gradient of `_corr(x, g, Ho, Wo)` in g: dg[m] = sum_o x[o + m]^T dy[o] -> (K, K, C, N).

    One GEMM per tap over all positions of a batch chunk (no im2col)."""
    B, Ho, Wo, N = dy.shape
    C = x.shape[-1]

    def f(xc, dc):
        d = dc.reshape(-1, N)
        taps = [
            xc[:, i : i + Ho, j : j + Wo].reshape(-1, C).T @ d for i in range(K) for j in range(K)
        ]
        return jnp.stack(taps).reshape(K, K, C, N)

    per_frame = x.shape[1] * x.shape[2] * C + Ho * Wo * (N + C)
    return _sum_chunks(f, _n_chunks(B, per_frame), x, dy)


def _kernel_s2(w: jax.Array) -> jax.Array:
    """(2K, 2K, Ci, Co) strided kernel -> (K, K, 4*Ci, Co) kernel on the space-to-depth input,
    channels in (ry, rx, ci) order: tap t = 2m + r."""
    K2, _, Ci, Co = w.shape
    K = K2 // 2
    return w.reshape(K, 2, K, 2, Ci, Co).transpose(0, 2, 1, 3, 4, 5).reshape(K, K, 4 * Ci, Co)


def _unkernel_s2(g: jax.Array) -> jax.Array:
    """Inverse of `_kernel_s2`: (K, K, 4*Ci, Co) -> (2K, 2K, Ci, Co)."""
    K, _, C4, Co = g.shape
    g = g.reshape(K, K, 2, 2, C4 // 4, Co).transpose(0, 2, 1, 3, 4, 5)
    return g.reshape(2 * K, 2 * K, C4 // 4, Co)


def _subpixel_kernel(w: jax.Array) -> jax.Array:
    """Transposed-conv kernel (k, k, Ci, Co), k even -> (K, K, Ci, 4*Co), K = k / 2.

    nn.ConvTranspose computes out[2i + t] += x[i] wf[t] with wf the spatially flipped kernel;
    on the space-to-depth output, out_s[i + m][(ry, rx, co)] += x[i] wf[2m + r], a stride-1
    full correlation with this kernel. (Odd k takes `_deconv_odd` instead.)"""
    k, _, Ci, Co = w.shape
    assert k % 2 == 0, w.shape
    K = k // 2
    wf = w[::-1, ::-1]
    return wf.reshape(K, 2, K, 2, Ci, Co).transpose(0, 2, 4, 1, 3, 5).reshape(K, K, Ci, 4 * Co)


def _unsubpixel_kernel(g: jax.Array) -> jax.Array:
    """Inverse of `_subpixel_kernel`: (K, K, Ci, 4*Co) -> (2K, 2K, Ci, Co)."""
    K, _, Ci, Co4 = g.shape
    wf = g.reshape(K, K, Ci, 2, 2, Co4 // 4).transpose(0, 3, 1, 4, 2, 5)
    return wf.reshape(2 * K, 2 * K, Ci, Co4 // 4)[::-1, ::-1]


@jax.custom_vjp
def conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """== nn.Conv(kernel_size=(k, k), strides=2, padding='VALID') without bias, k even.

    x (B, H, W, Ci), w (k, k, Ci, Co) -> (B, (H-k)//2+1, (W-k)//2+1, Co): a stride-1
    (k/2)x(k/2) correlation of the space-to-depth input. Input gradient: the adjoint full
    correlation + depth-to-space; kernel gradient: `_corr_wgrad`.
    """
    return _conv_s2_fwd(x, w)[0]


def _conv_s2_fwd(x, w):
    k = w.shape[0]
    assert k % 2 == 0 and w.shape[1] == k and w.shape[2] == x.shape[-1], (x.shape, w.shape)
    K = k // 2
    Ho, Wo = (x.shape[1] - k) // 2 + 1, (x.shape[2] - k) // 2 + 1
    xs = _s2d(x, Ho + K - 1, Wo + K - 1)
    return _corr(xs, _kernel_s2(w), Ho, Wo), (x, xs, w)


def _conv_s2_bwd(res, dy):
    x, xs, w = res
    g = _kernel_s2(w)  # (K, K, 4Ci, Co)
    dxs = _full(dy, g.transpose(0, 1, 3, 2))  # (B, Ho+K-1, Wo+K-1, 4Ci)
    dx = _fit(_depth_to_space(dxs), x.shape[1], x.shape[2])
    return dx, _unkernel_s2(_corr_wgrad(xs, dy, g.shape[0]))


conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """== nn.ConvTranspose(kernel_size=(k, k), strides=2, padding='VALID') without bias.

    x (B, H, W, Ci), w (k, k, Ci, Co) -> (B, 2(H-1)+k, 2(W-1)+k, Co). Even k: a stride-1 full
    correlation to 4*Co sub-pixel channels + depth-to-space (`_subpixel_kernel`); odd k: one
    GEMM for the k*k taps + shifted sums per output phase (`_deconv_odd`). Input and kernel
    gradients: one im2col of the output gradient shared by their two GEMMs. A 1x1 input (the
    first decoder layer) is a dense layer per tap.
    """
    if x.shape[1] == 1 and x.shape[2] == 1:
        return _dense_taps(x, w)
    return _conv_transpose_s2(x, w)


@jax.custom_vjp
def _conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_transpose_s2_fwd(x, w)[0]


def _conv_transpose_s2_fwd(x, w):
    k = w.shape[0]
    assert w.shape[1] == k and w.shape[2] == x.shape[-1], (x.shape, w.shape)
    B, H, W, Ci = x.shape
    Ho, Wo = 2 * (H - 1) + k, 2 * (W - 1) + k
    if k % 2:
        return _fit(_deconv_odd(x, w), Ho, Wo), (x, w)
    return _fit(_depth_to_space(_full(x, _subpixel_kernel(w))), Ho, Wo), (x, w)


def _deconv_odd(x: jax.Array, w: jax.Array) -> jax.Array:
    """Odd k: the sub-pixel kernel would be 36/25 zeros (k = 5), so multiply by the k*k taps
    alone (one GEMM) and add each output phase's taps with shifts. -> (B, 2(H+K-1), ., Co)."""
    B, H, W, Ci = x.shape
    k, Co = w.shape[0], w.shape[-1]
    K = (k + 1) // 2
    wm = w[::-1, ::-1].transpose(2, 0, 1, 3).reshape(Ci, k * k * Co)  # wf taps, flipped

    def f(xc):
        z = (xc.reshape(-1, Ci) @ wm).reshape(*xc.shape[:3], k, k, Co)
        rows = []
        for ry in range(2):
            phases = []
            for rx in range(2):
                taps = [(i, j) for i in range((k - ry + 1) // 2) for j in range((k - rx + 1) // 2)]
                pads = [((0, 0), (i, K - 1 - i), (j, K - 1 - j), (0, 0)) for i, j in taps]
                terms = [z[:, :, :, 2 * i + ry, 2 * j + rx] for i, j in taps]
                phases.append(sum(jnp.pad(t, p) for t, p in zip(terms, pads, strict=True)))
            rows.append(jnp.stack(phases, 3))  # (c, H+K-1, W+K-1, rx, Co)
        out = jnp.stack(rows, 2)  # (c, H+K-1, ry, W+K-1, rx, Co)
        return out.reshape(xc.shape[0], 2 * (H + K - 1), 2 * (W + K - 1), Co)

    return _map_chunks(f, _n_chunks(B, H * W * k * k * Co), x)


def _conv_transpose_s2_bwd(res, dout):
    x, w = res
    B, H, W, Ci = x.shape
    k = w.shape[0]
    if k % 2:  # im2col of the k*k stride-2 taps of dout itself (no zero taps)
        Co = w.shape[-1]
        wm = w[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * Co, Ci)

        def cols_of(dc):
            taps = [
                dc[:, i : i + 2 * H - 1 : 2, j : j + 2 * W - 1 : 2]
                for i in range(k)
                for j in range(k)
            ]
            return jnp.concatenate(taps, axis=-1).reshape(-1, k * k * Co)

        dg, dx = _shared_im2col_grads(x, dout, cols_of, wm, H * W * k * k * Co)
        dwf = dg.reshape(Ci, k, k, Co).transpose(1, 2, 0, 3)
        return dx, dwf[::-1, ::-1]
    g = _subpixel_kernel(w)  # (K, K, Ci, 4Co)
    K, C4 = g.shape[0], g.shape[-1]
    gm = g.transpose(0, 1, 3, 2).reshape(K * K * C4, Ci)
    ds = _s2d(dout, H + K - 1, W + K - 1)  # (B, H+K-1, W+K-1, 4Co)
    dg, dx = _shared_im2col_grads(x, ds, lambda dc: _patches(dc, K, H, W), gm, H * W * K * K * C4)
    dg = dg.reshape(Ci, K, K, C4).transpose(1, 2, 0, 3)
    return dx, _unsubpixel_kernel(dg)


def _shared_im2col_grads(x, d, cols_of, wm, floats_per_frame):
    """Input and kernel gradients of a transposed conv from one im2col of its output gradient:
    cols = cols_of(d) (c*H*W, M) per batch chunk, dx = cols @ wm, dg = x^T @ cols (Ci, M)."""
    B, H, W, Ci = x.shape

    def chunk(dg, xd):
        xc, dc = xd
        cols = cols_of(dc)
        return dg + xc.reshape(-1, Ci).T @ cols, (cols @ wm).reshape(xc.shape)

    n = _n_chunks(B, floats_per_frame)
    if n == 1:
        return chunk(0.0, (x, d))
    zero = jnp.zeros((Ci, wm.shape[0]), x.dtype)
    dg, dx = lax.scan(chunk, zero, (_split(x, n), _split(d, n)))
    return dg, dx.reshape(-1, H, W, Ci)[:B]


_conv_transpose_s2.defvjp(_conv_transpose_s2_fwd, _conv_transpose_s2_bwd)


@jax.custom_vjp
def _dense_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    """Transposed conv of a 1x1 input: out[t] = x wf[t], one GEMM per tap of w (k, k, Ci, Co),
    so the (large) kernel is never transposed. (B, 1, 1, Ci) -> (B, k, k, Co)."""
    B, _, _, Ci = x.shape
    k = w.shape[0]
    x2 = x.reshape(B, Ci)
    taps = [x2 @ w[k - 1 - ty, k - 1 - tx] for ty in range(k) for tx in range(k)]
    return jnp.stack(taps, axis=1).reshape(B, k, k, w.shape[-1])


def _dense_taps_fwd(x, w):
    return _dense_taps(x, w), (x, w)


def _dense_taps_bwd(res, dout):
    x, w = res
    B, _, _, Ci = x.shape
    k = w.shape[0]
    x2 = x.reshape(B, Ci)
    dx = sum(dout[:, k - 1 - ty, k - 1 - tx] @ w[ty, tx].T for ty in range(k) for tx in range(k))
    dw = jnp.stack([x2.T @ dout[:, k - 1 - t // k, k - 1 - t % k] for t in range(k * k)])
    return dx.reshape(x.shape), dw.reshape(w.shape)


_dense_taps.defvjp(_dense_taps_fwd, _dense_taps_bwd)
