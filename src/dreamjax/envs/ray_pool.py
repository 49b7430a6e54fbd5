"""Real-env episodes on Ray actors, for more than one machine: the `EnvPool` interface on Ray.

`RayEnvPool(env_fn, num_actors, envs_per_actor)` has `EnvPool`'s `run(specs, policy,
record=, progress=, steps=)` (results in the order of `specs`), `num_slots`, `env_info`,
`env_steps`, `run_seconds`, `restarts`, `close` and the context manager, so collection, real-env
CMA-ES and evaluation take either pool. The difference is where the policy runs: each actor owns
its envs and its own copy of the policy and plays whole episodes (the actor's `BatchPolicy`
acts for its slots), so only specs, controller vectors and returns cross the network, as the
original's MPI workers did; frames travel only when `record` or `steps` asks for them.

The policy reaches the actors in two parts (`remote_policy`): a `WorldModelPolicy`'s world
model (V and M, megabytes) is put into Ray's object store once per pool and cached by each
actor, and the controllers (P x N floats) and the policy's key once per `run`; inside the actor
a `WorldModelPolicy` with that key runs V -> M -> C jitted on the actor's CPU. Any other
`BatchPolicy` is pickled whole for each `run`. Results are identical to the local pool's: an
episode's actions depend only on (seed, tag, step) and the slot's own rows (the batched policy
computes fixed blocks of slots, `dreamjax.agent.SLOT_BLOCK`).

Robustness, as in the local pool: each call (up to `envs_per_actor` episodes, one per slot)
has a deadline (`episode_timeout`, plus `startup_timeout` for a fresh actor's first call). An
actor that dies (its process exits, its node goes away, its env raises) or misses its deadline
is killed and replaced, and its episodes re-run from scratch with the same seeds; an episode
that keeps failing (`max_retries`) raises `WorkerError`.

Ray is an optional extra (`pip install 'dreamjax[ray]'`): this module imports it, and JAX, only
when a pool is built or a world-model policy is rebuilt in an actor.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dreamjax.envs.pool import EnvPool, _Slot
from dreamjax.envs.protocol import BatchPolicy, EnvInfo, EpisodeResult, EpisodeSpec
from dreamjax.errors import ConfigError, WorkerError


def _ray() -> Any:
    """The `ray` module, or a one-line `ConfigError` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'dreamjax[ray]'") from None


def run_episodes(envs: Sequence[Any], info: EnvInfo, specs: Sequence[EpisodeSpec],
                 policy: BatchPolicy, record: bool = False, steps: bool = False
                 ) -> list[EpisodeResult]:
    """Play `specs` (at most one per env) to their ends in this process, env s in slot s, with
    the local pool's bookkeeping (`EnvPool.run`): the same resets, actions, sums and results.
    A policy built for more slots (the whole pool's `num_slots`, e.g. collection's random
    policies) acts here in its first len(envs) slots."""
    S = len(envs)
    if len(specs) > S:
        raise ValueError(f"run_episodes: {len(specs)} episodes for {S} envs")
    slots = [_Slot() for _ in range(S)]
    frames = np.zeros((S, *info.observation_shape), info.observation_dtype)
    results: list[EpisodeResult | None] = [None] * len(specs)
    pending: list[tuple[int, Any, Any, float, bool, bool]] = []
    for s, spec in enumerate(specs):
        slots[s].episode = s
        policy.reset(s, spec)
        obs, extra = envs[s].reset(seed=int(spec.seed))
        pending.append((s, obs, extra, 0.0, False, False))
    remaining = len(specs)
    while remaining:
        for s, obs, extra, r, term, trunc in pending:
            sl = slots[s]
            if sl.has_obs:
                sl.total += r
                sl.length += 1
                if steps:
                    sl.rewards.append(r)
                    sl.terms.append(term)
                    sl.truncs.append(trunc)
            if term or trunc:
                results[s] = EnvPool._result(specs[s], sl, record, steps)
                sl.episode, sl.has_obs = None, False
                remaining -= 1
                continue
            sl.has_obs = True
            frames[s] = obs
            if record:
                sl.raw.append(extra.get("raw_frame", obs))
            if steps:
                sl.obs.append(obs)
        pending = []
        active = np.array([sl.has_obs for sl in slots])
        if not active.any():
            break
        actions = np.asarray(policy.act(frames, active), dtype=info.action_dtype)
        if actions.shape[1:] != info.action_shape or len(actions) < S:
            raise ValueError(f"policy.act returned shape {actions.shape}, expected "
                             f"{(S, *info.action_shape)}")
        actions = actions[:S]  # a policy sized for the whole pool: this actor's first S slots
        for s in np.flatnonzero(active):
            if steps:
                slots[s].actions.append(actions[s].copy())
            obs, r, term, trunc, extra = envs[s].step(actions[s])
            pending.append((s, obs, extra, float(r), bool(term), bool(trunc)))
    return results  # type: ignore[return-value]


def _same(shared: Any, light: Any) -> BatchPolicy:
    """A pickled policy is its own recipe (copied: arrays from Ray's store are read-only)."""
    return copy.deepcopy(light)


def _world_model_policy(world_model: Any, light: tuple) -> BatchPolicy:
    """A `WorldModelPolicy` equal to the driver's: its controllers, key, action noise and
    offset."""
    import jax  # only actors that run a world-model policy import JAX

    from dreamjax.agent import WorldModelPolicy

    ctrl_params_batch, key_data, action_noise, action_offset = light
    policy = WorldModelPolicy(world_model, ctrl_params_batch, action_noise=action_noise,
                              action_offset=action_offset)
    policy.base_key = jax.random.wrap_key_data(key_data)
    return policy


def remote_policy(policy: BatchPolicy) -> tuple[Callable[[Any, Any], BatchPolicy], Any, Any]:
    """(build, shared, light) with build(shared, light) equal to `policy` in another process:
    for a `WorldModelPolicy` shared is its world model (NumPy leaves; the same object for every
    policy of one factory) and light its controllers, key data, action noise and offset; for
    any other policy shared is None and light the policy itself."""
    agent = sys.modules.get("dreamjax.agent")
    if agent is None or not isinstance(policy, agent.WorldModelPolicy):
        return _same, None, policy
    import jax  # the driver of a world-model policy has imported JAX already

    light = (jax.tree.map(np.asarray, policy.ctrl_params_batch),
             np.asarray(jax.random.key_data(policy.base_key)), policy.action_noise,
             policy.action_offset)
    return _world_model_policy, policy.world_model, light


class _EnvActor:
    """A Ray actor: `n_envs` envs from `env_fn` and the policy of the current run."""

    def __init__(self, env_fn: Callable[[], Any], n_envs: int):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU policy, before JAX is imported
        self.envs = [env_fn() for _ in range(n_envs)]
        self.info = EnvInfo.of(self.envs[0])
        self.shared: dict[str, Any] = {}
        self.policy: tuple[int, BatchPolicy] | None = None

    def ready(self) -> tuple[str, EnvInfo]:
        """(the Ray node this actor runs on, its envs' info)."""
        return _ray().get_runtime_context().get_node_id(), self.info

    def run(self, run_id: int, build: Callable, shared: list, light: list,
            specs: list[EpisodeSpec], record: bool, steps: bool) -> list[EpisodeResult]:
        """Episodes `specs` with run `run_id`'s policy; `shared`, `light`: [ObjectRef] (None
        inside for no shared part), fetched once per pool and once per run."""
        ray = _ray()
        if self.policy is None or self.policy[0] != run_id:
            ref = shared[0]
            if ref is not None and ref.hex() not in self.shared:
                self.shared = {ref.hex(): ray.get(ref)}
            part = None if ref is None else self.shared[ref.hex()]
            self.policy = (run_id, build(part, ray.get(light[0])))
        return run_episodes(self.envs, self.info, specs, self.policy[1], record, steps)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class RayEnvPool:
    """`num_actors` Ray actors (0: one per CPU of the cluster), each with `envs_per_actor` envs
    from `env_fn` (picklable); a context manager. See the module docstring.

    `address`: the Ray cluster to join (`"auto"`, `"ray://host:10001"`, ...) when this process
    has not called `ray.init` yet; None starts a local instance. `actor_options`: extra
    `ray.remote` options for the actors (default one CPU each).
    """

    def __init__(self, env_fn: Callable[[], Any], num_actors: int = 0, envs_per_actor: int = 1,
                 episode_timeout: float = 600.0, startup_timeout: float = 300.0,
                 max_retries: int = 3, address: str | None = None,
                 actor_options: dict | None = None):
        if num_actors < 0 or envs_per_actor < 1 or episode_timeout <= 0 or startup_timeout <= 0:
            raise ValueError(
                f"RayEnvPool: bad sizes num_actors={num_actors} envs_per_actor={envs_per_actor} "
                f"episode_timeout={episode_timeout} startup_timeout={startup_timeout}")
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self.env_fn = env_fn
        self.num_actors = num_actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.envs_per_actor = envs_per_actor
        self.num_slots = self.num_actors * envs_per_actor
        self.episode_timeout = episode_timeout
        self.startup_timeout = startup_timeout
        self.max_retries = max_retries
        self.env_steps = 0
        """Env steps of the last `run`'s finished episodes."""
        self.run_seconds = 0.0
        """Wall time of the last `run`."""
        self.restarts = 0
        """Actors replaced so far (died, failed or hung)."""
        self._cls = ray.remote(**{"num_cpus": 1, "max_restarts": 0, **(actor_options or {})})(
            _EnvActor)
        self._actors: list[Any] = [None] * self.num_actors
        self._fresh = [True] * self.num_actors
        self._info: EnvInfo | None = None
        self._shared: tuple[Any, Any] | None = None  # (the shared object, its ObjectRef)
        self._run_id = 0
        self._closed = False
        for a in range(self.num_actors):
            self._spawn(a)

    @property
    def env_info(self) -> EnvInfo:
        """The envs' id and spaces, as the actors reported them (waits for their start-up)."""
        if self._info is None:
            refs = [actor.ready.remote() for actor in self._actors]
            done, late = self._ray.wait(refs, num_returns=len(refs),
                                        timeout=self.startup_timeout)
            if late:
                raise WorkerError(f"RayEnvPool: {len(late)} actor(s) did not start within "
                                  f"startup_timeout={self.startup_timeout}s")
            try:
                infos = {info for _, info in self._ray.get(done)}
            except self._ray.exceptions.RayError as e:
                raise WorkerError(f"RayEnvPool: an actor could not build its env with env_fn "
                                  f"{self.env_fn!r}: {str(e).splitlines()[0]}") from None
            if len(infos) != 1:
                raise WorkerError(f"RayEnvPool: the actors' envs differ ({infos}); env_fn must "
                                  "build the same env every time")
            self._info = infos.pop()
            self._fresh = [False] * self.num_actors
        return self._info

    def nodes(self) -> list[str]:
        """The Ray node id of each actor now (waits for fresh actors to start)."""
        return [node for node, _ in self._ray.get([a.ready.remote() for a in self._actors],
                                                  timeout=self.startup_timeout)]

    def actors(self) -> list[Any]:
        """The current actor handles (for monitoring and fault-injection tests)."""
        return list(self._actors)

    def _spawn(self, a: int) -> None:
        self._actors[a] = self._cls.remote(self.env_fn, self.envs_per_actor)
        self._fresh[a] = True

    def _replace(self, a: int) -> None:
        self._ray.kill(self._actors[a], no_restart=True)
        self.restarts += 1
        self._spawn(a)

    def _policy_parts(self, policy: BatchPolicy) -> tuple[Callable, list, list]:
        build, shared, light = remote_policy(policy)
        if shared is None:
            shared_ref = None
        else:
            if self._shared is None or self._shared[0] is not shared:
                import jax  # a world-model policy: the driver has imported JAX already

                self._shared = (shared, self._ray.put(jax.tree.map(np.asarray, shared)))
            shared_ref = self._shared[1]
        return build, [shared_ref], [self._ray.put(light)]

    def run(self, specs: Sequence[EpisodeSpec], policy: BatchPolicy, record: bool = False,
            progress: Callable[[EpisodeResult], None] | None = None,
            steps: bool = False) -> list[EpisodeResult]:
        """Run every spec to its end on the actors; results in the order of `specs`
        (`EnvPool.run`'s arguments and results)."""
        if self._closed:
            raise RuntimeError("RayEnvPool.run: the pool is closed")
        ray = self._ray
        _ = self.env_info
        t0 = time.monotonic()
        self.env_steps = 0
        self._run_id += 1
        build, shared, light = self._policy_parts(policy)
        results: list[EpisodeResult | None] = [None] * len(specs)
        attempts = [0] * len(specs)
        queue = deque(range(len(specs)))
        inflight: dict[Any, tuple[int, list[int], float]] = {}
        idle = deque(range(self.num_actors))

        def fail(a: int, episodes: list[int], why: str) -> None:
            self._replace(a)
            for i in episodes:
                attempts[i] += 1
                if attempts[i] > self.max_retries:
                    raise WorkerError(
                        f"RayEnvPool: episode seed={specs[i].seed} tag={specs[i].tag} failed "
                        f"{attempts[i]} times (last: {why}); check env_fn {self.env_fn!r}")
            queue.extendleft(reversed(episodes))
            idle.append(a)

        while queue or inflight:
            while queue and idle:
                a = idle.popleft()
                batch = [queue.popleft() for _ in range(min(self.envs_per_actor, len(queue)))]
                ref = self._actors[a].run.remote(self._run_id, build, shared, light,
                                                 [specs[i] for i in batch], record, steps)
                deadline = time.monotonic() + self.episode_timeout + (
                    self.startup_timeout if self._fresh[a] else 0.0)
                inflight[ref] = (a, batch, deadline)
            timeout = max(0.0, min(d for _, _, d in inflight.values()) - time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
            for ref in ready:
                a, batch, _ = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:
                    lines = [ln for ln in str(e).splitlines() if ln.strip()]
                    fail(a, batch, f"{type(e).__name__}: {lines[-1] if lines else ''}")
                    continue
                self._fresh[a] = False
                idle.append(a)
                for i, res in zip(batch, out, strict=True):
                    results[i] = res
                    self.env_steps += res.length
                    if progress is not None:
                        progress(res)
            now = time.monotonic()
            for ref in [r for r, (_, _, d) in inflight.items() if now >= d]:
                a, batch, _ = inflight.pop(ref)
                fail(a, batch, f"no answer within episode_timeout={self.episode_timeout}s")
        self.run_seconds = time.monotonic() - t0
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close every actor's envs (waiting at most 10 s), then end the actors (this pool's;
        the Ray instance stays up)."""
        if self._closed:
            return
        self._closed = True
        self._ray.wait([actor.close.remote() for actor in self._actors],
                       num_returns=len(self._actors), timeout=10.0)
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
