"""Copy the study's reports, figures and summaries from runs/study/ to docs/results/.

    python scripts/publish_results.py [RUNS_DIR] [DOCS_DIR]

Each comparison folder's report.md, figures/ and summary.json (with its wall and CPU time) go
to docs/results/<name>/; docs/results/costs.md tabulates the CPU time of every comparison.
"""

import json
import shutil
import sys
from pathlib import Path


def main() -> int:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
    docs = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/results")
    rows = []
    for summary_path in sorted(runs.glob("*/summary.json")):
        folder = summary_path.parent
        target = docs / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "compare.json", "report.md"):
            if (folder / name).exists():
                shutil.copy2(folder / name, target / name)
        if (folder / "figures").is_dir():
            shutil.copytree(folder / "figures", target / "figures", dirs_exist_ok=True)
        s = json.loads(summary_path.read_text())
        runs_done = sum(len(v.get("test_acc", [])) for v in s["variants"].values())
        rows.append((folder.name, runs_done, len(s.get("missing", [])), s["runs_cpu_time"], s["wall_time"]))
    lines = [
        "# CPU time of each comparison",
        "",
        "Measured by `weight-compander compare` on 2 CPU cores (`--jobs 2`); `runs_cpu_time` is the",
        "sum of the runs' own CPU time, wall time adds over all invocations.",
        "",
        "| comparison | runs finished | runs missing | CPU time (h) | wall time (h) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {d} | {m} | {c / 3600:.2f} | {w / 3600:.2f} |" for n, d, m, c, w in rows]
    (docs / "costs.md").write_text("\n".join(lines) + "\n")
    print(f"published {len(rows)} comparisons to {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
