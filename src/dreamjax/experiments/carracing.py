"""World Models on CarRacing-v3, end to end: `python -m dreamjax.experiments.carracing`.

collect -> train V -> encode -> train M -> train C -> evaluate (real episodes) -> report.
`--profile {smoke,laptop,paper}` (or the profile as the first argument) picks the sizes, laptop
by default; every field can be overridden (e.g. `--vae.batch-size 64`); `--profile NAME --help`
shows that profile's defaults. Rerunning skips finished stages and resumes an interrupted one;
`--reopen OLD --run-dir NEW --iterate.rounds R` starts NEW from an iterative run's rounds.
A bad flag or run folder fails before any work with one line (exit code 2), a corrupt artifact,
a non-finite loss or a failing env worker with one line (exit code 1); `--debug` shows the
traceback.
"""

from __future__ import annotations

import sys

from dreamjax.config import DEFAULT_PROFILE, PROFILES, ExperimentConfig
from dreamjax.experiments import cli

PROG = "python -m dreamjax.experiments.carracing"


def run(cfg: ExperimentConfig) -> int:
    """Check the config and the run folder, print the banner, run the requested stages."""
    return cli.run_game(cfg, "dreamjax.pipeline.carracing:CARRACING")


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        sys.argv[1:] if argv is None else argv, run,
        profiles=PROFILES, default=DEFAULT_PROFILE, prog=PROG, description=__doc__ or "",
    )


if __name__ == "__main__":
    sys.exit(main())
