"""The run report: `report.md` and `results.json` at the run folder's root, pictures in `report/`.

Collects the config, the real-environment score, per-stage wall times and the pictures each stage
left behind (reconstruction grid, V/M loss curves, CMA-ES fitness curve, dream-vs-real video,
histogram of returns).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dreamjax import io
from dreamjax.config import STAGES, ExperimentConfig, to_dict
from dreamjax.pipeline import viz

PAPER_SCORE = "906 ± 21"
"""Full World Model (z and h) on 100 random tracks, PAPER.md §1.7."""
PAPER_METHOD = "full World Model, z and h (PAPER.md §1.7)"
"""What `PAPER_SCORE` scores (CarRacing's); another game passes its own to `write_report`."""


def _curves(run_root: Path, out: Path) -> dict[str, str]:
    """V and M loss curves from the stages' metrics logs; returns name -> relative path."""
    pics = {}
    vae = io.read_jsonl(run_root / "vae" / "metrics.jsonl")
    if vae:
        keys = [k for k in ("loss", "r_loss", "kl") if k in vae[-1]]
        viz.plot_curves(vae, keys, out / "vae_loss.png", "V (ConvVAE) training")
        pics["V loss"] = "report/vae_loss.png"
    mdn = io.read_jsonl(run_root / "mdnrnn" / "metrics.jsonl")
    if mdn:
        keys = [k for k in ("loss", "z_nll", "reward_loss", "done_loss") if k in mdn[-1]]
        viz.plot_curves(mdn, keys, out / "mdnrnn_loss.png", "M (MDN-RNN) training")
        pics["M loss"] = "report/mdnrnn_loss.png"
    return pics


def _iterative_rounds(run_root: Path) -> list[dict]:
    """The iterative loop's per-round rows (`controller/iterative/DONE.json`), if any."""
    path = run_root / "controller" / "iterative" / "DONE.json"
    return io.read_json(path)["rounds"] if path.is_file() else []


def write_report(cfg: ExperimentConfig, run_root: str | Path, extra_pictures: dict, *,
                 game: str = "CarRacing-v3", paper_score: str = PAPER_SCORE,
                 paper_method: str = PAPER_METHOD, calibration: dict | None = None) -> dict:
    """Write `report.md`, `results.json` and `report/*.png`; returns the results dict.

    extra_pictures: caption -> path relative to the run folder, made by the stages (e.g. the
    reconstruction grid, the fitness curve, the dream-vs-real video). game: the real env's name
    (titles); paper_score, paper_method: the paper's row of the score table; calibration: the
    game's dream-vs-real check of episode ends (`GameSpec.calibrate`), if it has one.
    """
    run_root = Path(run_root)
    out = run_root / "report"
    out.mkdir(parents=True, exist_ok=True)
    stages = io.read_json(run_root / "stages.json")
    ev_path = run_root / "evaluate" / "results.json"
    ev = io.read_json(ev_path) if ev_path.exists() else None
    pics = {**extra_pictures, **_curves(run_root, out)}
    if ev is not None:
        viz.plot_histogram(
            ev["returns"],
            out / "returns_hist.png",
            f"{ev['episodes']} real {game} episodes (fixed seeds)",
        )
        pics["Returns of the evaluation episodes"] = "report/returns_hist.png"
        for name, v in ev.get("videos", {}).items():
            src = run_root / "evaluate" / v["file"]
            if src.exists():
                shutil.copy(src, out / v["file"])
                pics[f"{name} real episode (seed {v['seed']}, return {v['return']:.0f})"] = (
                    f"report/{v['file']}"
                )
    rounds = _iterative_rounds(run_root)
    if rounds:
        viz.plot_gap(rounds, out / "dream_vs_real_gap.png",
                     f"Iterative rounds: the same C in the dream and in the real {game}")
        pics["Dream vs real return per iterative round"] = "report/dream_vs_real_gap.png"
    wall = {s: stages.get(s, {}).get("wall_s") for s in STAGES}
    results = {
        "game": game,
        "profile": cfg.profile,
        "controller": cfg.controller.kind,
        "train_in": cfg.train_in,
        "score": None if ev is None else {"mean": ev["mean"], "std": ev["std"]},
        "episodes": None if ev is None else ev["episodes"],
        "paper_score": paper_score,
        "paper_method": paper_method,
        "stage_wall_s": wall,
        "total_wall_s": round(sum(v for v in wall.values() if v), 1),
        "stage_summaries": {s: stages.get(s, {}).get("summary") for s in STAGES},
        "evaluation": ev,
        "dream_vs_real": rounds,
        "calibration": calibration,
        "config": to_dict(cfg),
        "pictures": pics,
    }
    io.write_json(run_root / "results.json", results)
    io.write_bytes(run_root / "report.md", render_markdown(results))
    return results


def _num(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def render_markdown(r: dict) -> str:
    """The human-readable report."""
    score = r["score"]
    lines = [
        f"# dreamjax {r['game']} report ({r['profile']} profile)",
        "",
        "| | score over real episodes |",
        "|---|---|",
        f"| paper: {r['paper_method']} | {r['paper_score']} (100 episodes) |",
    ]
    if score is not None:
        lines.append(
            f"| this run: controller `{r['controller']}`, trained in `{r['train_in']}` | "
            f"**{score['mean']:.1f} ± {score['std']:.1f}** ({r['episodes']} episodes) |"
        )
    if r.get("dream_vs_real"):
        select = any("select_return" in row for row in r["dream_vs_real"])
        lines += ["", "## Dream vs real, per iterative round", "",
                  "| round | episodes so far | τ | dream return | real return (training seeds) | "
                  + ("selection episodes (training seeds) | " if select else "")
                  + "M's predicted return of those | open-loop z drift at 10 / 100 steps |",
                  "|---|---|---|---|---|" + ("---|" if select else "") + "---|---|"]
        for row in r["dream_vs_real"]:
            fid = row.get("fidelity", {})
            drift = fid.get("open_loop_drift", {})
            d10, d100 = (drift.get(k) for k in ("10", "100"))
            sel = ""
            if select:
                sel = (f"{row['select_return']:.1f} ± {row['select_std']:.1f} "
                       f"({row['select_episodes']}) | " if "select_return" in row else "– | ")
            lines.append(
                f"| {row['round']} | {row['episodes_so_far']} | {_num(row.get('tau'), 2)} | "
                f"{row['dream_return']:.1f} | "
                f"{row['real_return']:.1f} ± {row['real_std']:.1f} | {sel}"
                f"{_num(fid.get('predicted_return'))} | {_num(d10, 2)} / {_num(d100, 2)} |")
        for row in r["dream_vs_real"]:
            for att in row.get("rejected", []):
                lines.append(
                    f"\nRound {row['round']}'s attempt {att['attempt']} was set aside and C "
                    f"trained again with a new key (`--iterate.retries`): dream "
                    f"{att['dream_return']:.1f}, real {att['real_return']:.1f} ± "
                    f"{att['real_std']:.1f} on its checks, below {att['below']:.1f}.")
    cal = r.get("calibration")
    if cal:
        lines += ["", "## Does the dream end episodes as often as the game?", "",
                  f"The data policy (PAPER.md §2.2) lives {cal['dream_mean']:.0f} ± "
                  f"{cal['dream_std']:.0f} steps in the dream at τ = {cal['tau']:.2f} "
                  f"({cal['dream_episodes']} dreams) and {cal['real_mean']:.0f} ± "
                  f"{cal['real_std']:.0f} in the real game (its {cal['real_episodes']} collected "
                  f"episodes), counting episodes of more than {cal['min_frames']} steps as "
                  "collection does: a longer dream life is a dream easier than the game."]
        for part in cal.get("parts", [])[1:]:
            lines += ["", f"The `{part['policy']}` part of the data ({part['summary']}) lives "
                      f"{part['dream_mean']:.0f} ± {part['dream_std']:.0f} steps "
                      f"in the dream and {part['real_mean']:.0f} ± {part['real_std']:.0f} in "
                      f"the game ({part['real_episodes']} of its episodes)."]
        held, patrol = cal.get("held", []), cal.get("patrol", [])
        if held:
            lines += ["", "Open-loop probes: one action held for the whole episode (in the game a "
                      "held LEFT or RIGHT reaches a wall in about 64 steps and is hit there; "
                      "nothing held stands in the middle and is hit there), and patrols of "
                      "period P (RIGHT for P/2 steps, then LEFT and RIGHT for P steps each in "
                      "turn, sweeping the room):", "",
                      "| probe | life in the dream | life in the game | dream / game |",
                      "|---|---|---|---|"]
            names = [row["button"] for row in held] + [f"patrol {row['period']}"
                                                       for row in patrol]
            for name, row in zip(names, held + patrol, strict=True):
                ratio = row["dream_mean"] / max(row["real_mean"], 1.0)
                lines.append(f"| {name} | {row['dream_mean']:.0f} ± "
                             f"{row['dream_std']:.0f} ({row['dream_episodes']} dreams) | "
                             f"{row['real_mean']:.0f} ± {row['real_std']:.0f} "
                             f"({row['real_episodes']} episodes) | {ratio:.1f} |")
            ratio, worst = max(((row["dream_mean"] / max(row["real_mean"], 1.0), row)
                                for row in held), key=lambda p: p[0])
            if worst["dream_mean"] > 2 * worst["real_mean"]:
                lines += ["", f"The dream lets a held {worst['button']} live {ratio:.1f}× as "
                          "long as the game does: a controller that holds it is overrated here."]
            best = max(patrol, key=lambda row: row["real_mean"], default=None)
            if best and worst["dream_mean"] > best["dream_mean"] and (
                    best["real_mean"] > worst["real_mean"]):
                lines += ["", f"The dream ranks a held {worst['button']} above the patrol "
                          f"{best['period']} ({worst['dream_mean']:.0f} against "
                          f"{best['dream_mean']:.0f} steps) where the game ranks the patrol "
                          f"first ({best['real_mean']:.0f} against {worst['real_mean']:.0f}): "
                          "C learns to hold the button."]
        ant = cal.get("anticipation", {})
        if ant.get("episodes"):
            lines += ["", f"Does M see death coming? Read teacher-forced on {ant['episodes']} "
                      "real episodes of the data policy that end in death, its done logit "
                      "scores an AUC of "
                      f"{ant['auc_last']:.2f} for \"the episode ends on this step\" and "
                      f"{ant['auc_within']:.2f} for \"it ends within {ant['within']} steps\"; "
                      f"the step index alone (a clock) scores {ant['auc_last_clock']:.2f} and "
                      f"{ant['auc_within_clock']:.2f}. An M near the clock on the second sees "
                      "the hit that kills but not its coming, and its dream kills at a rate "
                      "that dodging cannot lower."]
    lines += ["", "## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    for s, w in r["stage_wall_s"].items():
        lines.append(f"| {s} | {'' if w is None else f'{w:.0f}'} |")
    lines.append(f"| **total** | **{r['total_wall_s']:.0f}** |")
    lines += ["", "## Pictures", ""]
    for caption, path in r["pictures"].items():
        if path.endswith(".png"):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
        else:
            lines += [f"- [{caption}]({path})", ""]
    ev = r["evaluation"]
    if ev is not None:
        lines += [
            "",
            "## Provenance",
            "",
            f"- versions: {json.dumps(ev.get('versions', {}))}",
            f"- machine: {json.dumps(ev.get('machine', {}))}",
            f"- evaluation seeds: {ev['seeds'][0]}..{ev['seeds'][-1]}",
        ]
    lines += ["", "## Config", "", "```json", json.dumps(r["config"], indent=2), "```", ""]
    return "\n".join(lines)
