"""Streaming training batches from episode and series files; memory is bounded by a batch (or a
shuffle group), never the dataset.

- `FrameBatches`: shuffled (B, 64, 64, 3) uint8 frames for V (PAPER.md §1.3).
- `SequenceBatches`: random (L + 1)-step windows of latent series for M (§1.4).
- `TBPTTBatches`: consecutive chunks of B streams for truncated BPTT (§2.4).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from dreamjax.data.episodes import (
    FRAME_SHAPE,
    EpisodeError,
    episode_length,
    load_episode,
    load_series,
)


class FrameBatches:
    """Infinite stream of (B, 64, 64, 3) uint8 frame batches, shuffled across episodes.

    Epoch e visits episodes in a permutation drawn from (seed, e), in groups of
    `shuffle_episodes`; a group's frames are loaded together and served in a permutation drawn
    from (seed, e, group), continuing into the next group (a batch may straddle two groups).
    Each epoch's last partial batch is dropped, so every epoch is `steps_per_epoch` batches.
    Resident memory is one group plus < B carried frames (one more episode while loading), never
    the dataset. The stream is a function of (files, seed, step): `start_step=k` yields exactly
    what an uninterrupted stream yields from its k-th batch, skipping whole groups without
    loading them.
    """

    def __init__(self, files: Sequence[str | os.PathLike], batch_size: int, seed: int,
                 shuffle_episodes: int, start_step: int = 0):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("FrameBatches: no episode files")
        if batch_size < 1 or shuffle_episodes < 1 or start_step < 0:
            raise ValueError(f"FrameBatches: need batch_size >= 1, shuffle_episodes >= 1, "
                             f"start_step >= 0; got {batch_size}, {shuffle_episodes}, "
                             f"{start_step}")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.shuffle_episodes = shuffle_episodes
        self.start_step = start_step
        self.lengths = np.array([episode_length(f) for f in self.files], np.int64)
        self.num_frames = int(self.lengths.sum())
        self.steps_per_epoch = self.num_frames // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"FrameBatches: {self.num_frames} frames in {len(self.files)} "
                             f"episodes is fewer than batch_size={batch_size}")
        self.max_resident_frames = 0
        """Largest frame buffer held so far (for checking the memory bound)."""

    def _epoch(self, e: int, start: int) -> Iterator[np.ndarray]:
        """Batches of epoch e from frame offset `start` (a multiple of B) in its stream."""
        B, G = self.batch_size, self.shuffle_episodes
        perm = np.random.default_rng([self.seed, e]).permutation(len(self.files))
        carry = np.zeros((0, *FRAME_SHAPE), np.uint8)
        pos = 0  # stream offset of the first frame of the current group
        served = 0  # batches of this epoch already yielded (from `start`)
        for g in range(0, len(perm), G):
            group = perm[g:g + G]
            size = int(self.lengths[group].sum())
            if pos + size <= start:
                pos += size
                continue
            buf = np.empty((len(carry) + size, *FRAME_SHAPE), np.uint8)
            buf[:len(carry)] = carry
            k = len(carry)
            for i in group:
                fr = load_episode(self.files[i])["frames"]
                if len(fr) != self.lengths[i]:
                    raise EpisodeError(f"{self.files[i]}: changed length while streaming")
                buf[k:k + len(fr)] = fr
                k += len(fr)
            self.max_resident_frames = max(self.max_resident_frames, len(buf))
            order = np.random.default_rng([self.seed, e, g // G]).permutation(size)
            order = np.concatenate([np.arange(len(carry)), len(carry) + order])
            if pos < start:
                order = order[start - pos:]
            pos += size
            n = len(order) // B
            for b in range(n):
                if served == self.steps_per_epoch - start // B:
                    return
                yield buf[order[b * B:(b + 1) * B]]
                served += 1
            carry = buf[order[n * B:]]
            del buf

    def __iter__(self) -> Iterator[np.ndarray]:
        e, j = divmod(self.start_step, self.steps_per_epoch)
        start = j * self.batch_size
        while True:
            yield from self._epoch(e, start)
            e, start = e + 1, 0


def _series_lengths(who: str, series_files: Iterable[str | os.PathLike], batch_size: int,
                    seq_len: int, start_step: int) -> tuple[list[Path], np.ndarray]:
    """Checked sizes of a series stream: (files, their lengths T (N,) int64)."""
    files = [Path(f) for f in series_files]
    if not files:
        raise ValueError(f"{who}: no series files")
    if batch_size < 1 or seq_len < 1 or start_step < 0:
        raise ValueError(f"{who}: need batch_size >= 1, seq_len >= 1, start_step >= 0; got "
                         f"{batch_size}, {seq_len}, {start_step}")
    return files, np.array([episode_length(f) for f in files], np.int64)


class _IndexedStream:
    """A stream whose batch k is `self.batch(k)`; iterating yields batches start_step, ...."""

    start_step: int

    def batch(self, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        k = self.start_step
        while True:
            yield self.batch(k)
            k += 1


class SequenceBatches(_IndexedStream):
    """Infinite stream of M-training batches of (seq_len + 1)-step windows from series files.

    Batch k draws, from (seed, k), `batch_size` distinct episodes (with replacement only when
    there are fewer episodes than the batch) and a uniform start offset in each; only those
    episodes are loaded. Yields dicts:

        mu, logvar  (B, L+1, Z) float32     L = seq_len; inputs are [:, :-1], targets [:, 1:]
        actions     (B, L+1, A) float32     A: the series' action size
        rewards     (B, L+1) float32
        dones       (B, L+1) bool           `terminated` (the env ended the episode); a time-limit
                                            truncation is not a done (M cannot predict it)
        mask        (B, L) float32          1 where the target step t+1 exists in the episode
        step_mask   (B, L) float32          1 where the input step t exists: the steps whose
                                            reward and done (which follow step t) are labels,
                                            an episode's last step included

    Episodes shorter than L+1 steps start at 0 and are zero-padded; `mask` drops the padding.
    `batch(k)` gives batch k directly; iterating from `start_step=k` yields batches k, k+1, ...
    """

    def __init__(self, series_files: Sequence[str | os.PathLike], batch_size: int, seq_len: int,
                 seed: int, start_step: int = 0):
        self.files, self.lengths = _series_lengths("SequenceBatches", series_files, batch_size,
                                                   seq_len, start_step)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.seed, self.start_step = int(seed), start_step
        first = load_series(self.files[0])
        self.z_dim, self.action_dim = first["mu"].shape[1], first["actions"].shape[1]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number `step` of the stream."""
        B, L1, Z, A = self.batch_size, self.seq_len + 1, self.z_dim, self.action_dim
        rng = np.random.default_rng([self.seed, int(step)])
        n = len(self.files)
        eps = rng.choice(n, size=B, replace=n < B)
        starts = [int(rng.integers(0, max(int(self.lengths[i]) - L1, 0) + 1)) for i in eps]
        out = {"mu": np.zeros((B, L1, Z), np.float32), "logvar": np.zeros((B, L1, Z), np.float32),
               "actions": np.zeros((B, L1, A), np.float32),
               "rewards": np.zeros((B, L1), np.float32), "dones": np.zeros((B, L1), bool),
               "mask": np.zeros((B, L1 - 1), np.float32),
               "step_mask": np.zeros((B, L1 - 1), np.float32)}
        for i in np.unique(eps):
            d = load_series(self.files[i])
            if d["mu"].shape[1] != Z or d["actions"].shape[1] != A:
                raise EpisodeError(f"{self.files[i]}: Z = {d['mu'].shape[1]}, A = "
                                   f"{d['actions'].shape[1]}, expected {Z} and {A}")
            for b in np.flatnonzero(eps == i):
                s = starts[b]
                w = slice(s, s + L1)
                m = len(d["mu"][w])
                out["mu"][b, :m] = d["mu"][w]
                out["logvar"][b, :m] = d["logvar"][w]
                out["actions"][b, :m] = d["actions"][w]
                out["rewards"][b, :m] = d["rewards"][w]
                out["dones"][b, :m] = d["terminated"][w]
                out["mask"][b, :m - 1] = 1.0
                out["step_mask"][b, :min(m, L1 - 1)] = 1.0
        return out


class TBPTTBatches(_IndexedStream):
    """Truncated-BPTT batches over series files (PAPER.md §2.4): consecutive chunks of B streams.

    Epoch e shuffles the episodes with (seed, e), concatenates them into one stream of N steps
    and splits it into B streams of S = N // B steps (the remainder is dropped). Batch j of the
    epoch is window [j·L, j·L + L] (L + 1 steps) of every stream; consecutive windows overlap
    by one step, so chunk j+1's first input is chunk j's last target and a state carried
    across chunks has seen every input exactly once. (The reference cuts disjoint chunks of
    L + 1, so the last step of each chunk is never an input; dreamjax does not copy that.)
    steps_per_epoch = (S - 1) // L. Yields dicts:

        mu, logvar  (B, L+1, Z) float32
        actions     (B, L+1, A) float32
        rewards     (B, L+1) float32
        dones       (B, L+1) bool       the episode's `terminated`
        restarts    (B, L+1) float32    1 on the first step of an episode (state is zeroed there)
        mask        (B, L) float32      0 where the target is the first step of another episode
        step_mask   (B, L) float32      1: every input step is a real step, whose reward and
                                        done are labels (an episode's last step, where done is
                                        1 and `mask` is 0, included)
        reset       (B,) bool           zero the carried state before this chunk (epoch start)

    Deterministic in (files, seed, step); only the episodes a batch touches are loaded (those of
    the previous batch stay cached), so memory is bounded by the batch, not the dataset.
    """

    def __init__(self, series_files: Iterable[str | Path], batch_size: int, seq_len: int,
                 seed: int, start_step: int = 0):
        self.files, self.lengths = _series_lengths("TBPTTBatches", series_files, batch_size,
                                                   seq_len, start_step)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.seed, self.start_step = int(seed), start_step
        self.stream_len = int(self.lengths.sum()) // batch_size
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"TBPTTBatches: {int(self.lengths.sum())} steps in {len(self.files)} series give "
                f"streams of {self.stream_len} steps for batch_size={batch_size}; need at least "
                f"seq_len + 1 = {seq_len + 1}"
            )
        self._cache: dict[int, dict] = {}

    def _load(self, i: int) -> dict:
        if i not in self._cache:
            d = load_series(self.files[i])
            if len(d["rewards"]) != self.lengths[i]:
                raise EpisodeError(f"{self.files[i]}: changed length while streaming")
            self._cache[i] = {
                "mu": d["mu"].astype(np.float32),
                "logvar": d["logvar"].astype(np.float32),
                "actions": d["actions"].astype(np.float32),
                "rewards": d["rewards"].astype(np.float32),
                "dones": d["terminated"].astype(bool),
            }
        return self._cache[i]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number `step` of the stream."""
        B, L = self.batch_size, self.seq_len
        e, j = divmod(int(step), self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, e]).permutation(len(self.files))
        ends = np.cumsum(self.lengths[perm])  # stream position where each episode ends
        pos = (np.arange(B)[:, None] * self.stream_len + j * L + np.arange(L + 1)[None, :])
        rank = np.searchsorted(ends, pos, side="right")  # (B, L+1) index into perm
        offset = pos - (ends[rank] - self.lengths[perm][rank])
        files = perm[rank]
        needed = set(np.unique(files).tolist())
        self._cache = {i: v for i, v in self._cache.items() if i in needed}
        first = self._load(int(files[0, 0]))
        out = {k: np.zeros((B, L + 1, *v.shape[1:]), v.dtype) for k, v in first.items()}
        for i in needed:
            d = self._load(i)
            sel = files == i
            for k in out:
                out[k][sel] = d[k][offset[sel]]
        restarts = (offset == 0).astype(np.float32)
        out["restarts"] = restarts
        out["mask"] = 1.0 - restarts[:, 1:]
        out["step_mask"] = np.ones((B, L), np.float32)
        out["reset"] = np.full((B,), j == 0)
        return out
