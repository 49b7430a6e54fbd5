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
    "WorldModel": "dreamjax.agent",
    "make_world_model": "dreamjax.agent",
    "agent_step": "dreamjax.agent",
    "WorldModelPolicy": "dreamjax.agent",
    "DreamEnv": "dreamjax.dream.env",
    "DreamParams": "dreamjax.dream.env",
    "make_dream_params": "dreamjax.dream.env",
    "random_dream_params": "dreamjax.dream.env",
    "population_rollouts": "dreamjax.dream.rollout",
    "compacted_rollouts": "dreamjax.dream.rollout",
    "rollout": "dreamjax.dream.rollout",
    "EnvPool": "dreamjax.envs.pool",
    "EpisodeSpec": "dreamjax.envs.pool",
    "fit": "dreamjax.train",
    "train_controller_dream": "dreamjax.es.dream",
    "train_controller_real": "dreamjax.es.real",
    "make_strategy": "dreamjax.es.strategies",
}



def lazy_exports(namespace: dict, exports: dict[str, str]):
    """`__getattr__` for a package whose public names (name -> module) load on first use."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    return getattr_


__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(globals(), _EXPORTS)
