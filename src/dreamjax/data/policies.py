"""Data-collection policies (CarRacing: PAPER.md §0 "random policy", §1.2, and a noisy
hand-coded road follower; Doom: §2.2) and the per-episode seeding collection uses: episode i of
a master seed has env seed `episode_seed(master, i)` and policy stream `episode_rng(master, i)`,
whatever worker or slot runs it. A collection that discards short episodes (Doom, §2.2) tries
index i again: try k has env seed `episode_seed(master, i, k)` and runs under the tag
`collection_tag(i, k)`, whose policy stream `episode_rng(master, tag)` is try k's own (try 0 is
the plain index).

Each policy class names its action size (`action_dim`): collection checks it against the env's.

The policies are `dreamjax.envs.protocol.BatchPolicy`s; they run in the main process (this module
imports JAX for V's random encoder, so env worker processes never import it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.envs.protocol import EpisodeSpec

ATTEMPT_STRIDE = 2**32
"""`collection_tag(index, attempt) = index + attempt * ATTEMPT_STRIDE` (indices stay below it)."""
CARRACING_ACTION_DIM = 3
"""(steer, gas, brake): the action size of the CarRacing policies."""


def collection_tag(index: int, attempt: int = 0) -> int:
    """The `EpisodeSpec.tag` of try `attempt` of collection episode `index` (try 0: `index`)."""
    if not 0 <= index < ATTEMPT_STRIDE or attempt < 0:
        raise ValueError(f"collection_tag: need 0 <= index < 2^32 and attempt >= 0, got "
                         f"{index}, {attempt}")
    return int(index) + int(attempt) * ATTEMPT_STRIDE


def split_tag(tag: int) -> tuple[int, int]:
    """(index, attempt) of a `collection_tag`."""
    attempt, index = divmod(int(tag), ATTEMPT_STRIDE)
    return index, attempt


def _spawn_key(index: int, stream: int, attempt: int) -> tuple[int, ...]:
    """SeedSequence spawn key of one stream of one try; try 0 keeps the two-part key of a
    collection without tries, so its episodes are unchanged."""
    return (int(index), stream) if attempt == 0 else (int(index), stream, int(attempt))


def episode_seed(master_seed: int, index: int, attempt: int = 0) -> int:
    """Env reset seed of try `attempt` of collection episode `index`: a hash of (master seed,
    index, attempt) in [0, 2^31).

    Distinct indices (and tries) give independent seeds, so a rerun that adds episodes never
    repeats one.
    """
    ss = np.random.SeedSequence(entropy=int(master_seed), spawn_key=_spawn_key(index, 0, attempt))
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def episode_rng(master_seed: int, tag: int) -> np.random.Generator:
    """The collection policy's random stream for the episode with `EpisodeSpec.tag` = `tag`
    (a `collection_tag`: the index, or a later try of it), independent of the env seed."""
    index, attempt = split_tag(tag)
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(master_seed),
                               spawn_key=_spawn_key(index, 1, attempt)))


class RandomModelPolicy:
    """The reference code's data-collection policy (PAPER.md §0 "random policy", §1.2).

    As in `carracing/extract.py:27-36` and `model.py:142-152`: for every episode draw
    s ~ U(0, 0.01) and set every parameter of a randomly initialised V encoder, M's LSTM and the
    controller to Cauchy x s; then at each step z = mu + exp(logvar / 2) * eps from V's encoder
    on frame/255, a = tanh(W [z, h] + b) (PAPER.md §1.5), and the LSTM (forget bias 1.0, input
    [z, env action], PAPER.md §1.4) consumes (z_t, a_t) after acting, starting from zeros.

    Why the real random network and not a cheap stand-in: measured on real frames, the random
    encoder's logvar explodes for most s (|z| ~ 1e2..1e10 once s > ~0.0015), so in most episodes
    the actions are saturated, step-to-step random +-1 noise, and only small-s episodes give
    small, frame-dependent actions. A random projection of the frame does not reproduce that
    mixture. The real encoder (JAX, jitted, batch 1) costs 0.6-1.7 ms per frame on a busy 2-core
    CPU next to 3-5 ms per env step, so it is affordable; it runs in the main process, so with
    many workers the policy, not the envs, bounds collection (`brownian` costs ~0.03 ms).

    Differences from the reference: V's decoder and M's MDN head are not drawn (they do not
    influence actions); the encoder runs in float32 and its outputs are made finite (logvar
    clipped to +-200, infinities to +-1e30) and the rest runs in float64, so the reference's
    float32 inf - inf NaN actions cannot occur. Each slot is computed on its own (batch 1), so
    an episode's actions do not depend on how many slots run beside it (resume reproduces it).
    The random streams are `episode_rng(master seed, spec.tag)`.
    """

    name = "paper"
    action_dim = CARRACING_ACTION_DIM
    Z, H = 32, 256
    CONVS = ((3, 32), (32, 64), (64, 128), (128, 256))  # 4x4 stride 2 valid (PAPER.md §1.3)

    def __init__(self, master_seed: int, num_slots: int):
        self.master_seed = int(master_seed)
        self.enc = jax.jit(_random_encoder)
        self.params: list = [None] * num_slots
        self.lstm: list = [None] * num_slots
        self.rngs: list = [None] * num_slots
        self.h = np.zeros((num_slots, self.H))
        self.c = np.zeros((num_slots, self.H))

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        rng = episode_rng(self.master_seed, spec.tag)
        s = rng.uniform(0.0, 0.01)

        def cauchy(*shape):
            return rng.standard_cauchy(shape) * s

        A = self.action_dim
        ctrl_b, ctrl_w = cauchy(A), cauchy(self.Z + self.H, A)
        convs = [(jnp.asarray(cauchy(4, 4, ci, co), jnp.float32),
                  jnp.asarray(cauchy(co), jnp.float32)) for ci, co in self.CONVS]
        dense = [(jnp.asarray(cauchy(1024, self.Z), jnp.float32),
                  jnp.asarray(cauchy(self.Z), jnp.float32)) for _ in range(2)]
        self.params[slot] = (convs, dense)
        self.lstm[slot] = (ctrl_w, ctrl_b, cauchy(self.Z + A + self.H, 4 * self.H),
                           cauchy(4 * self.H))
        self.rngs[slot] = rng
        self.h[slot] = 0.0
        self.c[slot] = 0.0

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3) uint8, active (S,) bool -> (S, 3) float32 actions in [-1, 1]."""
        out = np.zeros((len(frames), self.action_dim), np.float32)
        for s in np.flatnonzero(active):
            mu, logvar = (np.asarray(v, np.float64) for v in
                          self.enc(self.params[s], frames[s].astype(np.float32) / 255.0))
            mu = np.nan_to_num(mu, nan=0.0, posinf=1e30, neginf=-1e30)
            logvar = np.clip(np.nan_to_num(logvar, nan=0.0), -200.0, 200.0)
            z = mu + np.exp(logvar / 2.0) * self.rngs[s].standard_normal(self.Z)  # (Z,)
            w, b, k, kb = self.lstm[s]
            a = np.tanh(np.concatenate([z, self.h[s]]) @ w + b)  # (3,)
            env_a = np.array([a[0], (a[1] + 1.0) / 2.0, np.clip(a[2], 0.0, 1.0)])
            i, j, f, o = np.split(np.concatenate([z, env_a, self.h[s]]) @ k + kb, 4)
            self.c[s] = self.c[s] * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
            self.h[s] = np.tanh(self.c[s]) * _sigmoid(o)
            out[s] = a
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _random_encoder(params, frame):
    """V's encoder (PAPER.md §1.3) on one (64, 64, 3) float frame -> (mu (Z,), logvar (Z,))."""
    convs, ((wm, bm), (wl, bl)) = params
    x = frame[None]  # (1, 64, 64, 3)
    for k, b in convs:
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    x = x.reshape(-1)  # (1024,)
    return x @ wm + bm, x @ wl + bl


class BrownianPolicy:
    """Actions follow a clipped random walk in [-1, 1]^3: a_0 ~ U(-1, 1)^3,
    a_{t+1} = clip(a_t + N(0, 0.1^2 I), -1, 1); seeded per episode by `episode_rng`."""

    name = "brownian"
    action_dim = CARRACING_ACTION_DIM
    step_std = 0.1

    def __init__(self, master_seed: int, num_slots: int):
        self.master_seed = int(master_seed)
        self.rngs: list[np.random.Generator | None] = [None] * num_slots
        self.a = np.zeros((num_slots, self.action_dim), np.float32)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.rngs[slot] = episode_rng(self.master_seed, spec.tag)
        self.a[slot] = self.rngs[slot].uniform(-1.0, 1.0, self.action_dim)

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3), active (S,) bool -> (S, 3) float32 actions in [-1, 1]."""
        out = self.a.copy()
        for s in np.flatnonzero(active):
            step = self.rngs[s].normal(0.0, self.step_std, self.action_dim)
            self.a[s] = np.clip(self.a[s] + step, -1.0, 1.0)
        return out


class DoomOpenLoopPolicy:
    """The base of Doom's data policies: one action (S, 1) per slot drawn from the episode's own
    stream (`episode_rng`) and its frame count, never from the frames, so the actions an episode
    plays are known without the game (`open_loop_schedules`: the same policies in the dream).
    `summary` says in a few words what a policy does (the report's calibration rows)."""

    action_dim = 1
    summary = ""

    def __init__(self, master_seed: int, num_slots: int):
        self.master_seed = int(master_seed)
        self.rngs: list[np.random.Generator | None] = [None] * num_slots
        self.a = np.zeros((num_slots, self.action_dim), np.float32)
        self.frame = np.zeros(num_slots, np.int64)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.rngs[slot] = episode_rng(self.master_seed, spec.tag)
        self.frame[slot] = 0


class DoomRandomPolicy(DoomOpenLoopPolicy):
    """The Doom data-collection policy (PAPER.md §2.2, `doomrnn/extract.py:42,54-56`): at every
    frame t (counted from 0) with t % repeat == 0, a ~ U(-1, 1) is drawn and then repeat ~ U{1..10}
    is redrawn; otherwise a is held. `repeat` tests the absolute frame index, as the reference
    does, so a value can be held for fewer than `repeat` frames. Actions (S, 1); seeded per
    episode by `episode_rng`. The reference's draw of a repeat before frame 0 is left out: any
    repeat divides 0, so it never changes an action."""

    name = "doom_random"
    min_repeat = 1
    max_repeat = 10
    summary = "actions held 1-10 steps"

    def __init__(self, master_seed: int, num_slots: int):
        super().__init__(master_seed, num_slots)
        self.repeat = np.ones(num_slots, np.int64)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        super().reset(slot, spec)
        self.repeat[slot] = 1

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3), active (S,) bool -> (S, 1) float32 actions in [-1, 1)."""
        for s in np.flatnonzero(active):
            if self.frame[s] % self.repeat[s] == 0:
                self.a[s] = self.rngs[s].uniform(-1.0, 1.0)
                self.repeat[s] = self.rngs[s].integers(self.min_repeat, self.max_repeat + 1)
            self.frame[s] += 1
        return self.a.copy()


class DoomConstantPolicy(DoomRandomPolicy):
    """One a ~ U(-1, 1) held for the whole episode (its repeat outlasts the 2100-step cap):
    LEFT, nothing or RIGHT, each a third of the episodes. Held, a button takes the player to a
    wall in about 64 steps (the TakeCover room is about 92 steps wide at full speed), where it
    stands and is hit: the real game kills it in about 175 steps. §2.2's holds of 1-10 steps
    rarely show that (about 5 % of their steps are near a wall), so a dream from them alone can
    pay a controller that holds one button."""

    name = "doom_constant"
    min_repeat = 2100
    max_repeat = 2100
    summary = "one action held for the whole episode"


class DoomSweepPolicy(DoomRandomPolicy):
    """§2.2's process with repeats U{20..120} instead of U{1..10} (the same absolute-frame test,
    so a value is held for 30 steps at the median, 76 or more one time in ten): LEFT, nothing or
    RIGHT held long enough to cross the room (about 92 steps wide at full speed) and reach a
    wall. In the game sweeping the room is what survives (blind patrols of 64 and 128 steps
    each way live 622 and 953 steps, standing still 158), but §2.2's holds of 1-10 steps never
    show M a sweep, and the `laptop` dreams of seeds 1 and 2 kill every patrol at about 200
    steps while they let a held button live 765-1020
    (`experiments/results/doom-sweep/PROVENANCE.md`)."""

    name = "doom_sweep"
    min_repeat = 20
    max_repeat = 120
    summary = "actions held 20-120 steps"


class DoomPatrolPolicy(DoomOpenLoopPolicy):
    """Patrols: LEFT and RIGHT (raw -1 and +1) in turn, each held for one period P ~ U{16..160}
    drawn per episode, the first from a random direction for U{1..P} steps. In the game a
    patrol's life depends on its period (16 episodes each: P = 16: 208 steps, 64: 622, 128:
    953, 200: 291; `experiments/results/doom-sweep/patrol_real.py`), so these episodes show M
    what sweeping the room does and what stopping at a wall does, which §2.2's 1-10-step holds
    never show."""

    name = "doom_patrol"
    min_period = 16
    max_period = 160
    summary = "patrols: LEFT and RIGHT in turn, 16-160 steps each way"

    def __init__(self, master_seed: int, num_slots: int):
        super().__init__(master_seed, num_slots)
        self.period = np.ones(num_slots, np.int64)
        self.offset = np.zeros(num_slots, np.int64)
        self.sign = np.ones(num_slots, np.float32)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        super().reset(slot, spec)
        rng = self.rngs[slot]
        self.period[slot] = rng.integers(self.min_period, self.max_period + 1)
        self.offset[slot] = self.period[slot] - rng.integers(1, self.period[slot] + 1)
        self.sign[slot] = rng.choice(np.array([-1.0, 1.0], np.float32))

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3), active (S,) bool -> (S, 1) float32 actions in {-1, +1}."""
        for s in np.flatnonzero(active):
            turns = (self.frame[s] + self.offset[s]) // self.period[s]
            self.a[s] = self.sign[s] * (1.0 if turns % 2 == 0 else -1.0)
            self.frame[s] += 1
        return self.a.copy()


ROAD_ROWS = (28, 36, 44)
"""Rows of V's 64x64 frame the road follower looks at (ahead of the car, which sits at rows
50-58, columns 31-33)."""
CAR_COLUMN = 32.0


def road_mask(frames: np.ndarray) -> np.ndarray:
    """(..., 64, 64, 3) uint8 -> (..., 64, 64) bool: grey pixels (the road; grass is green, the
    car and curbs red)."""
    f = frames.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (abs(r - g) < 25) & (abs(g - b) < 25) & (r > 70) & (r < 160)


def road_offset(frame: np.ndarray) -> float:
    """Mean column of the road pixels in `ROAD_ROWS` of one (64, 64, 3) frame minus the car's
    column (> 0: the road lies to the right); 0 when no road is in view."""
    mask = road_mask(frame[list(ROAD_ROWS)])  # (len(ROAD_ROWS), 64)
    cols = [np.flatnonzero(row).mean() for row in mask if row.any()]
    return float(np.mean(cols)) - CAR_COLUMN if cols else 0.0


class RoadFollowerPolicy:
    """A noisy hand-coded driver on V's frame, so that M sees driving, leaving the road and
    coming back, which random policies rarely show (the public dream results all used data
    from a driving policy; issue 12). Steer = clip(gain * `road_offset` + noise), constant gas,
    no brake; per episode (from `episode_rng`): gain ~ U(0.03, 0.15), env gas ~ U(0.05, 0.2),
    an AR(1) steering noise n' = 0.9 n + N(0, s^2) with s ~ U(0, 0.15), and lapses: with
    probability 0.003 per step the steering is held at +-U(0.5, 1) for U{5..25} steps."""

    name = "follower"
    action_dim = CARRACING_ACTION_DIM
    lapse_prob = 0.003
    """Probability per step (outside a lapse) that a lapse starts."""
    lapse_len = (5, 25)
    """A lapse lasts U{lapse_len[0]..lapse_len[1]} steps."""
    lapse_magnitude = (0.5, 1.0)
    """A lapse holds the steering at ±U(*lapse_magnitude)."""

    def __init__(self, master_seed: int, num_slots: int):
        self.master_seed = int(master_seed)
        self.rngs: list[np.random.Generator | None] = [None] * num_slots
        self.gain = np.zeros(num_slots)
        self.gas = np.zeros(num_slots)
        self.noise_std = np.zeros(num_slots)
        self.noise = np.zeros(num_slots)
        self.lapse_left = np.zeros(num_slots, np.int64)
        self.lapse_steer = np.zeros(num_slots)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        rng = self.rngs[slot] = episode_rng(self.master_seed, spec.tag)
        self.gain[slot] = rng.uniform(0.03, 0.15)
        self.gas[slot] = rng.uniform(0.05, 0.2)
        self.noise_std[slot] = rng.uniform(0.0, 0.15)
        self.noise[slot] = 0.0
        self.lapse_left[slot] = 0

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3) uint8, active (S,) bool -> (S, 3) float32 raw actions."""
        out = np.zeros((len(frames), self.action_dim), np.float32)
        for s in np.flatnonzero(active):
            rng = self.rngs[s]
            self.noise[s] = 0.9 * self.noise[s] + rng.normal(0.0, self.noise_std[s])
            if self.lapse_left[s] == 0 and rng.uniform() < self.lapse_prob:
                self.lapse_left[s] = rng.integers(self.lapse_len[0], self.lapse_len[1] + 1)
                self.lapse_steer[s] = rng.choice([-1.0, 1.0]) * rng.uniform(*self.lapse_magnitude)
            if self.lapse_left[s] > 0:
                self.lapse_left[s] -= 1
                steer = self.lapse_steer[s]
            else:
                steer = self.gain[s] * road_offset(frames[s]) + self.noise[s]
            out[s] = (np.clip(steer + self.kick(s), -1.0, 1.0), *self.pedals(s))
        return out

    def pedals(self, slot: int) -> tuple[float, float]:
        """Raw (gas, brake) of this step: the episode's constant gas, no brake."""
        return 2.0 * self.gas[slot] - 1.0, -1.0

    def kick(self, slot: int) -> float:
        """What this step adds to the steering: nothing (`ExploreFollowerPolicy` adds kicks)."""
        return 0.0


class Segments:
    """Piecewise-constant segments, per slot: a countdown of U{min_len..max_len} steps and a
    random stream of their own (spawned from the episode's), from which a policy draws each new
    segment's values (`ThrottleFollowerPolicy`'s pedals, `ExploreFollowerPolicy`'s kicks)."""

    def __init__(self, num_slots: int, min_len: int, max_len: int):
        self.min_len, self.max_len = min_len, max_len
        self.rngs: list[np.random.Generator | None] = [None] * num_slots
        self.left = np.zeros(num_slots, np.int64)

    def reset(self, slot: int, episode_rng: np.random.Generator) -> None:
        """A new episode: the next stream spawned from `episode_rng`'s seed, no segment yet."""
        seq = episode_rng.bit_generator.seed_seq
        self.rngs[slot] = np.random.default_rng(seq.spawn(1)[0])
        self.left[slot] = 0

    def tick(self, slot: int) -> np.random.Generator | None:
        """One step: the stream to draw the new segment's values from when a segment starts
        here (its length already drawn), else None."""
        rng = None
        if self.left[slot] == 0:
            rng = self.rngs[slot]
            self.left[slot] = rng.integers(self.min_len, self.max_len + 1)
        self.left[slot] -= 1
        return rng


class ThrottleFollowerPolicy(RoadFollowerPolicy):
    """`RoadFollowerPolicy` whose pedals change within the episode, so that M sees what gas,
    coasting and braking do to the car (a dream-trained C exploited an M that never saw the
    car stop on the road: it steered with no gas and was paid for tiles). Piecewise-constant
    segments of U{20..80} steps: with probability 0.7 env gas ~ U(0.05, 0.4) and no brake, 0.15
    coasting (no gas, no brake), 0.15 braking ~ U(0.1, 0.6) with no gas. Its steering is the
    follower's, from the same draws; the pedals draw from a stream of their own (`Segments`,
    the episode's first spawned one)."""

    name = "follower-throttle"

    def __init__(self, master_seed: int, num_slots: int):
        super().__init__(master_seed, num_slots)
        self.pedal_segments = Segments(num_slots, 20, 80)
        self.brake = np.zeros(num_slots)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        super().reset(slot, spec)
        self.pedal_segments.reset(slot, self.rngs[slot])

    def pedals(self, slot: int) -> tuple[float, float]:
        """Raw (gas, brake) of the current segment (a new one is drawn when it ends)."""
        rng = self.pedal_segments.tick(slot)
        if rng is not None:
            u = rng.uniform()
            self.gas[slot] = rng.uniform(0.05, 0.4) if u < 0.7 else 0.0
            self.brake[slot] = rng.uniform(0.1, 0.6) if u >= 0.85 else 0.0
        return 2.0 * self.gas[slot] - 1.0, self.brake[slot] if self.brake[slot] > 0 else -1.0


class ExploreFollowerPolicy(ThrottleFollowerPolicy):
    """`ThrottleFollowerPolicy` whose steering gets kicks that do not depend on the frame, so
    that M can tell what steering does: a follower steers toward the road, the road re-centres
    whatever the action, and an M trained on that alone learned a quarter of the real response
    to a held steer (`experiments/results/carracing-action-response/`). Piecewise-constant
    segments of U{5..30} steps: with probability 0.5 a kick ~ U(-1, 1) added to the steering,
    else none; the kicks draw from a stream of their own (`Segments`, the episode's second
    spawned one)."""

    name = "follower-explore"

    def __init__(self, master_seed: int, num_slots: int):
        super().__init__(master_seed, num_slots)
        self.kick_segments = Segments(num_slots, 5, 30)
        self.kick_value = np.zeros(num_slots)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        super().reset(slot, spec)
        self.kick_segments.reset(slot, self.rngs[slot])

    def kick(self, slot: int) -> float:
        """The current segment's kick (a new segment is drawn when it ends)."""
        rng = self.kick_segments.tick(slot)
        if rng is not None:
            self.kick_value[slot] = rng.uniform(-1.0, 1.0) if rng.uniform() < 0.5 else 0.0
        return float(self.kick_value[slot])


class BlindFollowerPolicy(ThrottleFollowerPolicy):
    """`ThrottleFollowerPolicy` that often drives blind: lapses (a steering held whatever the
    frame shows) start with probability 0.02 per step, last U{10..40} steps and hold ±U(0, 1),
    so about a third of its steps are on-road stretches whose actions do not depend on the
    frames. There M's open-loop loss is unbiased (`--mdnrnn.overshoot-held`), where on the
    follower's own steering it learned the follower's correlations with the wrong sign
    (`experiments/results/carracing-action-response/`)."""

    name = "follower-blind"
    lapse_prob = 0.02
    lapse_len = (10, 40)
    lapse_magnitude = (0.0, 1.0)


class MixedPolicy:
    """Collection episode i (`split_tag(tag)[0]`) is driven by `part_classes[i % n]`, each with
    the episode's own stream: here half and half, the paper's random policy when i is even and
    the noisy `RoadFollowerPolicy` when i is odd."""

    name = "mixed"
    action_dim = CARRACING_ACTION_DIM
    part_classes: tuple[type, ...] = (RandomModelPolicy, RoadFollowerPolicy)
    """The policy of episode i is `part_classes[i % len(part_classes)]`."""

    def __init__(self, master_seed: int, num_slots: int):
        self.parts = tuple(cls(master_seed, num_slots) for cls in self.part_classes)
        self.which = np.zeros(num_slots, np.int64)

    def reset(self, slot: int, spec: EpisodeSpec) -> None:
        self.which[slot] = episode_part(type(self), split_tag(spec.tag)[0])
        self.parts[self.which[slot]].reset(slot, spec)

    def act(self, frames: np.ndarray, active: np.ndarray) -> np.ndarray:
        """frames (S, 64, 64, 3), active (S,) bool -> (S, A) float32 raw actions."""
        out = np.zeros((len(frames), self.action_dim), np.float32)
        for k, part in enumerate(self.parts):
            mine = active & (self.which == k)
            if mine.any():
                out[mine] = part.act(frames, mine)[mine]
        return out


class MixedThrottlePolicy(MixedPolicy):
    """`MixedPolicy` with `ThrottleFollowerPolicy` on the odd episodes."""

    name = "mixed-throttle"
    part_classes = (RandomModelPolicy, ThrottleFollowerPolicy)


class MixedExplorePolicy(MixedPolicy):
    """`MixedPolicy` with `ExploreFollowerPolicy` on the odd episodes."""

    name = "mixed-explore"
    part_classes = (RandomModelPolicy, ExploreFollowerPolicy)


class MixedBlindPolicy(MixedPolicy):
    """`MixedPolicy` with `BlindFollowerPolicy` on the odd episodes."""

    name = "mixed-blind"
    part_classes = (RandomModelPolicy, BlindFollowerPolicy)


class DoomMixedPolicy(MixedPolicy):
    """Doom's mix: episode i is `DoomConstantPolicy`'s when i % 4 == 3, §2.2's
    `DoomRandomPolicy`'s otherwise (three in four)."""

    name = "doom_mixed"
    action_dim = DoomRandomPolicy.action_dim
    part_classes = (DoomRandomPolicy, DoomRandomPolicy, DoomRandomPolicy, DoomConstantPolicy)


class DoomSweepMixedPolicy(MixedPolicy):
    """§2.2's `DoomRandomPolicy` on the even episodes, `DoomSweepPolicy` on the odd ones."""

    name = "doom_sweep_mixed"
    action_dim = DoomRandomPolicy.action_dim
    part_classes = (DoomRandomPolicy, DoomSweepPolicy)


class DoomPatrolMixedPolicy(MixedPolicy):
    """§2.2's `DoomRandomPolicy` on the even episodes, `DoomPatrolPolicy` on the odd ones."""

    name = "doom_patrol_mixed"
    action_dim = DoomRandomPolicy.action_dim
    part_classes = (DoomRandomPolicy, DoomPatrolPolicy)


class DoomPatrolHeldMixedPolicy(MixedPolicy):
    """`doom_patrol_mixed` with a held button in place of every other §2.2 episode: episode i
    is `DoomRandomPolicy`'s when i % 4 == 0, `DoomConstantPolicy`'s when i % 4 == 2 and
    `DoomPatrolPolicy`'s when i is odd. Patrol data alone never show a held button dying at a
    wall, so round 0's dream lets a held LEFT live 1100-1800 steps against 188 in the game
    (`experiments/results/doom-calibrate-probes-seed2/`) and its C holds a button."""

    name = "doom_patrol_held_mixed"
    action_dim = DoomRandomPolicy.action_dim
    part_classes = (DoomRandomPolicy, DoomPatrolPolicy, DoomConstantPolicy, DoomPatrolPolicy)


def part_classes(policy: type) -> tuple[type, ...]:
    """The policies a collection policy class runs: a `MixedPolicy`'s `part_classes`, else
    itself alone."""
    return getattr(policy, "part_classes", (policy,))


def episode_part(policy: type, index: int) -> int:
    """Which of `part_classes(policy)` drives collection episode `index`: index % n."""
    return int(index) % len(part_classes(policy))


def open_loop_schedules(policy: type, master_seed: int, num_episodes: int, steps: int
                        ) -> np.ndarray:
    """(num_episodes, steps, A) float32: the actions a `DoomOpenLoopPolicy` class plays in
    episodes tagged 0..num_episodes-1 of `master_seed`, step by step. It never reads the frames,
    so these are its actions in the game whatever the game shows, and in the dream
    (`dreamjax.dream.calibration.schedule_lengths`)."""
    if not issubclass(policy, DoomOpenLoopPolicy):
        raise TypeError(f"open_loop_schedules: {policy.__name__} reads the frames")
    p = policy(master_seed, num_episodes)
    for i in range(num_episodes):
        p.reset(i, EpisodeSpec(seed=0, tag=i))
    frames = np.zeros((num_episodes, 64, 64, 3), np.uint8)  # never read
    active = np.ones(num_episodes, bool)
    return np.stack([p.act(frames, active) for _ in range(steps)], axis=1)


POLICIES = {"paper": RandomModelPolicy, "brownian": BrownianPolicy,
            "follower": RoadFollowerPolicy, "mixed": MixedPolicy,
            "follower-throttle": ThrottleFollowerPolicy, "mixed-throttle": MixedThrottlePolicy,
            "follower-explore": ExploreFollowerPolicy, "mixed-explore": MixedExplorePolicy,
            "follower-blind": BlindFollowerPolicy, "mixed-blind": MixedBlindPolicy,
            "doom_random": DoomRandomPolicy, "doom_constant": DoomConstantPolicy,
            "doom_mixed": DoomMixedPolicy, "doom_sweep": DoomSweepPolicy,
            "doom_sweep_mixed": DoomSweepMixedPolicy, "doom_patrol": DoomPatrolPolicy,
            "doom_patrol_mixed": DoomPatrolMixedPolicy,
            "doom_patrol_held_mixed": DoomPatrolHeldMixedPolicy}
"""Collection policy name (`CollectConfig.policy`) -> class `(master_seed, num_slots)`."""
