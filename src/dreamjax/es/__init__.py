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

from __future__ import annotations

from dreamjax import lazy_exports

# the names load on first use, so the CLI's strategy check imports only `strategies`
_EXPORTS = {
    "load_controller": "dreamjax.es.controller_io",
    "save_controller": "dreamjax.es.controller_io",
    "train_controller_dream": "dreamjax.es.dream",
    "ControllerResult": "dreamjax.es.loop",
    "train_controller": "dreamjax.es.loop",
    "train_controller_real": "dreamjax.es.real",
    "LazyCMA_ES": "dreamjax.es.strategies",
    "check_strategy": "dreamjax.es.strategies",
    "make_strategy": "dreamjax.es.strategies",
    "strategy_names": "dreamjax.es.strategies",
    "strategy_params": "dreamjax.es.strategies",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(globals(), _EXPORTS)
