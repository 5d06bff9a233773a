#!/usr/bin/env bash
# Installs orch and its whole stack into ./.venv (idempotent). torch is pinned to the CPU build
# (torch==2.13.0); on a GPU node, install the CUDA build of the same version first.
# One line per step, with its time: the first install takes minutes and pip is quiet (-q) meanwhile.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
step() { printf 'install.sh: %s ... ' "$1"; START=$SECONDS; }
done_() { echo "done ($((SECONDS - START)) s)"; }
step "virtual environment .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
done_
step "torch==2.13.0 (CPU build; ~1-3 min the first time)"
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
done_
step "orch and its stack: MLflow, Ray, submitit, reservoirpy, DEAP, transformers, ... (~2-5 min the first time)"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
done_
step "checking the environment"
.venv/bin/python -c "import orchestrator, torch, mlflow, ray, submitit, reservoirpy, deap, transformers" \
  || { echo "install.sh: the environment is incomplete (see pip's output above)" >&2; exit 1; }
done_
