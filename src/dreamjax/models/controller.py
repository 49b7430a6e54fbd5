"""C: the controller, a = tanh(W x + b) on an observation vector x (PAPER.md §1.5, §2.6).

One Linen module covers every configuration; `controller_for` names them, and
`controller_spec` adds what C reads from M (obs mode and size) as a hashable `ControllerSpec`:

| kind       | obs x            | layers                 | params (Z=32, H=256 / Z=64, H=512) |
|------------|------------------|------------------------|------------------------------------|
| `zh`       | [z, h]  (288)    | linear + bias          | 867 (paper, PAPER.md §1.5)         |
| `z`        | z       (32)     | linear + bias          | 99                                 |
| `z-hidden` | z       (32)     | 40 tanh units, linear  | 1,443                              |
| `zch`      | [z, c, h] (1088) | linear, no bias        | 1,088 (Doom, PAPER.md §2.6)        |

Flat vectors: evosax flattens a parameter pytree with `jax.flatten_util.ravel_pytree`
(`ravel_params` / `unravel_fn`). The reference code's layout (`carracing/model.py`
`set_model_params`) is, per layer, bias then W row-major (in, out): `to_paper_vector` /
`from_paper_vector` convert to and from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

CONTROLLER_KINDS: tuple[str, ...] = ("zh", "z", "z-hidden", "zch")
OBS_MODES: tuple[str, ...] = ("z", "zh", "zch")


class Controller(nn.Module):
    """a = tanh(Dense(x)) or, with `hidden` > 0, a = tanh(Dense(tanh(Dense(x)))).

    x: (..., O) -> a: (..., action_dim) in [-1, 1] (raw output; the env maps it to controls).
    """

    action_dim: int = 3
    hidden: int = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        if self.hidden > 0:
            x = jnp.tanh(nn.Dense(self.hidden, use_bias=self.use_bias, name="hidden")(x))
        return jnp.tanh(nn.Dense(self.action_dim, use_bias=self.use_bias, name="out")(x))


def _check_kind(kind: str) -> None:
    if kind not in CONTROLLER_KINDS:
        raise ValueError(f"unknown controller kind {kind!r}; choose one of {CONTROLLER_KINDS}")


def obs_mode(kind: str) -> str:
    """Which features the controller kind reads: 'z', 'zh' or 'zch'."""
    _check_kind(kind)
    return {"zh": "zh", "z": "z", "z-hidden": "z", "zch": "zch"}[kind]


def obs_dim_for_mode(mode: str, z_dim: int, hidden_size: int) -> int:
    """Length of the observation vector of an obs mode."""
    if mode not in OBS_MODES:
        raise ValueError(f"unknown observation mode {mode!r}; choose one of {OBS_MODES}")
    return {"z": z_dim, "zh": z_dim + hidden_size, "zch": z_dim + 2 * hidden_size}[mode]


def obs_dim(kind: str, z_dim: int = 32, hidden_size: int = 256) -> int:
    """Length of the controller's input for a kind (288 for the paper's `zh`)."""
    return obs_dim_for_mode(obs_mode(kind), z_dim, hidden_size)


def make_obs(mode: str, z: jax.Array, c: jax.Array, h: jax.Array) -> jax.Array:
    """Concatenate what C sees: z (..., Z), LSTM c and h (..., H) -> (..., O)."""
    if mode == "z":
        return z
    if mode == "zh":
        return jnp.concatenate([z, h], axis=-1)
    if mode == "zch":
        return jnp.concatenate([z, c, h], axis=-1)
    raise ValueError(f"unknown observation mode {mode!r}; choose one of {OBS_MODES}")


def controller_for(
    kind: str, *, action_dim: int | None = None, hidden_units: int = 40
) -> Controller:
    """The paper's controller configurations by name (see the module table).

    The observation's size is not part of the module (see `obs_dim`); `action_dim` defaults to 3
    (CarRacing) and to 1 for `zch` (Doom); `hidden_units` is the `z-hidden` layer width.
    """
    _check_kind(kind)
    if kind == "zch":
        return Controller(action_dim=action_dim or 1, hidden=0, use_bias=False)
    hidden = hidden_units if kind == "z-hidden" else 0
    return Controller(action_dim=action_dim or 3, hidden=hidden, use_bias=True)


@dataclasses.dataclass(frozen=True)
class ControllerSpec:
    """Everything about C but its parameters: the kind, the Linen module, which features it reads
    (`obs_mode`) and their length `obs_dim`. Hashable, so it can be a static jit argument."""

    kind: str
    controller: Controller
    obs_mode: str
    obs_dim: int

    @property
    def num_params(self) -> int:
        return num_params(self.controller, self.obs_dim)

    def zeros(self) -> Any:
        """All-zero parameters (the CMA-ES start)."""
        return zeros_params(self.controller, self.obs_dim)

    def unravel(self, flat: jax.Array) -> Any:
        """Flat (N,) vector in evosax's order -> param pytree."""
        return unravel_fn(self.controller, self.obs_dim)(flat)


def controller_spec(
    kind: str, z_dim: int, hidden_size: int, *, action_dim: int | None = None,
    hidden_units: int = 40,
) -> ControllerSpec:
    """The spec of a controller kind acting on M's features: z (Z,), LSTM c and h (H,)."""
    mode = obs_mode(kind)
    return ControllerSpec(
        kind=kind,
        controller=controller_for(kind, action_dim=action_dim, hidden_units=hidden_units),
        obs_mode=mode,
        obs_dim=obs_dim_for_mode(mode, z_dim, hidden_size),
    )


def init_controller(key: jax.Array, controller: Controller, obs_size: int) -> Any:
    """Random (Linen default init) parameters for an (obs_size,) input."""
    return controller.init(key, jnp.zeros((1, obs_size), jnp.float32))


def zeros_params(controller: Controller, obs_size: int) -> Any:
    """All-zero parameters: the CMA-ES start (PAPER.md §1.6: `zeros(n)`)."""
    shapes = jax.eval_shape(lambda: init_controller(jax.random.key(0), controller, obs_size))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def num_params(controller: Controller, obs_size: int) -> int:
    """Number of scalar parameters."""
    return int(ravel_params(zeros_params(controller, obs_size)).size)


def ravel_params(params: Any) -> jax.Array:
    """Param pytree -> flat (N,) vector in evosax's (`ravel_pytree`) order."""
    return ravel_pytree(params)[0]


def unravel_fn(controller: Controller, obs_size: int) -> Callable[[jax.Array], Any]:
    """The inverse of `ravel_params` for this controller: flat (N,) -> param pytree."""
    return ravel_pytree(zeros_params(controller, obs_size))[1]


def _layers(controller: Controller) -> list[str]:
    return (["hidden"] if controller.hidden > 0 else []) + ["out"]


def to_paper_vector(controller: Controller, params: Any) -> np.ndarray:
    """Param pytree -> flat vector in the reference layout: per layer, bias then W row-major."""
    p = params["params"]
    parts = []
    for name in _layers(controller):
        if controller.use_bias:
            parts.append(np.asarray(p[name]["bias"]).ravel())
        parts.append(np.asarray(p[name]["kernel"]).ravel())
    return np.concatenate(parts).astype(np.float32)


def from_paper_vector(controller: Controller, obs_size: int, flat: np.ndarray) -> Any:
    """Flat reference-layout vector (N,) -> param pytree (inverse of `to_paper_vector`)."""
    flat = np.asarray(flat, dtype=np.float32)
    n = num_params(controller, obs_size)
    if flat.shape != (n,):
        raise ValueError(f"expected a flat controller vector of shape ({n},), got {flat.shape}")
    sizes = [obs_size] + ([controller.hidden] if controller.hidden > 0 else [])
    sizes.append(controller.action_dim)
    out: dict[str, dict[str, jax.Array]] = {}
    pos = 0
    for i, name in enumerate(_layers(controller)):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        layer = {}
        if controller.use_bias:
            layer["bias"] = jnp.asarray(flat[pos : pos + fan_out])
            pos += fan_out
        layer["kernel"] = jnp.asarray(flat[pos : pos + fan_in * fan_out].reshape(fan_in, fan_out))
        pos += fan_in * fan_out
        out[name] = layer
    return {"params": out}
