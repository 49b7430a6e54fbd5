"""Pictures: reconstruction grids, loss and fitness curves, return histograms, videos.

Every file is written atomically through `dreamjax.io`; matplotlib uses its non-interactive
backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamjax import io  # noqa: E402


def _save_fig(fig, path: str | Path) -> Path:
    path = Path(path)
    try:
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def recon_grid(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> Path:
    """A PNG with originals (top row of each pair) above their reconstructions.

    originals, recons: (N, 64, 64, 3) uint8 or float in [0, 1].
    """
    if originals.shape != recons.shape:
        raise ValueError(f"shape mismatch {originals.shape} vs {recons.shape}")

    def to_u8(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    o, r = to_u8(originals), to_u8(recons)
    n, h, w, c = o.shape
    cols = min(n, 8)
    rows = -(-n // cols)
    canvas = np.full((rows * 2 * (h + 2), cols * (w + 2), c), 255, np.uint8)
    for i in range(n):
        y, x = (i // cols) * 2 * (h + 2), (i % cols) * (w + 2)
        canvas[y : y + h, x : x + w] = o[i]
        canvas[y + h + 2 : y + 2 * h + 2, x : x + w] = r[i]
    fig = plt.figure(figsize=(canvas.shape[1] / 50, canvas.shape[0] / 50))
    plt.imshow(canvas)
    plt.axis("off")
    plt.title("V: originals (upper) and reconstructions (lower)", fontsize=8)
    return _save_fig(fig, path)


def plot_curves(
    records: Sequence[dict], keys: Sequence[str], path: str | Path, title: str, x: str = "step"
) -> Path:
    """Line plot of `keys` against `x` from metric records (one subplot per key)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        pts = [(r[x], r[k]) for r in records if k in r and x in r]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys)
        ax.set_xlabel(x)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save_fig(fig, path)


def plot_fitness(
    generations: Sequence[dict], evals: Sequence[dict], path: str | Path, title: str
) -> Path:
    """CMA-ES curve: best and mean return per generation, periodic mean evaluations marked.

    generations: records with `generation`, `best_return`, `mean_return`;
    evals: records with `generation`, `eval_return` (evaluations of the distribution mean).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if generations:
        g = [r["generation"] for r in generations]
        ax.plot(g, [r["best_return"] for r in generations], label="best of population")
        ax.plot(g, [r["mean_return"] for r in generations], label="population mean")
    if evals:
        ax.plot(
            [r["generation"] for r in evals],
            [r["eval_return"] for r in evals],
            "o",
            color="k",
            label="evaluation of the CMA mean",
        )
    ax.set_xlabel("generation")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save_fig(fig, path)


def plot_gap(rounds: Sequence[dict], path: str | Path, title: str) -> Path:
    """The iterative loop's dream-vs-real gap: per round, C's dream return, its real return
    (± std over the check episodes) and M's teacher-forced predicted return of those episodes.

    rounds: records with `round`, `dream_return`, `real_return`, `real_std` and optionally
    `fidelity.predicted_return` and `select_return` (the selection episodes' mean).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    r = [row["round"] for row in rounds]
    ax.plot(r, [row["dream_return"] for row in rounds], "o-", label="in the dream")
    ax.errorbar(r, [row["real_return"] for row in rounds],
                yerr=[row.get("real_std", 0.0) for row in rounds], fmt="s-", capsize=3,
                label="in the real game (training seeds)")
    pred = [row.get("fidelity", {}).get("predicted_return") for row in rounds]
    if all(v is not None for v in pred):
        ax.plot(r, pred, "^--", label="M's predicted return of those real episodes")
    if all("select_return" in row for row in rounds):
        ax.plot(r, [row["select_return"] for row in rounds], "d:",
                label="in the real game, selection episodes (training seeds)")
    ax.set_xlabel("round")
    ax.set_ylabel("return")
    ax.set_xticks(r)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save_fig(fig, path)


def plot_members(curves: dict, path: str | Path) -> Path:
    """A sweep's curves (`dreamjax.experiments.sweep`): each member's best (solid) and mean
    (dashed) return per generation, one colour each."""
    fig, ax = plt.subplots(figsize=(7, 4))
    g = curves["generation"]
    for m in curves["members"]:
        line, = ax.plot(g, m["best_return"], label=f"{m['member']}: {m['label']}")
        ax.plot(g, m["mean_return"], "--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("generation")
    ax.set_ylabel("return (solid: best, dashed: mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("dream CMA-ES sweep: one program, one curve per member", fontsize=10)
    return _save_fig(fig, path)


def plot_histogram(returns: Sequence[float], path: str | Path, title: str) -> Path:
    """Histogram of episode returns with the mean marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    r = np.asarray(returns, dtype=np.float64)
    ax.hist(r, bins=min(30, max(5, len(r) // 3)), color="tab:blue", alpha=0.8)
    ax.axvline(r.mean(), color="k", linestyle="--", label=f"mean {r.mean():.1f} ± {r.std():.1f}")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save_fig(fig, path)


def write_video(frames: np.ndarray, path: str | Path, fps: int = 50) -> Path:
    """(T, H, W, 3) uint8 frames -> MP4 (H.264 via imageio-ffmpeg), written atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    path = Path(path)
    with io.atomic_path(path) as tmp, warnings.catch_warnings():
        # ffmpeg is started with fork+exec, which is safe; silence Python's generic warning.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1, format="FFMPEG") as w:
            for f in frames:
                w.append_data(f)
    return path


def side_by_side(left: np.ndarray, right: np.ndarray, size: int = 192) -> np.ndarray:
    """Two (T, h, w, 3) uint8 clips nearest-upscaled to `size` and placed side by side.

    The shorter clip is padded with its last frame. Returns (T, size, 2 * size + 4, 3).
    """

    def up(x: np.ndarray) -> np.ndarray:
        ry, rx = -(-size // x.shape[1]), -(-size // x.shape[2])
        return x.repeat(ry, axis=1).repeat(rx, axis=2)[:, :size, :size]

    a, b = up(np.asarray(left)), up(np.asarray(right))
    t = max(len(a), len(b))
    a = np.concatenate([a, np.repeat(a[-1:], t - len(a), axis=0)])
    b = np.concatenate([b, np.repeat(b[-1:], t - len(b), axis=0)])
    gap = np.full((t, size, 4, 3), 255, np.uint8)
    return np.concatenate([a, gap, b], axis=2)
