"""The one controller file format: an .npz with `paper_flat` (the reference layout: per layer,
bias then W row-major) and `meta` (JSON: the controller's fields, `obs_dim`, and the caller's
metadata), written atomically through `dreamjax.io`.

Files written before this format also hold `flat` (evosax order); it is ignored on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dreamjax.errors import ArtifactError
from dreamjax.io import load_npz, save_npz
from dreamjax.models.controller import Controller, from_paper_vector, to_paper_vector

CONTROLLER_KEYS = ("action_dim", "hidden", "use_bias", "obs_dim")
"""The `meta` entries `load_controller` needs to rebuild the controller."""


def save_controller(path: str | Path, controller: Controller, params: Any, meta: dict) -> Path:
    """Write `controller` with `params` to `path`; `meta` must hold `obs_dim` (the input size)."""
    if "obs_dim" not in meta:
        raise ValueError("save_controller: meta needs 'obs_dim'")
    info = {
        "action_dim": controller.action_dim,
        "hidden": controller.hidden,
        "use_bias": controller.use_bias,
        **meta,
    }
    return save_npz(path, paper_flat=to_paper_vector(controller, params),
                    meta=np.array(json.dumps(info)))


def load_controller(path: str | Path) -> tuple[Controller, Any, dict]:
    """Read `save_controller`'s file -> (controller, params, meta); `ArtifactError` naming the
    file if it is missing, corrupt or not a controller file."""
    path = Path(path)
    arrays = load_npz(path)
    if "paper_flat" not in arrays or "meta" not in arrays:
        raise ArtifactError(f"{path}: not a dreamjax controller file (needs paper_flat and meta); "
                            "rerun the controller stage")
    try:
        meta = json.loads(str(arrays["meta"]))
        missing = [k for k in CONTROLLER_KEYS if k not in meta]
        if missing:
            raise ValueError(f"meta lacks {missing}")
        controller = Controller(int(meta["action_dim"]), int(meta["hidden"]),
                                bool(meta["use_bias"]))
        params = from_paper_vector(controller, int(meta["obs_dim"]), arrays["paper_flat"])
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: corrupt controller file ({e}); rerun the controller "
                            "stage") from None
    return controller, params, meta
