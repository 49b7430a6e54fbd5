"""Reopen a finished iterative Doom run (a hard-linked copy) with `--iterate.temperatures`.

usage: python recalibrate.py OLD_RUN NEW_RUN SEED TAU [TAU ...] [--vae-epochs N]
(`--vae-epochs`: the V epochs of OLD_RUN's config when they are not the laptop profile's of
today; session 16's runs, made with the 2-epoch V of their day, need `--vae-epochs 2`.)
Hard-links OLD_RUN into NEW_RUN, rewrites stages.json so that the controller, evaluate and
report stages carry the fingerprints of the laptop config with `iterate.temperatures = TAUs`
and are not done, drops every round after round 0, and picks round 0's τ
(`choose_temperature`, written to round_00/temperature.json): round 0's dream and checks are
kept only if that τ is the laptop's own (their CMA-ES key does not depend on the grid), so the
CLI then recomputes exactly what a fresh run with the grid would.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax

from dreamjax.config import DOOM_PROFILES
from dreamjax.pipeline import artifacts
from dreamjax.pipeline.carracing import stage_key
from dreamjax.pipeline.doom import DOOM
from dreamjax.pipeline.iterate import _series_dirs, choose_temperature, round_dir
from dreamjax.pipeline.run import RunFolder, fingerprints


def main() -> None:
    old, new, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[4:]
    base = DOOM_PROFILES["laptop"]()
    if "--vae-epochs" in args:
        i = args.index("--vae-epochs")
        vae = dataclasses.replace(base.vae, epochs=float(args[i + 1]))
        base = dataclasses.replace(base, vae=vae)
        args = args[:i] + args[i + 2:]
    taus = tuple(float(t) for t in args)
    subprocess.run(["cp", "-al", old, new], check=True)
    cfg = dataclasses.replace(base, run_dir=new, seed=seed,
                              iterate=dataclasses.replace(base.iterate, temperatures=taus))
    fps = fingerprints(cfg)
    path = Path(new) / "stages.json"
    stages = json.loads(path.read_text())
    for s in ("collect", "vae", "encode", "mdnrnn"):
        assert stages[s]["fingerprint"] == fps[s], s
    for s in ("controller", "evaluate", "report"):
        stages[s] = {**stages.get(s, {}), "fingerprint": fps[s], "done": False}
    path.unlink()
    path.write_text(json.dumps(stages, indent=1))
    run = RunFolder(new)
    it = run.path("controller") / "iterative"
    (it / "DONE.json").unlink(missing_ok=True)
    for d in sorted(it.glob("round_*"))[1:]:
        shutil.rmtree(d)
    r0 = round_dir(run, 0)
    (r0 / "round.json").unlink()
    wm = artifacts.load_world_model(run, cfg.controller, run.path("mdnrnn"))
    key = jax.random.fold_in(jax.random.fold_in(stage_key(cfg, "controller"), 0), 3)
    tau = choose_temperature(cfg, run, DOOM, wm, _series_dirs(run, 0), None, key,
                             r0 / "temperature.json")["tau"]
    print(f"round 0: tau {tau}", flush=True)
    if tau != base.dream.temperature:
        for sub in ("dream", "check", "check_series"):
            shutil.rmtree(r0 / sub)


if __name__ == "__main__":
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    main()
