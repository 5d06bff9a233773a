"""Several runs in one scheduler job (``resources.runs_per_job``): one process per run, all at once.

Why processes and not threads: each run keeps everything an unpacked run has (its own seeded RNGs, thread
pools sized to its ``cpus``, signal handlers, journal, checkpoint, stdout/stderr), so a packed seed produces
exactly the numbers of the same seed run alone. The job's process only starts the runs, hands each its
share of the job's GPUs (``CUDA_VISIBLE_DEVICES``) and passes signals on.

Requeue and resume work per run. A run whose journal already ended (it finished before the job was
requeued) is not started again by the next attempt; the others resume from their own checkpoints. On the
scheduler's "checkpoint now" signal (SIGUSR2; Slurm may send it to every process of the job, or only to the
job's process) each run decides as an unpacked run would: journal ``requeue`` and stop, or, past
``max_requeues``, end FAILED saying so."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.job.journal import KILLED, JournalWriter, ended_last, events, last_record
from orchestrator.job.rundir import RunDir
from orchestrator.vocabulary import Event

CHILD_WAIT_S = 60.0  # how long a signalled run may take to journal its requeue and stop


def gpu_slices(n_runs: int, share: float, visible: Sequence[str]) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each run: run i gets the GPUs covering [i*share, (i+1)*share) of the
    job's visible devices (share 0.25: four runs per GPU; share 2: two GPUs each). None: leave it alone."""
    if share <= 0:
        return [None] * n_runs
    out: list[str | None] = []
    for i in range(n_runs):
        first = math.floor(i * share + 1e-9)
        last = max(first, math.ceil((i + 1) * share - 1e-9) - 1)
        out.append(",".join(visible[j] for j in range(first, last + 1) if j < len(visible)) or None)
    return out


def visible_devices(job_gpus: int) -> list[str]:
    """The job's GPUs as CUDA names them: the scheduler's CUDA_VISIBLE_DEVICES, else 0..n-1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    found = [d for d in env.split(",") if d.strip()]
    return found or [str(i) for i in range(job_gpus)]


class Pack:
    """The runs of one job. ``run()`` starts every run not yet ended and waits for them all."""

    def __init__(
        self,
        paths: Sequence[str],
        gpu_share: float = 0.0,
        max_requeues: int = 0,
        probe: str | None = None,
        time_limit_s: int | None = None,
    ):
        self.run_dirs = [RunDir(Path(p)) for p in paths]
        self.gpu_share = gpu_share
        self.max_requeues = max_requeues
        self.probe = probe  # "module:function" a run calls on SIGTERM: is this a requeue? (backends/slurm.py)
        self.time_limit_s = time_limit_s  # None: the scheduler enforces the time limit (Slurm)
        self.procs: list[subprocess.Popen] = []
        self.owner: dict[int, RunDir] = {}  # pid -> its run directory
        self.stopped: set[int] = set()  # pids already told to stop by a cancel marker

    def command(self, run_dir: RunDir) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.job.pack",
            str(run_dir.path),
            "--max-requeues",
            str(self.max_requeues),
        ]
        cmd += ["--probe", self.probe] if self.probe else []
        return cmd + (["--time-limit-s", str(self.time_limit_s)] if self.time_limit_s else [])

    def start(self) -> None:
        job_gpus = math.ceil(len(self.run_dirs) * self.gpu_share - 1e-9) if self.gpu_share else 0
        slices = gpu_slices(len(self.run_dirs), self.gpu_share, visible_devices(job_gpus))
        for run_dir, gpus in zip(self.run_dirs, slices, strict=False):
            if ended_since_armed(run_dir) or run_dir.cancelled() is not None:
                continue  # ended in an earlier attempt of this submission (never run twice), or cancelled
            env = dict(os.environ)
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpus
            proc = subprocess.Popen(self.command(run_dir), env=env)
            self.procs.append(proc)
            self.owner[proc.pid] = run_dir

    def wait(self, timeout: float | None = None) -> bool:
        """True once every run's process ended (False: ``timeout`` passed first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs):
            if deadline is not None and time.monotonic() > deadline:
                return False
            self.stop_cancelled()
            time.sleep(0.1)
        return True

    def stop_cancelled(self) -> None:
        """``orch cancel`` of one run of a pack marks its run directory (cancelling the job would stop the
        others too): that run alone is sent SIGTERM and journals KILLED."""
        for proc in self.procs:
            if proc.pid not in self.stopped and proc.poll() is None and self.owner[proc.pid].cancelled() is not None:
                self.stopped.add(proc.pid)
                proc.send_signal(signal.SIGTERM)

    def run(self) -> list[str]:
        """Run the pack to its end; the runs' final statuses (from their journals)."""
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:  # Ray's cancel: stop every run (each journals KILLED), then say so
            self.signal(signal.SIGTERM)
            self.wait(CHILD_WAIT_S)
            raise
        return [self.status(r) for r in self.run_dirs]

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def checkpoint(self) -> None:
        """The scheduler's "checkpoint now": pass SIGUSR2 on to each run and wait until they all stopped (each
        journals ``requeue``, or ends FAILED past max_requeues)."""
        self.signal(signal.SIGUSR2)
        if not self.wait(CHILD_WAIT_S):
            self.signal(signal.SIGKILL)

    def close_requeued(self, error: str) -> None:
        """The scheduler refused the requeue the runs journaled: end each of them KILLED with its answer,
        instead of leaving them waiting for an attempt that never comes."""
        for run_dir in self.run_dirs:
            last = last_record(run_dir.journal)
            if last is not None and last["event"] == Event.REQUEUE:
                journal = JournalWriter(run_dir.journal)
                journal.write(Event.END, status=KILLED, final={}, error=error)
                journal.close()

    @staticmethod
    def status(run_dir: RunDir) -> str:
        last = last_record(run_dir.journal)
        if last is None:
            return "NOT_STARTED"
        return str(last.get("status")) if last["event"] == Event.END else str(last["event"]).upper()


def ended_since_armed(run_dir: RunDir) -> bool:
    """The run ended after a start of this submission (run.json's ``armed`` mark): a requeued pack must not
    run it again. An end left by an earlier submission (cancelled, killed, requeue refused) does not count:
    that submission asked for the run again, and its pack must resume it."""
    armed = run_dir.load().armed
    if armed is None:  # a run directory made before the mark existed
        return ended_last(run_dir.journal)
    started = False
    for record in events(run_dir.journal):
        if record["event"] == Event.START:
            started = record.get("armed") == armed
        elif record["event"] == Event.END and started:
            return True
    return False


class RequeueLimit(RuntimeError):
    """Past max_requeues: the run ends FAILED, as an unpacked run does when submitit declines to requeue."""


def child_main(argv: list[str]) -> int:
    """One packed run: ``python -m orchestrator.job.pack RUN_DIR --max-requeues N [--probe module:function]``."""
    early: list[int] = []
    # first of all: the job's process may pass on SIGUSR2 while this one still imports (its default kills)
    signal.signal(signal.SIGUSR2, lambda signum, frame: early.append(signum))
    from orchestrator.job import worker
    from orchestrator.job.rundir import output_to

    path = argv[0]
    max_requeues = int(argv[argv.index("--max-requeues") + 1]) if "--max-requeues" in argv else 0
    if "--probe" in argv:
        module, _, attr = argv[argv.index("--probe") + 1].partition(":")
        worker.requeue_probe = getattr(importlib.import_module(module), attr)

    def on_checkpoint(signum: int, frame: object) -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the job's process passes on the signal we may also get
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        if restarts >= max_requeues:
            raise RequeueLimit(f"requeued {restarts} times already (max_requeues={max_requeues}): the run ends here")
        worker.request_requeue(
            f"scheduler signal (preemption or time limit); requeue {restarts + 1} of at most {max_requeues}"
        )
        raise worker.Terminated("checkpoint and requeue")

    if early:  # asked to stop before the run started: nothing journaled, the next attempt starts it afresh
        return 0
    signal.signal(signal.SIGUSR2, on_checkpoint)
    if "--time-limit-s" in argv:  # Ray has no time limit of its own: resources.time_min, enforced here
        limit = int(argv[argv.index("--time-limit-s") + 1])

        def on_alarm(signum: int, frame: object) -> None:
            raise worker.Terminated(f"time limit reached: resources.time_min={limit // 60}")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(limit)
    try:
        with output_to(RunDir(Path(path))):
            worker.execute(path)
    except worker.Terminated:  # journaled `requeue` (or KILLED): this process is done
        return 0
    return 0


if __name__ == "__main__":
    from orchestrator.job import jobpath  # noqa: F401 - `python -m` put the working directory first on sys.path

    sys.exit(child_main(sys.argv[1:]))
