"""World Models on CarRacing-v3, end to end: `python -m dreamjax.experiments.carracing`.

collect -> train V -> encode -> train M -> train C -> evaluate (real episodes) -> report.
`--profile {smoke,laptop,paper}` picks the sizes; every field can be overridden
(e.g. `--vae.batch-size 64`). Rerunning skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import sys

import tyro

from dreamjax.config import PROFILES, ExperimentConfig, profile_config
from dreamjax.pipeline.run import ConfigError, run_stages


def parse_args(argv: list[str]) -> ExperimentConfig:
    """`--profile` picks the preset; tyro parses every other flag on top of it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--profile", default="laptop")
    known, rest = pre.parse_known_args(argv)
    if known.profile not in PROFILES:
        raise ConfigError(
            f"--profile: unknown profile {known.profile!r}; choose one of {', '.join(PROFILES)}"
        )
    default = profile_config(known.profile)
    return tyro.cli(
        ExperimentConfig,
        default=default,
        args=[*rest, "--profile", known.profile],
        description=__doc__,
        prog="python -m dreamjax.experiments.carracing",
    )


def main(argv: list[str] | None = None) -> int:
    from dreamjax.pipeline.carracing import carracing_runners, describe

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_args(argv)
        print(describe(cfg), flush=True)
        run = run_stages(cfg, carracing_runners())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[dreamjax] report: {run.root / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
