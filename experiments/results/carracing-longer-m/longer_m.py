"""Reopen a finished laptop CarRacing run (a hard-linked copy) with a longer M: M's stage is
marked not done under the new config's fingerprint and resumes from OLD's last checkpoint
(step 3000; Adam at a constant lr, batches and keys a function of the step, so this computes
what a fresh run with the longer M would); the controller stage and later are removed.

usage: python longer_m.py OLD NEW SEED MDNRNN_STEPS SELECT_EPISODES
"""
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from dreamjax.config import PROFILES
from dreamjax.pipeline.run import fingerprints

old, new, seed, steps, select = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                 int(sys.argv[5]))
base = PROFILES["laptop"]()
cfg = dataclasses.replace(base, run_dir=new, seed=seed,
                          mdnrnn=dataclasses.replace(base.mdnrnn, steps=steps),
                          iterate=dataclasses.replace(base.iterate, select_episodes=select))
subprocess.run(["cp", "-al", old, new], check=True)
n = Path(new)
for d in ("controller", "evaluate", "report", "tensorboard/controller"):
    shutil.rmtree(n / d, ignore_errors=True)
for f in ("report.md", "results.json", "mdnrnn/DONE.json"):
    (n / f).unlink(missing_ok=True)
shutil.rmtree(n / "mdnrnn/params", ignore_errors=True)
for d in ("mdnrnn/ckpt", "tensorboard/mdnrnn"):  # real copies: training writes into them
    if (n / d).exists():
        shutil.rmtree(n / d)
        shutil.copytree(Path(old) / d, n / d)
(n / "mdnrnn/metrics.jsonl").unlink()
shutil.copy(Path(old) / "mdnrnn/metrics.jsonl", n / "mdnrnn/metrics.jsonl")
fps = fingerprints(cfg)
path = n / "stages.json"
stages = json.loads(path.read_text())
for s in ("collect", "vae", "encode"):
    assert stages[s]["fingerprint"] == fps[s], s
stages["mdnrnn"] = {"fingerprint": fps["mdnrnn"], "done": False}
for s in ("controller", "evaluate", "report"):
    stages.pop(s, None)
path.unlink()
path.write_text(json.dumps(stages, indent=1))
