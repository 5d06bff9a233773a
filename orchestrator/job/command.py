"""A command as a workload: ``command: [python, train.py, --lr, "{lr}", --seed, "{seed}"]``.

The worker runs the executable (no shell: arguments are substituted one by one, ``spec/placeholders.py``)
in the run's code snapshot, with its output going to the run's logs, and tells it through the environment:

- ``ORCH_METRICS``: a file to append JSON lines to: ``{"step": 3, "loss": 0.2}`` per step and, once,
  ``{"final": {"loss": 0.1}}`` (without it, the final metrics are each metric's last logged value);
  ``orch.log(step, **metrics)`` / ``orch.final(**metrics)`` write them from Python;
- ``ORCH_CHECKPOINT_DIR``: a directory kept across attempts (requeue, resume); ``ORCH_RESUME`` is ``1``
  when an earlier attempt left something in it;
- ``ORCH_SEED``, ``ORCH_RUN_DIR``, ``ORCH_ARTIFACT_DIR`` (files there become MLflow artifacts) and
  ``ORCH_SUBMIT_DIR`` (the directory the submission was made from, for data the snapshot leaves out).

``python`` (or ``python3``) as the executable means the interpreter orch itself runs on.

A multi-task run (``resources.nodes`` x ``tasks_per_node``) runs the command once per rank, each with
torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) and ``ORCH_DIST_BACKEND`` (nccl on CUDA, gloo on CPU), so a DDP script that calls
``init_process_group(backend, init_method="env://")`` runs unchanged; only rank 0's ``$ORCH_METRICS`` lines
are recorded (the others' go to ``metrics.rank<r>.jsonl``, read by nobody).

The lines are read while the command runs and journaled like a Python workload's ``ctx.log``, so
ingestion, live progress and compare treat both the same. A non-zero exit fails the run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.spec.placeholders import PYTHONS, substitute
from orchestrator.spec.spec import flatten

POLL_S = 0.2
STOP_GRACE_S = 10.0
SIGNAL_RACE_S = 2.0  # after SIGTERM, how long the command has to checkpoint before SIGKILL


class CommandFailed(RuntimeError):
    pass


class MetricsReader:
    """Reads the complete lines appended to the metrics file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.final: dict[str, float] | None = None
        self.last: dict[str, float] = {}

    def read(self, ctx: Any, at_exit: bool = False) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        tail = lines.pop()  # an incomplete last line waits for its end (or is read once the command exited)
        self.offset += len(data) - len(tail)
        if at_exit and tail.strip():
            lines.append(tail)
            self.offset += len(tail)
        for line in lines:
            if line.strip():
                self._record(line, ctx)

    def _record(self, line: bytes, ctx: Any) -> None:
        try:
            item = json.loads(line)
        except ValueError:
            raise CommandFailed(f"{self.path.name}: not a JSON line: {line[:200]!r}") from None
        if not isinstance(item, dict):
            raise CommandFailed(f"{self.path.name}: expected a JSON object per line, got {line[:200]!r}")
        if "final" in item:
            self.final = _numbers(item["final"], self.path.name)
            return
        if "step" not in item or isinstance(item["step"], bool) or not isinstance(item["step"], int):
            raise CommandFailed(f"{self.path.name}: a metrics line needs an integer 'step', got {line[:200]!r}")
        step = item.pop("step")
        metrics = _numbers(item, self.path.name)
        self.last.update(metrics)
        ctx.log(step, **metrics)


def _numbers(values: Any, where: str) -> dict[str, float]:
    if not isinstance(values, dict):
        raise CommandFailed(f"{where}: expected a mapping of metric names to numbers, got {values!r}")
    out = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandFailed(f"{where}: metric '{name}' is not a number: {value!r}")
        out[str(name)] = float(value)
    return out


def environment(ctx: Any, code: dict[str, Any] | None, submit_dir: str, metrics: Path) -> dict[str, str]:
    env = dict(os.environ)
    checkpoints = ctx.run_dir.checkpoints
    resuming = checkpoints.is_dir() and any(checkpoints.iterdir())
    checkpoints.mkdir(parents=True, exist_ok=True)
    env.update(
        ORCH_METRICS=str(metrics),
        ORCH_CHECKPOINT_DIR=str(checkpoints),
        ORCH_RESUME="1" if resuming else "0",
        ORCH_SEED=str(ctx.seed),
        ORCH_RUN_DIR=str(ctx.run_dir.path),
        ORCH_ARTIFACT_DIR=str(ctx.artifact_dir),
        ORCH_SUBMIT_DIR=submit_dir,
    )
    if getattr(ctx, "world_size", 1) > 1:  # the torchrun variables are inherited from this rank's worker
        from orchestrator.job.dist import BACKEND_ENV, backend_for

        env[BACKEND_ENV] = backend_for(ctx.device)
    if code:  # the command's own Python modules come from the snapshot too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code["workdir"], env.get("PYTHONPATH", "")]))
    return env


def run_command(
    argv_template: list[str] | tuple[str, ...],
    params: BaseModel,
    ctx: Any,
    code: dict[str, Any] | None = None,
    submit_dir: str = "",
) -> dict[str, float]:
    argv = substitute(list(argv_template), flatten(params.model_dump(mode="json")), ctx.seed)
    if argv[0] in PYTHONS:  # the interpreter orch runs on (its venv, where `import orch` works), not PATH's first
        argv[0] = sys.executable
    rank = getattr(ctx, "rank", 0)
    metrics = ctx.run_dir.path / ("metrics.jsonl" if rank == 0 else f"metrics.rank{rank}.jsonl")
    metrics.unlink(missing_ok=True)  # an earlier attempt's lines are journaled already; this one starts afresh
    env = environment(ctx, code, submit_dir, metrics)
    cwd = code["workdir"] if code else (submit_dir or None)
    reader = MetricsReader(metrics)
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env)
    except OSError as err:
        raise CommandFailed(f"cannot start {argv[0]!r}: {err.strerror or err}") from None
    try:
        while proc.poll() is None:
            reader.read(ctx)
            time.sleep(POLL_S)
    except BaseException:
        if proc.poll() is None:  # the run was interrupted (cancel, Ctrl-C, a requeue): stop the command too
            _stop(proc)
        # and journal the lines it wrote since the last read: its own checkpoint may count those steps done, so
        # a resumed attempt would never log them again
        with contextlib.suppress(Exception):
            reader.read(ctx, at_exit=True)
        raise
    reader.read(ctx, at_exit=True)
    if proc.returncode < 0:
        # A scheduler signals every process of the job at once (Slurm's SIGUSR2 before the time limit, SIGTERM
        # on preemption): the command may die of it just before this worker's own handler runs. Give that
        # handler a moment, so the run is journaled as the requeue or cancel it is, not as a failed command.
        time.sleep(SIGNAL_RACE_S)
    if proc.returncode != 0:
        how = (
            f"killed by signal {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        raise CommandFailed(f"command {argv[0]!r} {how} (its output: orch logs)")
    return dict(reader.final if reader.final is not None else reader.last)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
