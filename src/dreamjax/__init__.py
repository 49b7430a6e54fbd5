"""dreamjax: World Models (Ha & Schmidhuber 2018) in JAX.

The public pieces are importable from the top (`from dreamjax import ConvVAE, MDNRNN, DreamEnv,
population_rollouts`); they load on first use, so importing `dreamjax` (as the real-env worker
processes do) does not import JAX.

Layout: `models/` (V, M, C), `agent` (the world-model agent step), `dream/` (M as a gymnax env and
population rollouts), `es/` (strategies and the ES loop), `data/` (episodes, batches,
collection), `envs/` (real envs and the worker pool), `train` (the training loop), `io` and
`checkpoint` (files), `pipeline/` (run folder, stages, evaluation, report), `experiments/` (CLIs).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConvVAE": "dreamjax.models.vae",
    "init_vae": "dreamjax.models.vae",
    "vae_loss": "dreamjax.models.vae",
    "MDNRNN": "dreamjax.models.mdnrnn",
    "LSTMState": "dreamjax.models.mdnrnn",
    "init_mdnrnn": "dreamjax.models.mdnrnn",
    "mdn_nll": "dreamjax.models.mdnrnn",
    "sample_next_z": "dreamjax.models.mdnrnn",
    "Controller": "dreamjax.models.controller",
    "controller_for": "dreamjax.models.controller",
    "init_controller": "dreamjax.models.controller",
    "obs_dim": "dreamjax.models.controller",
    "DreamEnv": "dreamjax.dream.env",
    "DreamParams": "dreamjax.dream.env",
    "make_dream_params": "dreamjax.dream.env",
    "random_dream_params": "dreamjax.dream.env",
    "population_rollouts": "dreamjax.dream.rollout",
    "rollout": "dreamjax.dream.rollout",
    "EnvPool": "dreamjax.envs.pool",
    "EpisodeSpec": "dreamjax.envs.pool",
    "fit": "dreamjax.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dreamjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
