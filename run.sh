#!/usr/bin/env bash
# One entry point for set-up and the project's jobs.
#   bash run.sh demo    set up (first time only), then run the main job
#   bash run.sh test    set up (first time only), then ruff, the import contracts (lint-imports) and the default test suite
#   bash run.sh setup   set up only
# Set-up: a virtual environment in .venv, PyTorch 2.13.0 (CPU, from this machine's disk),
# the package with its harness, dev and integrations (transformers, lightning) extras, and Fashion-MNIST from Debian when we are root.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

pip_install() {
    # quiet, but keep real errors: drop only pip's notes about index folders this machine lacks
    "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is neither a file nor a directory" >&2)
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # torch first, pinned, so no resolver ever reaches for a multi-GB CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[dev,integrations]"
    if [ ! -d /usr/share/datasets/fashion-mnist ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
                || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
                || echo "note: could not install dataset-fashion-mnist; the demo falls back to scikit-learn digits"
        else
            echo "note: Fashion-MNIST needs 'sudo apt-get install dataset-fashion-mnist'; the demo falls back to scikit-learn digits"
        fi
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/weight-compander" demo "$@" ;;
    test) setup; "$VENV/bin/ruff" check .; "$VENV/bin/lint-imports"; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
esac
