#!/usr/bin/env bash
# orch as a user installs it, not as a checkout: build the wheel, install it in a fresh venv, and from a
# directory outside the checkout list the workloads, submit a smoke experiment and preview a Slurm job with
# a cluster profile shipped as package data. The venv reuses .venv's installed stack (torch, MLflow, ...) through
# a .pth file; orch itself comes from the wheel only (asserted).
set -euo pipefail
export COLUMNS=200  # rich wraps piped output at 80 columns: the greps below read whole lines
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d /tmp/orch-wheel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# the venv's setuptools when it can build (>= 68), else pip's isolated build (fetches setuptools from PyPI)
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . >/dev/null 2>&1 \
  || .venv/bin/pip wheel -q --no-deps -w "$WORK/dist" . >/dev/null
python3 -m venv "$WORK/venv"
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/orch-stack.pth"
"$WORK/venv/bin/pip" install -q --no-deps "$WORK"/dist/orch-*.whl
mkdir "$WORK/elsewhere" && cd "$WORK/elsewhere"
where=$("$WORK/venv/bin/python" -c 'import orchestrator, workloads; print(orchestrator.__file__, workloads.__file__)')
case "$where" in *"$REPO"*) echo "wheel smoke: orch was imported from the checkout: $where" >&2; exit 1;; esac
"$WORK/venv/bin/orch" --version
"$WORK/venv/bin/orch" workloads > workloads.txt  # (no `| grep -q`: its early exit is a SIGPIPE under pipefail)
grep -q "smoke" workloads.txt
cat > smoke.yaml <<'SPEC'
name: wheel_smoke
workload: smoke
params: {steps: 3}
seeds: 2
SPEC
"$WORK/venv/bin/orch" submit smoke.yaml | tee submit.log
grep -q "2 to run" submit.log
"$WORK/venv/bin/orch" status wheel_smoke --json | "$WORK/venv/bin/python" -c \
  'import json, sys; g = json.load(sys.stdin)["groups"]; assert g[0]["finished"] == 2, g'
"$WORK/venv/bin/orch" submit smoke.yaml --seeds 4 --backend slurm --cluster plafrim --dry-run > dry-run.txt  # 2 new
grep -q "#SBATCH\|no job script" dry-run.txt  # the job script, or (no Slurm on this host) why there is none
echo "wheel smoke: passed (installed from $(ls "$WORK"/dist))"
