"""World Models on Doom TakeCover, trained entirely in its dream: `python -m
dreamjax.experiments.doom` (PAPER.md §2).

collect (random policy, episodes of more than 100 frames) -> train V (z = 64) -> encode -> train
M (512 units, restart input, done head, truncated BPTT) -> train C (z, c, h; no bias) by CMA-ES
only inside M (τ = 1.15, +1 per step, 2100-step cap) -> evaluate (real episodes) -> report.
`--profile {smoke,laptop,paper}` (or the profile as the first argument) picks the sizes, laptop
by default (laptop adds patrols to the data and the iterative loop of PAPER.md §1.8: rounds of
C's own real episodes, M fine-tuned, C retrained in the dream, a C that checks below the data
policy trained once more; `--collect.policy doom_random
--train-in dream` is the paper's recipe at laptop sizes); every field can be overridden (e.g.
`--es.dream-generations 80`); `--profile NAME
--help` shows that profile's defaults. Rerunning skips finished stages and resumes an interrupted
one; `--reopen OLD --run-dir NEW --iterate.rounds R` starts NEW from an iterative run's rounds.
Errors are one line (exit code 2 for a bad flag or run folder, 1 otherwise); `--debug`
shows the traceback. Needs ViZDoom: `pip install -e '.[doom]'`. The τ table on the same V and M:
`python -m dreamjax.experiments.doom_tau`.
"""

from __future__ import annotations

import sys

from dreamjax.config import DEFAULT_PROFILE, DOOM_PROFILES, ExperimentConfig
from dreamjax.experiments import cli

PROG = "python -m dreamjax.experiments.doom"


def run(cfg: ExperimentConfig) -> int:
    """Check the config and the run folder, print the banner, run the requested stages."""
    return cli.run_game(cfg, "dreamjax.pipeline.doom:DOOM")


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        sys.argv[1:] if argv is None else argv, run,
        profiles=DOOM_PROFILES, default=DEFAULT_PROFILE, prog=PROG, description=__doc__ or "",
    )


if __name__ == "__main__":
    sys.exit(main())
