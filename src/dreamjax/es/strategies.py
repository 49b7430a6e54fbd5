"""Evolution strategies by name: evosax's, plus CMA-ES with pycma's lazy eigendecomposition.

Paper settings (PAPER.md §1.6): CMA-ES, population 64, sigma_0 = 0.1, mean starting at zeros.
`"CMA_ES"` is `LazyCMA_ES`: like the reference's pycma 2.2.0 it refreshes B, D only every
1 / (c1 + c_mu) / N / 10 generations (every 3rd generation for N = 867) instead of every
generation; `"CMA_ES_evosax"` is evosax's own `CMA_ES`; every other evosax strategy is selectable
by its evosax name (`ESConfig.strategy`, e.g. "Sep_CMA_ES"). `check_strategy` validates a name
and a sigma_0 without building anything, so a CLI can refuse a bad `--es.strategy` before any
stage runs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from typing import Any

import jax
import jax.numpy as jnp
from evosax.algorithms import algorithms as evosax_algorithms
from evosax.algorithms.distribution_based import cma_es
from flax import struct

from dreamjax.errors import ConfigError

LAZY_CMA = "CMA_ES"
EVOSAX_CMA = "CMA_ES_evosax"


@struct.dataclass
class LazyCMAState(cma_es.State):
    """evosax CMA-ES state plus the generation of the last eigendecomposition (-1: never)."""

    eigen_generation: jax.Array


class LazyCMA_ES(cma_es.CMA_ES):  # noqa: N801 (evosax naming)
    """evosax `CMA_ES` that refreshes the eigendecomposition C = B D² Bᵀ lazily, as pycma does.

    B, D are recomputed when `generation - last > eigen_gap` (pycma's `lazy_update_gap`,
    default 1 / (c1 + c_mu) / N / 10); between refreshes sampling uses the last B, D. With
    `eigen_gap=0` it is exactly evosax's `CMA_ES`. The O(N³) `eigh` of an 867 x 867 matrix costs
    0.3-0.8 s on a 2-core CPU, as much as a tenth of a dream generation.
    """

    def __init__(self, population_size: int, solution: Any, eigen_gap: float | None = None,
                 **kwargs: Any):
        super().__init__(population_size, solution, **kwargs)
        if eigen_gap is None:
            p = self._default_params
            eigen_gap = float(1.0 / (p.c_1 + p.c_mu) / self.num_dims / 10.0)
        if eigen_gap < 0:
            raise ValueError(f"LazyCMA_ES: eigen_gap must be >= 0, got {eigen_gap}")
        self.eigen_gap = float(eigen_gap)

    def _init(self, key: jax.Array, params: cma_es.Params) -> LazyCMAState:
        base = super()._init(key, params)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return LazyCMAState(**fields, eigen_generation=jnp.int32(-1))

    def _ask(self, key: jax.Array, state: LazyCMAState, params: cma_es.Params):
        due = (state.generation_counter - state.eigen_generation) > self.eigen_gap
        C, B, D = jax.lax.cond(
            due, cma_es.eigen_decomposition, lambda c: (c, state.B, state.D), state.C
        )
        z = jax.random.normal(key, (self.population_size, self.num_dims))
        population = state.mean + state.std * ((z * D) @ B.T)
        eigen_generation = jnp.where(due, state.generation_counter, state.eigen_generation)
        return population, state.replace(C=C, B=B, D=D,
                                         eigen_generation=eigen_generation.astype(jnp.int32))


def _classes() -> dict[str, type]:
    """Every strategy `make_strategy` builds, by name (each name once)."""
    return {**evosax_algorithms, LAZY_CMA: LazyCMA_ES, EVOSAX_CMA: cma_es.CMA_ES}


def _problem(cls: type) -> str | None:
    """Why `cls` cannot run from an `ESConfig` (None if it can): it must have a `std_init`
    parameter for sigma_0 and need no constructor argument beyond the population and solution.
    Read from the class and the `Params` dataclass of its (or its base's) module, without
    building anything."""
    params_cls = next((getattr(sys.modules[c.__module__], "Params", None) for c in cls.__mro__
                       if hasattr(sys.modules[c.__module__], "Params")), None)
    fields = {f.name for f in dataclasses.fields(params_cls)} if params_cls else set()
    if "std_init" not in fields:
        return "has no std_init to set --es.sigma-init on"
    required = [
        p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in ("population_size", "solution")
    ]
    if required:
        return f"needs constructor arguments {required} that --es has no flags for"
    return None


@functools.cache
def strategy_names() -> tuple[str, ...]:
    """The names `--es.strategy` accepts, sorted, each once: "CMA_ES" (the lazy-eigen CMA-ES),
    "CMA_ES_evosax" (evosax's) and every evosax strategy that takes a sigma_0 (`std_init`)."""
    return tuple(sorted(n for n, cls in _classes().items() if _problem(cls) is None))


def _lookup(name: str) -> type:
    cls = _classes().get(name)
    if cls is None:
        raise ConfigError(f"--es.strategy: unknown strategy {name!r}; choose one of "
                          f"{', '.join(strategy_names())}")
    return cls


def check_strategy(name: str, sigma_init: float) -> None:
    """Refuse (`ConfigError`, one line) an `--es.strategy` that `make_strategy` does not know or
    that cannot run from an `ESConfig`, and a sigma_0 that is not > 0. Cheap: builds nothing."""
    problem = _problem(_lookup(name))
    if problem is not None:
        raise ConfigError(f"--es.strategy: {name!r} {problem}; choose one of "
                          f"{', '.join(strategy_names())}")
    if not sigma_init > 0:
        raise ConfigError(f"--es.sigma-init must be > 0, got {sigma_init}")


def make_strategy(name: str, popsize: int, solution: Any, **kwargs: Any) -> Any:
    """An evosax strategy by name (`strategy_names()`, or any evosax name with the `kwargs` it
    needs): "CMA_ES" is `LazyCMA_ES`, "CMA_ES_evosax" evosax's own CMA-ES (eigendecomposition
    every generation). `solution` is a pytree shaped like one candidate."""
    if popsize < 2:
        raise ConfigError(f"--es.popsize must be >= 2, got {popsize}")
    return _lookup(name)(population_size=popsize, solution=solution, **kwargs)


def strategy_params(strategy: Any, sigma_init: float) -> Any:
    """The strategy's default params with the initial step size sigma_0 (`std_init`)."""
    params = strategy.default_params
    if not hasattr(params, "std_init"):
        raise ConfigError(f"--es.strategy {type(strategy).__name__} has no std_init to set "
                          "--es.sigma-init on")
    return params.replace(std_init=jnp.asarray(sigma_init, jnp.float32))


def strategy_sigma(es_state: Any) -> jax.Array:
    """A scalar step size for logs: mean of `std` (NaN if the state has none)."""
    std = getattr(es_state, "std", None)
    return jnp.float32(jnp.nan) if std is None else jnp.mean(std)
