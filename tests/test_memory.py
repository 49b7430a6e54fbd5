"""Peak memory of V's training stream does not grow with the dataset.

A whole epoch of `FrameBatches` (what `train_vae` trains on) is read in a fresh process over 16
and then 160 synthetic episodes; the dataset grows by ~170 MB of frames, peak RSS must not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from dreamjax.data.episodes import episode_path, save_episode

T = 100
FRAME_BYTES = 64 * 64 * 3

SCRIPT = """
import resource, sys
from dreamjax.data.batches import FrameBatches
from dreamjax.data.episodes import list_episodes
files = list_episodes(sys.argv[1])[: int(sys.argv[2])]
fb = FrameBatches(files, 100, seed=0, shuffle_episodes=16)
it = iter(fb)
total = 0
for _ in range(fb.steps_per_epoch):
    total += next(it).shape[0]
assert total == fb.steps_per_epoch * 100
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """160 episode files: 16 of random frames, each then copied 9 times under the next indices
    (what the reader holds does not depend on the frames; compressing 160 would take ~20 s)."""
    folder = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    for i in range(16):
        frames = rng.integers(0, 4, size=(T, 64, 64, 3), dtype=np.uint8) * 60
        save_episode(
            episode_path(folder, i),
            {
                "frames": frames,
                "actions": np.zeros((T, 3), np.float32),
                "rewards": np.zeros(T, np.float32),
                "terminated": np.zeros(T, bool),
                "truncated": np.zeros(T, bool),
                "seed": i,
                "policy": "test",
            },
        )
    for i in range(16, 160):
        shutil.copyfile(episode_path(folder, i % 16), episode_path(folder, i))
    return folder


def _peak_rss_mb(folder, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def test_peak_rss_flat_when_dataset_grows_10x(episodes):
    small, large = _peak_rss_mb(episodes, 16), _peak_rss_mb(episodes, 160)
    growth_mb = 144 * T * FRAME_BYTES / 2**20  # 169 MB more frames in the large dataset
    assert large - small < 0.2 * growth_mb, (small, large)
