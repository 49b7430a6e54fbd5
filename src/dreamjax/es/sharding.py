"""The ES population axis (and a sweep's member axis) sharded over the local devices.

A `Mesh` of the local devices (axis type Auto: GSPMD decides what is not constrained) has two
axes, `"sweep"` (independent ES runs of a sweep,
`dreamjax.es.sweep`) and `"pop"` (the candidates of one population). Sharding is GSPMD's: the
program is the one-device program with sharding constraints on the population (P, ...) that
`ask` returns and on the fitness (P,) that `evaluate` gives back, so each device rolls out its
P / n candidates in the dream and the results are the one-device results (same keys, same
candidates; the per-row arithmetic is the same, only where it runs differs). M's weights and the
latent bank are replicated.

- `local_mesh(sweep, pop)`: the (sweep, pop) mesh over `jax.local_devices()`;
- `shard_population(evaluate, mesh)`: an `Evaluate` whose population and fitness are sharded
  over `"pop"` (wrap any fitness; `make_chunk_fn` fuses it as usual);
- `population_mesh(devices, popsize)`: the pipeline's (1, n) mesh for `--devices` (None: one
  device); `DreamFitness.build(..., mesh=)` and `train_controller_dream(..., mesh=)` take it:
  the ES loop's dream fitness with the population sharded (same logs, checkpoints and resume);
- `place(tree, mesh, spec)`: put a pytree on the mesh (e.g. `P("sweep")` for stacked members,
  `P()` to replicate); `checkpoint.restore(..., sharding=)` restores straight onto it.

On CPU the same code runs on `XLA_FLAGS=--xla_force_host_platform_device_count=N` devices
(tests and `benchmarks/devices.py`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dreamjax.errors import ConfigError
from dreamjax.es.generation import Evaluate

SWEEP, POP = "sweep", "pop"
"""The mesh axes: members of a sweep, candidates of a population."""


def local_mesh(sweep: int = 1, pop: int | None = None) -> Mesh:
    """A (sweep, pop) mesh of the local devices; `pop` defaults to all devices left over.
    `ConfigError` when sweep x pop is not the number of local devices used (<= all)."""
    devices = jax.local_devices()
    pop = len(devices) // max(sweep, 1) if pop is None else pop
    if sweep < 1 or pop < 1 or sweep * pop > len(devices):
        raise ConfigError(f"device mesh {sweep} x {pop} does not fit the {len(devices)} local "
                          "devices; choose sizes whose product is at most the device count")
    return jax.make_mesh((sweep, pop), (SWEEP, POP), (AxisType.Auto, AxisType.Auto),
                         devices=devices[: sweep * pop])


def population_mesh(devices: int, popsize: int) -> Mesh | None:
    """The (1, n) mesh `--devices` asks for: n = `devices`, or for 0 the most local devices
    that divide `popsize`; None when n is 1 (nothing to shard). `ConfigError` when an explicit
    n does not fit the local devices or does not divide `popsize`."""
    available = len(jax.local_devices())
    n = devices or max(d for d in range(1, available + 1) if popsize % d == 0)
    if n == 1:
        return None
    if n > available:
        raise ConfigError(f"--devices {n}: only {available} local devices")
    mesh = local_mesh(1, n)
    check_divides(mesh, popsize)
    return mesh


def check_divides(mesh: Mesh, popsize: int, members: int = 1) -> None:
    """`ConfigError` unless the mesh's pop axis divides P and its sweep axis divides K."""
    if popsize % mesh.shape[POP]:
        raise ConfigError(f"--es.popsize {popsize} is not a multiple of the {mesh.shape[POP]} "
                          "devices of the population axis; choose a multiple or fewer devices")
    if members % mesh.shape[SWEEP]:
        raise ConfigError(f"a sweep of {members} members does not split over the "
                          f"{mesh.shape[SWEEP]} devices of the sweep axis; choose a multiple")


def place(tree: Any, mesh: Mesh, spec: P = P()) -> Any:
    """Every leaf of `tree` on `mesh` with partition spec `spec` (`P()`: replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, spec))


def shard_population(evaluate: Evaluate, mesh: Mesh) -> Evaluate:
    """`evaluate` with the population's leading axis (P, ...) and the fitness and aux (P,)
    sharded over the mesh's `"pop"` axis. Inside `jax.vmap(..., spmd_axis_name="sweep")` the
    member axis is sharded over `"sweep"` too."""
    pop = NamedSharding(mesh, P(POP))

    def constrain(tree):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, pop), tree)

    def sharded(key, population, args):
        fitness, aux = evaluate(key, constrain(population), args)
        return constrain(fitness), constrain(aux)

    return sharded
