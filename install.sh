#!/usr/bin/env bash
# Installs orch and its whole stack into ./.venv (idempotent). torch is pinned to the CPU build
# (torch==2.13.0); on a GPU node, install the CUDA build of the same version first.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import orchestrator, torch, mlflow, ray, submitit, reservoirpy, deap, transformers" \
  || { echo "install.sh: the environment is incomplete (see pip's output above)" >&2; exit 1; }
