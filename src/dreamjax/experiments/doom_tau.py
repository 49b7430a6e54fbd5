"""The Doom τ table (PAPER.md §2.7): `python -m dreamjax.experiments.doom_tau`.

On the run folder's V and M (the collect, vae, encode and mdnrnn stages of
`python -m dreamjax.experiments.doom`, run or resumed first with the same flags), C is trained
by CMA-ES in the dream and evaluated in the real game at each τ in {0.10, 0.50, 1.00, 1.15,
1.30} and at the run's own `--dream.temperature`, each in `<run>/tau/<τ>/` (a τ the main
command already finished with the same config is reused); the random data policy is scored on
the same evaluation seeds. Writes `<run>/tau_table.json` (one row per τ: tau, dream_mean,
dream_std, real_mean, real_std, episodes) and `<run>/tau_table.md` beside the paper's numbers.
Same profiles and flags as the Doom command; resumable.
"""

from __future__ import annotations

import dataclasses
import sys

from dreamjax.config import DEFAULT_PROFILE, DOOM_PROFILES, ExperimentConfig
from dreamjax.experiments import cli
from dreamjax.pipeline.run import preflight, run_stages

PROG = "python -m dreamjax.experiments.doom_tau"
MODEL_STAGES = ("collect", "vae", "encode", "mdnrnn")
"""The stages the τ table reads from (run or skipped first)."""


def run(cfg: ExperimentConfig) -> int:
    """V and M first (skipped when finished), then the table; imports as in `doom.run`."""
    models = dataclasses.replace(cfg, stages=MODEL_STAGES)
    todo = preflight(models)
    from dreamjax.pipeline.carracing import describe, estimate_seconds
    from dreamjax.pipeline.doom import DOOM, doom_runners, doom_verifiers, table_taus, tau_table

    est, taus = estimate_seconds(cfg, DOOM), table_taus(cfg)
    per_tau = est["controller"] + est["evaluate"]
    print(describe(models, DOOM, pending=todo.run), flush=True)
    print(f"[dreamjax] then the tau table: about {per_tau / 60:.0f} min per tau, "
          f"{(len(taus) * per_tau + est['evaluate']) / 60:.0f} min for {len(taus)} and the random "
          "policy (less for a tau the run already finished)", flush=True)
    run_stages(models, doom_runners(), verifiers=doom_verifiers())
    tau_table(cfg)
    print(f"[dreamjax] tau table: {cfg.run_dir}/tau_table.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        sys.argv[1:] if argv is None else argv, run,
        profiles=DOOM_PROFILES, default=DEFAULT_PROFILE, prog=PROG, description=__doc__ or "",
    )


if __name__ == "__main__":
    sys.exit(main())
