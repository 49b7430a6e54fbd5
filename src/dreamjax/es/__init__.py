"""Evolution strategies over controllers (PAPER.md §1.6).

- `strategies`: evosax strategies by name, incl. the lazy-eigen `LazyCMA_ES` ("CMA_ES"), and
  `check_strategy` to refuse a bad `--es.strategy` before any work;
- `generation`: one ask -> evaluate -> tell generation and jitted chunks of them (`lax.scan`);
- `loop`: the one resumable ES loop with a pluggable fitness (resume, evaluation schedule of the
  mean, best mean, log files);
- `dream`, `real`: the two fitnesses (the dream's jitted chunk; the real env's `EnvPool`) and
  their entry points `train_controller_dream`, `train_controller_real`;
- `controller_io`: the one controller file format (`save_controller`, `load_controller`).
"""

from dreamjax.es.controller_io import load_controller, save_controller
from dreamjax.es.dream import train_controller_dream
from dreamjax.es.loop import ControllerResult, train_controller
from dreamjax.es.real import train_controller_real
from dreamjax.es.strategies import (
    LazyCMA_ES,
    check_strategy,
    make_strategy,
    strategy_names,
    strategy_params,
)

__all__ = [
    "ControllerResult",
    "LazyCMA_ES",
    "check_strategy",
    "load_controller",
    "make_strategy",
    "save_controller",
    "strategy_names",
    "strategy_params",
    "train_controller",
    "train_controller_dream",
    "train_controller_real",
]
