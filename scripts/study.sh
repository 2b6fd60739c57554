#!/usr/bin/env bash
# The whole benchmark study (issue 4), in order. Safe to re-run or to start again after an
# interruption: `compare` skips finished runs and resumes interrupted ones.
#   bash scripts/study.sh            # all stages, then publish to docs/results/
#   JOBS=1 bash scripts/study.sh     # one run at a time
# Stage 1 tunes each baseline's weight decay on validation; stage 2 chooses wc-fixed on the
# F-small validation split; stage 3 runs the five benchmarks with seeds 0-4. The choices of
# stages 1-2 are written into the stage-3 configs (see docs/results/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WC=${WC:-.venv/bin/weight-compander}
JOBS=${JOBS:-2}
STAGES=${STAGES:-"tune-base-digits tune-base-m1d tune-base-fsmall grid-fsmall f-small m1d digits f-full f-resnet"}
for name in $STAGES; do
    "$WC" compare "configs/study/$name.toml" --out "runs/study/$name" --jobs "$JOBS" --no-progress
done
"${PYTHON:-.venv/bin/python}" scripts/publish_results.py
