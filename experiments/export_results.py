"""Copy a finished run's small results into a committed folder, with provenance.

    python experiments/export_results.py runs/carracing experiments/results/carracing-laptop \
        --command "python -m dreamjax.experiments.carracing"

Copies `results.json`, `report.md` and `report/*.png` (no videos, no checkpoints) and writes
`PROVENANCE.md`: the command, the git commit, package versions, the machine, per-stage wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--command", required=True, help="the command that produced the run")
    args = ap.parse_args()
    results_path = args.run_dir / "results.json"
    if not results_path.is_file():
        raise SystemExit(f"error: {results_path}: missing; run the report stage first")
    results = json.loads(results_path.read_text())
    (args.dest / "report").mkdir(parents=True, exist_ok=True)
    shutil.copy(results_path, args.dest / "results.json")
    shutil.copy(args.run_dir / "report.md", args.dest / "report.md")
    for png in sorted((args.run_dir / "report").glob("*.png")):
        shutil.copy(png, args.dest / "report" / png.name)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    ev = results.get("evaluation") or {}
    lines = [
        f"# Provenance of {args.dest.name}",
        "",
        f"- command: `{args.command}` (run folder `{args.run_dir}`)",
        f"- dreamjax commit: `{commit}` (the code the run was exported with; see the note below)",
        f"- profile: `{results['profile']}`, seed {results['config']['seed']}",
        f"- score: {results['score']['mean']:.1f} ± {results['score']['std']:.1f} over "
        f"{results['episodes']} real episodes, seeds {ev['seeds'][0]}..{ev['seeds'][-1]}",
        f"- total wall time: {results['total_wall_s'] / 60:.1f} min; per stage (s): "
        f"{json.dumps(results['stage_wall_s'])}",
        f"- versions: {json.dumps(ev.get('versions', {}))}",
        f"- python {ev.get('python')}; machine: {json.dumps(ev.get('machine', {}))}",
        "",
        "Videos (`*.mp4`) and checkpoints are not committed; rerun the command to regenerate.",
        "",
    ]
    (args.dest / "PROVENANCE.md").write_text("\n".join(lines))
    print(f"exported {args.run_dir} -> {args.dest}")


if __name__ == "__main__":
    main()
