"""Select the final C over every round of an iterative run folder (as run_iterative does)."""
import json
import sys

from dreamjax import io
from dreamjax.pipeline import iterate
from dreamjax.pipeline.run import RunFolder

if __name__ == "__main__":
    run = RunFolder(sys.argv[1])
    rows = []
    r = 0
    while (iterate.round_dir(run, r) / "round.json").is_file():
        rows.append(json.loads((iterate.round_dir(run, r) / "round.json").read_text()))
        r += 1
    best = max(rows, key=lambda row: row["real_return"])
    src = iterate.round_dir(run, best["round"]) / "dream" / "best.npz"
    io.write_bytes(iterate.iterative_dir(run) / "best.npz", src.read_bytes())
    io.write_json(iterate.iterative_dir(run) / "DONE.json",
                  {"rounds": rows, "selected_round": best["round"], "mdnrnn": best["mdnrnn"],
                   "selected_by": "real return on the check episodes (training seeds)"})
    for row in rows:
        print(row["round"], row["episodes_so_far"], round(row["dream_return"], 1),
              round(row["real_return"], 1), round(row["real_std"], 1))
    print("selected", best["round"], best["mdnrnn"])
