"""``orch submit --dry-run`` on Slurm: each array's sbatch script, and what ``sbatch --test-only`` answers for
it. The backend is built as a submission would build it (the same refusals); nothing is created or queued."""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.backends.slurm import DEFAULT_MAX_ARRAY_SIZE, UNREACHABLE, SchedulerError, SlurmBackend

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec


def array_previews(backend: SlurmBackend, n_runs: int) -> list[tuple[str, str]]:
    """``--dry-run``: for each array the submission would queue, its sbatch script and what
    ``sbatch --test-only`` answers for it. Nothing is created or queued."""
    jobs = math.ceil(n_runs / (backend.resources.runs_per_job if backend.resources is not None else 1))
    try:
        size = backend.max_array_size()
    except SchedulerError:  # no Slurm commands here (a laptop): the scripts are still worth seeing
        size = DEFAULT_MAX_ARRAY_SIZE
    out = []
    for start in range(0, jobs, size):
        text = backend.job_script(min(size, jobs - start))
        with tempfile.TemporaryDirectory(prefix="orch-sbatch-") as tmp:
            script = Path(tmp) / "preview.sh"
            script.write_text(text.replace("<job folder>/.slurm/<token>", tmp).replace("<token>", "preview"))
            try:
                proc = backend._run(["sbatch", "--test-only", str(script)], check=False)
            except SchedulerError as err:
                out.append((text, f"no answer ({err})"))
                continue
        answer = (proc.stderr or proc.stdout).strip().replace("sbatch: ", "")
        verdict = "no answer (no controller reachable here)" if UNREACHABLE in answer else "refused"
        out.append((text, answer if proc.returncode == 0 else f"{verdict}: {answer}"))
    return out


def _controller_answers() -> bool:
    """Whether a Slurm controller answers here (a dry-run on a laptop still shows the job scripts)."""
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def preview_text(spec: Spec, n_runs: int, cluster: str | None = None) -> str:
    """``orch submit --dry-run`` on Slurm: each array's sbatch script and ``sbatch --test-only``'s answer.
    Builds the backend as a submission would (the same refusals), creates and queues nothing."""
    backend = SlurmBackend.from_spec(spec, cluster=cluster, check=_controller_answers())
    if n_runs == 0:
        return "nothing to queue"
    parts = []
    try:
        arrays = array_previews(backend, n_runs)
    except SchedulerError as err:  # no Slurm here at all: nothing to preview the scripts with
        return f"no job script: {err}"
    per_job, layout = spec.resources.runs_per_job, spec.resources
    for i, (script, answer) in enumerate(arrays, 1):
        head = f"# array {i} of {len(arrays)}" + (f" ({per_job} runs per job)" if per_job > 1 else "")
        if layout.world_size > 1:
            head += (
                f" (each run: {layout.nodes} node(s) x {layout.layout} task(s) = {layout.world_size} ranks, "
                "one torch.distributed group)"
            )
        parts.append(f"{head}\n{script.rstrip()}\n# sbatch --test-only: {answer}")
    return "\n\n".join(parts)
