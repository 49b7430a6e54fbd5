"""Real environments (gymnasium CarRacing-v3, ViZDoom TakeCover) and the env-agnostic worker pool.

Importing this package registers `FAST_CARRACING_ID` ("dreamjax/FastCarRacing-v3") with
gymnasium: `FastCarRacing` (`dreamjax.envs.fast_carracing`, byte-identical to CarRacing-v3,
faster) under CarRacing-v3's spec (time limit 1000 steps, reward threshold 900), so that
`gym.make("dreamjax/FastCarRacing-v3")` works after `import dreamjax.envs`, or anywhere as
`gym.make("dreamjax.envs:dreamjax/FastCarRacing-v3")` (gymnasium 1.x has no plugin entry
points). The entry point is a string: Box2D loads on the first `make`, not here. NumPy and
gymnasium only: the env workers import this package, and it never imports JAX.
"""

from gymnasium.envs.registration import register, registry

FAST_CARRACING_ID = "dreamjax/FastCarRacing-v3"

if FAST_CARRACING_ID not in registry:
    _base = registry["CarRacing-v3"]
    register(
        id=FAST_CARRACING_ID,
        entry_point="dreamjax.envs.fast_carracing:FastCarRacing",
        max_episode_steps=_base.max_episode_steps,
        reward_threshold=_base.reward_threshold,
        kwargs=dict(_base.kwargs),
    )
