"""A pool of real CarRacing envs in spawned worker processes, driven by one batched policy.

The workers are NumPy only (they never import JAX): each owns `envs_per_worker` envs made by
`dreamjax.envs.carracing.make_env`, applies `to_env_action` to the raw controller outputs it is
sent, and answers with preprocessed 64x64 frames (and the raw 96x96 frames when recording).
The policy lives in the main process and acts for every slot at once each tick.

Robustness: every exchange with a worker has a deadline. A worker whose process dies or that
does not answer within `step_timeout` is killed and replaced, and the episodes it was running are
restarted from scratch with the same seed (the policy's `reset` is called again for the slot).
An episode that keeps failing (`max_retries`) raises instead of looping forever.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Protocol

import numpy as np

FRAME_SHAPE = (64, 64, 3)
RAW_SHAPE = (96, 96, 3)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: env reset seed and a caller's label."""

    seed: int
    """Env reset seed (`env.reset(seed=seed)`)."""
    tag: int = 0
    """Caller's label, e.g. a candidate or episode index."""
    fault_hang_step: int | None = None
    """TEST-ONLY fault injection: on the episode's first attempt the worker hangs (sleeps) before
    taking this step, so tests can check that a hung worker is replaced. Never set it otherwise."""


@dataclass
class EpisodeResult:
    """What one finished episode returned."""

    spec: EpisodeSpec
    total_reward: float
    length: int
    frames: np.ndarray | None = None
    """(T, 96, 96, 3) uint8 raw env frames when `record=True`; frames[t] is the observation at
    which the t-th action was taken."""
    obs: np.ndarray | None = None
    """(T, 64, 64, 3) uint8 preprocessed frames when `steps=True` (same timing as `frames`)."""
    actions: np.ndarray | None = None
    """(T, 3) float32 raw controller outputs when `steps=True`."""
    rewards: np.ndarray | None = None
    """(T,) float32 per-step rewards when `steps=True`; rewards[t] follows actions[t]."""
    terminated: np.ndarray | None = None
    """(T,) bool when `steps=True`."""
    truncated: np.ndarray | None = None
    """(T,) bool when `steps=True`."""


class BatchPolicy(Protocol):
    """A policy acting for every slot of the pool at once; lives in the main process."""

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        """Slot `slot` starts (or, after a worker failure, restarts) the episode `spec`."""

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3) uint8, active (S,) bool -> (S, 3) raw actions in [-1, 1].

        Only the rows of active slots are used (and only those slots advance).
        """


def _worker_main(conn, n_envs: int, fast: bool, max_steps: int) -> None:
    """Worker loop: owns `n_envs` envs; answers each command list with one reply list.

    Ignores SIGINT (Ctrl-C reaches the whole process group; the main process closes the pool),
    and exits when the main process goes away (its pipe end closes).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from dreamjax.envs.carracing import make_env, preprocess, to_env_action

    envs = [make_env(fast=fast, max_episode_steps=max_steps) for _ in range(n_envs)]
    hang: list[int | None] = [None] * n_envs
    t = [0] * n_envs
    conn.send(("ready", os.getpid()))
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
                seed, hang[i] = arg
                t[i] = 0
                raw, _ = envs[i].reset(seed=int(seed))
                r, term, trunc = 0.0, False, False
            else:
                if hang[i] is not None and t[i] == hang[i]:
                    time.sleep(1e6)  # test-only fault injection (EpisodeSpec.fault_hang_step)
                raw, r, term, trunc, _ = envs[i].step(to_env_action(arg))
                t[i] += 1
            out.append((i, preprocess(raw), raw if record else None, float(r), bool(term),
                        bool(trunc)))
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
    """Spawned worker processes, each with `envs_per_worker` real envs; a context manager.

    `num_workers=0` means one worker per CPU core. `step_timeout` bounds every exchange with a
    running worker; `startup_timeout` bounds a (re)started worker's start-up.
    """

    def __init__(self, num_workers: int = 0, envs_per_worker: int = 1, fast: bool = True,
                 max_steps: int = 1000, step_timeout: float = 60.0,
                 startup_timeout: float = 120.0, max_retries: int = 3):
        if num_workers < 0 or envs_per_worker < 1 or max_steps < 1 or step_timeout <= 0:
            raise ValueError(
                f"EnvPool: bad sizes num_workers={num_workers} envs_per_worker={envs_per_worker} "
                f"max_steps={max_steps} step_timeout={step_timeout}")
        self.num_workers = num_workers or (os.cpu_count() or 1)
        self.envs_per_worker = envs_per_worker
        self.num_slots = self.num_workers * envs_per_worker
        self.fast = fast
        self.max_steps = max_steps
        self.step_timeout = step_timeout
        self.startup_timeout = startup_timeout
        self.max_retries = max_retries
        self.env_steps = 0
        """Env steps taken by the last `run` (counting steps of restarted episodes)."""
        self.run_seconds = 0.0
        """Wall time of the last `run`."""
        self.restarts = 0
        """Workers replaced so far (crashed or hung)."""
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
    def steps_per_second(self) -> float:
        """Env steps per second over the last `run`."""
        return self.env_steps / self.run_seconds if self.run_seconds > 0 else 0.0

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and fault-injection tests)."""
        return [p.pid for p in self._procs]

    def _spawn(self, w: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self.envs_per_worker, self.fast, self.max_steps),
            daemon=True, name=f"dreamjax-env-{w}")
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent
        self._ready[w] = False
        self._started[w] = time.monotonic()

    def _kill(self, w: int) -> None:
        proc, conn = self._procs[w], self._conns[w]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        conn.close()

    def _replace(self, w: int) -> None:
        self._kill(w)
        self.restarts += 1
        self._spawn(w)

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
                        self._procs[w].join(timeout=5)
                        raise RuntimeError(
                            f"EnvPool: worker {w} died while starting (exit code "
                            f"{self._procs[w].exitcode}); spawned workers re-import the main "
                            "module, so run from a file or module, not stdin") from None
                    failed.add(w)
                    pending.discard(w)
                    continue
                if msg[0] == "ready":
                    self._ready[w] = True
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

        `record`: keep raw 96x96 frames; `steps`: keep per-step preprocessed frames, actions,
        rewards and flags. `progress(result)` is called as each episode finishes; it may drop
        large arrays from the result it is given (e.g. after writing them to disk) to bound
        memory.
        """
        if self._closed:
            raise RuntimeError("EnvPool.run: the pool is closed")
        t0 = time.monotonic()
        self.env_steps = 0
        S, E = self.num_slots, self.envs_per_worker
        results: list[EpisodeResult | None] = [None] * len(specs)
        queue = deque(range(len(specs)))
        attempts = [0] * len(specs)
        slots = [_Slot() for _ in range(S)]
        frames = np.zeros((S, *FRAME_SHAPE), np.uint8)
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
                actions = np.asarray(policy.act(frames, active), dtype=np.float32)
                if actions.shape != (S, 3):
                    raise ValueError(f"policy.act returned shape {actions.shape}, "
                                     f"expected ({S}, 3)")
                for s in np.flatnonzero(active):
                    cmds.setdefault(s // E, []).append((s % E, "step", actions[s]))
                    if steps:
                        slots[s].actions.append(actions[s].copy())
            for s in to_reset:
                i = slots[s].episode
                hang = specs[i].fault_hang_step if attempts[i] == 0 else None
                cmds.setdefault(s // E, []).append((s % E, "reset", (specs[i].seed, hang)))
            to_reset.clear()
            replies, failed = self._exchange(cmds, record)
            for w in failed:
                for s in range(w * E, (w + 1) * E):
                    i = slots[s].episode
                    if i is None:
                        continue
                    attempts[i] += 1
                    if attempts[i] > self.max_retries:
                        raise RuntimeError(
                            f"EnvPool: episode seed={specs[i].seed} tag={specs[i].tag} failed "
                            f"{attempts[i]} times (worker crashed or exceeded step_timeout="
                            f"{self.step_timeout}s)")
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
        res = EpisodeResult(spec=spec, total_reward=float(sl.total), length=sl.length)
        if record:
            res.frames = np.stack(sl.raw) if sl.raw else np.zeros((0, *RAW_SHAPE), np.uint8)
        if steps:
            T = sl.length
            res.obs = np.stack(sl.obs) if T else np.zeros((0, *FRAME_SHAPE), np.uint8)
            res.actions = np.asarray(sl.actions, np.float32).reshape(T, 3)
            res.rewards = np.asarray(sl.rewards, np.float32).reshape(T)
            res.terminated = np.asarray(sl.terms, bool).reshape(T)
            res.truncated = np.asarray(sl.truncs, bool).reshape(T)
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
