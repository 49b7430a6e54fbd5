"""A pool of real envs in spawned worker processes, driven by one batched policy.

The pool is env-agnostic: `env_fn()` (picklable, e.g. `functools.partial(make_env, fast=True,
max_episode_steps=300)`) builds a gymnasium env in each worker, and the workers report the env's
observation and action spaces (`EnvInfo`) when they are ready. Workers import this module and
what unpickling `env_fn` imports (for CarRacing, `dreamjax.envs.carracing`: NumPy, never JAX);
like every spawned process they also re-import the main module, so a main script that imports
JAX at its top makes each worker import it too (seconds of start-up, no other effect). The
policy lives in the main process and acts for every slot at once each tick.

Robustness: every exchange with a worker has a deadline. A worker whose process dies or that
does not answer within `step_timeout` is killed and replaced, and the episodes it was running are
restarted from scratch with the same seed (the policy's `reset` is called again for the slot).
An episode that keeps failing (`max_retries`) raises `WorkerError` instead of looping forever.
Fault injection for tests goes through `env_fn` (an env that hangs or crashes at some step).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from dreamjax.envs.protocol import BatchPolicy, EnvInfo, EpisodeResult, EpisodeSpec
from dreamjax.errors import WorkerError

__all__ = ["BatchPolicy", "EnvInfo", "EnvPool", "EpisodeResult", "EpisodeSpec"]


def _worker_main(conn, env_fn: Callable[[], Any], n_envs: int) -> None:
    """Worker loop: owns `n_envs` envs from `env_fn`; answers each command list with one reply
    list. Reports ("ready", pid, EnvInfo) first, or ("failed", message) if `env_fn` raises.

    Ignores SIGINT (Ctrl-C reaches the whole process group; the main process closes the pool),
    and exits when the main process goes away (its pipe end closes).
    """
    os.setpgid(0, 0)  # its own process group: `_kill` also ends processes the env started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        envs = [env_fn() for _ in range(n_envs)]
        info = EnvInfo.of(envs[0])
    except Exception as e:  # reported to the main process, which raises WorkerError
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid(), info))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        seq, record, cmds = msg
        out = []
        for i, kind, arg in cmds:
            if kind == "reset":
                obs, extra = envs[i].reset(seed=int(arg))
                r, term, trunc = 0.0, False, False
            else:
                obs, r, term, trunc, extra = envs[i].step(arg)
            frame = extra.get("raw_frame", obs) if record else None
            out.append((i, obs, frame, float(r), bool(term), bool(trunc)))
        try:
            conn.send((seq, out))
        except (BrokenPipeError, OSError):
            break
    for env in envs:
        env.close()


class _Slot:
    """Main-process bookkeeping of one env slot."""

    def __init__(self) -> None:
        self.episode: int | None = None
        self.has_obs = False
        self.clear()

    def clear(self) -> None:
        self.total = 0.0
        self.length = 0
        self.raw: list[np.ndarray] = []
        self.obs: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terms: list[bool] = []
        self.truncs: list[bool] = []


class EnvPool:
    """Spawned worker processes, each with `envs_per_worker` envs from `env_fn`; a context
    manager.

    `num_workers=0` means one worker per CPU core. `step_timeout` bounds every exchange with a
    running worker; `startup_timeout` bounds a (re)started worker's start-up. `env_info` (the
    envs' spaces) is known once the workers are ready: the first `run`, or the first access,
    waits for them.
    """

    def __init__(self, env_fn: Callable[[], Any], num_workers: int = 0, envs_per_worker: int = 1,
                 step_timeout: float = 60.0, startup_timeout: float = 120.0,
                 max_retries: int = 3):
        if num_workers < 0 or envs_per_worker < 1 or step_timeout <= 0 or startup_timeout <= 0:
            raise ValueError(
                f"EnvPool: bad sizes num_workers={num_workers} envs_per_worker={envs_per_worker} "
                f"step_timeout={step_timeout} startup_timeout={startup_timeout}")
        self.env_fn = env_fn
        self.num_workers = num_workers or (os.cpu_count() or 1)
        self.envs_per_worker = envs_per_worker
        self.num_slots = self.num_workers * envs_per_worker
        self.step_timeout = step_timeout
        self.startup_timeout = startup_timeout
        self.max_retries = max_retries
        self.env_steps = 0
        """Env steps taken by the last `run` (counting steps of restarted episodes)."""
        self.run_seconds = 0.0
        """Wall time of the last `run`."""
        self.restarts = 0
        """Workers replaced so far (crashed or hung)."""
        self._info: EnvInfo | None = None
        self._ctx = mp.get_context("spawn")
        self._procs: list = [None] * self.num_workers
        self._conns: list = [None] * self.num_workers
        self._ready = [False] * self.num_workers
        self._started = [0.0] * self.num_workers
        self._closed = False
        self._seq = 0
        for w in range(self.num_workers):
            self._spawn(w)

    @property
    def env_info(self) -> EnvInfo:
        """The envs' id and spaces, as the workers reported them (waits for their start-up)."""
        self._await_ready()
        assert self._info is not None
        return self._info

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and fault-injection tests)."""
        return [p.pid for p in self._procs]

    def _spawn(self, w: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self.env_fn, self.envs_per_worker),
            daemon=True, name=f"dreamjax-env-{w}")
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent
        self._ready[w] = False
        self._started[w] = time.monotonic()

    def _kill(self, w: int) -> None:
        proc, conn = self._procs[w], self._conns[w]
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker and, e.g., ViZDoom's engine
            proc.kill()
        proc.join(timeout=10)
        conn.close()

    def _replace(self, w: int) -> None:
        self._kill(w)
        self.restarts += 1
        self._spawn(w)

    def _on_ready(self, w: int, msg: tuple) -> None:
        """Handle worker `w`'s first message: ("ready", pid, EnvInfo) or ("failed", why)."""
        if msg[0] == "failed":
            raise WorkerError(f"EnvPool: worker {w} could not build its env with env_fn "
                              f"{self.env_fn!r}: {msg[1]}")
        info = msg[2]
        if self._info is None:
            self._info = info
        elif info != self._info:
            raise WorkerError(f"EnvPool: worker {w}'s env differs from the others ({info} vs "
                              f"{self._info}); env_fn must build the same env every time")
        self._ready[w] = True

    def _died_starting(self, w: int) -> WorkerError:
        self._procs[w].join(timeout=5)
        return WorkerError(
            f"EnvPool: worker {w} died while starting (exit code {self._procs[w].exitcode}); "
            "spawned workers re-import the main module, so run from a file or module, not stdin")

    def _await_ready(self) -> None:
        """Wait until every worker has reported ready (each within `startup_timeout`)."""
        pending = {w for w in range(self.num_workers) if not self._ready[w]}
        while pending:
            deadline = min(self._started[w] for w in pending) + self.startup_timeout
            by_conn = {self._conns[w]: w for w in pending}
            for conn in wait(list(by_conn), timeout=max(0.0, deadline - time.monotonic())):
                w = by_conn[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    raise self._died_starting(w) from None
                self._on_ready(w, msg)
                pending.discard(w)
            late = [w for w in pending if time.monotonic() >= self._started[w]
                    + self.startup_timeout]
            if late:
                raise WorkerError(f"EnvPool: worker {late[0]} did not start within "
                                  f"startup_timeout={self.startup_timeout}s")

    def _exchange(self, cmds: dict[int, list], record: bool) -> tuple[dict[int, list], set[int]]:
        """Send each worker its commands; gather replies. Returns (replies, failed workers)."""
        failed: set[int] = set()
        deadline: dict[int, float] = {}
        self._seq += 1
        for w, c in cmds.items():
            try:
                self._conns[w].send((self._seq, record, c))
            except (BrokenPipeError, OSError):
                failed.add(w)
                continue
            now = time.monotonic()
            deadline[w] = (now + self.step_timeout if self._ready[w]
                           else self._started[w] + self.startup_timeout + self.step_timeout)
        replies: dict[int, list] = {}
        pending = set(deadline)
        while pending:
            timeout = max(0.0, min(deadline[w] for w in pending) - time.monotonic())
            by_conn = {self._conns[w]: w for w in pending}
            for conn in wait(list(by_conn), timeout=timeout):
                w = by_conn[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    if not self._ready[w]:
                        raise self._died_starting(w) from None
                    failed.add(w)
                    pending.discard(w)
                    continue
                if msg[0] in ("ready", "failed"):
                    self._on_ready(w, msg)
                    deadline[w] = time.monotonic() + self.step_timeout
                    continue
                if msg[0] != self._seq:
                    continue  # a stale reply from an exchange that was interrupted
                replies[w] = msg[1]
                pending.discard(w)
            now = time.monotonic()
            for w in [w for w in pending if now >= deadline[w]]:
                failed.add(w)
                pending.discard(w)
        for w in failed:
            self._replace(w)
        return replies, failed

    def run(self, specs: Sequence[EpisodeSpec], policy: BatchPolicy, record: bool = False,
            progress: Callable[[EpisodeResult], None] | None = None,
            steps: bool = False) -> list[EpisodeResult]:
        """Run every spec to its end; results in the order of `specs`.

        `record`: keep each step's `info["raw_frame"]` (videos); `steps`: keep per-step
        observations, actions, rewards and flags. `progress(result)` is called as each episode
        finishes; it may drop large arrays from the result it is given (e.g. after writing them
        to disk) to bound memory.
        """
        if self._closed:
            raise RuntimeError("EnvPool.run: the pool is closed")
        info = self.env_info
        t0 = time.monotonic()
        self.env_steps = 0
        S, E = self.num_slots, self.envs_per_worker
        results: list[EpisodeResult | None] = [None] * len(specs)
        queue = deque(range(len(specs)))
        attempts = [0] * len(specs)
        slots = [_Slot() for _ in range(S)]
        frames = np.zeros((S, *info.observation_shape), info.observation_dtype)
        to_reset: list[int] = []
        remaining = len(specs)

        def start(s: int, i: int) -> None:
            slots[s].episode, slots[s].has_obs = i, False
            slots[s].clear()
            policy.reset(s, specs[i])
            to_reset.append(s)

        while remaining:
            for s in range(S):
                if slots[s].episode is None and queue:
                    start(s, queue.popleft())
            cmds: dict[int, list] = {}
            active = np.array([sl.has_obs for sl in slots])
            if active.any():
                actions = np.asarray(policy.act(frames, active), dtype=info.action_dtype)
                if actions.shape != (S, *info.action_shape):
                    raise ValueError(f"policy.act returned shape {actions.shape}, "
                                     f"expected {(S, *info.action_shape)}")
                for s in np.flatnonzero(active):
                    cmds.setdefault(s // E, []).append((s % E, "step", actions[s]))
                    if steps:
                        slots[s].actions.append(actions[s].copy())
            for s in to_reset:
                cmds.setdefault(s // E, []).append((s % E, "reset", specs[slots[s].episode].seed))
            to_reset.clear()
            replies, failed = self._exchange(cmds, record)
            for w in failed:
                for s in range(w * E, (w + 1) * E):
                    i = slots[s].episode
                    if i is None:
                        continue
                    attempts[i] += 1
                    if attempts[i] > self.max_retries:
                        raise WorkerError(
                            f"EnvPool: episode seed={specs[i].seed} tag={specs[i].tag} failed "
                            f"{attempts[i]} times (its worker crashed or exceeded step_timeout="
                            f"{self.step_timeout}s each time); check env_fn {self.env_fn!r}")
                    start(s, i)
            for w, out in replies.items():
                for ls, obs, raw, r, term, trunc in out:
                    s = w * E + ls
                    sl = slots[s]
                    if sl.has_obs:
                        self.env_steps += 1
                        sl.total += r
                        sl.length += 1
                        if steps:
                            sl.rewards.append(r)
                            sl.terms.append(term)
                            sl.truncs.append(trunc)
                    if term or trunc:
                        i = sl.episode
                        results[i] = self._result(specs[i], sl, record, steps)
                        sl.episode, sl.has_obs = None, False
                        sl.clear()
                        remaining -= 1
                        if progress is not None:
                            progress(results[i])
                        continue
                    sl.has_obs = True
                    frames[s] = obs
                    if record:
                        sl.raw.append(raw)
                    if steps:
                        sl.obs.append(obs)
        self.run_seconds = time.monotonic() - t0
        return results  # type: ignore[return-value]

    @staticmethod
    def _result(spec: EpisodeSpec, sl: _Slot, record: bool, steps: bool) -> EpisodeResult:
        """The finished episode of slot `sl` (T = sl.length >= 1: a reset never ends one)."""
        res = EpisodeResult(spec=spec, total_reward=float(sl.total), length=sl.length)
        if record:
            res.frames = np.stack(sl.raw)
        if steps:
            res.obs = np.stack(sl.obs)
            res.actions = np.stack(sl.actions)
            res.rewards = np.asarray(sl.rewards, np.float32)
            res.terminated = np.asarray(sl.terms, bool)
            res.truncated = np.asarray(sl.truncs, bool)
        return res

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for w, proc in enumerate(self._procs):
            proc.join(timeout=5)
            self._kill(w)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
