"""What runs inside a job: seed every RNG, build the RunContext, call the workload, journal the outcome.

The worker imports no MLflow: it only writes its run directory, so it runs the same on a laptop, on a
compute node with no network, in a Ray task, or under a Slurm requeue."""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from orchestrator.job import device, dist, metric_rules, phases, push, snapshot, sysmetrics
from orchestrator.job.context import RunContext
from orchestrator.job.journal import FAILED, FINISHED, KILLED, JournalWriter, events, last_event
from orchestrator.job.rundir import RunDir, output_to
from orchestrator.job.runjson import RunJob
from orchestrator.spec import registry
from orchestrator.vocabulary import Event


class Terminated(BaseException):
    """Raised in the workload by SIGTERM so the journal records KILLED before the process ends."""


class RequeueRefused(Terminated):
    """The scheduler refused the requeue it was asked for: the run ends KILLED, saying why."""


_requeue_reason: str | None = None  # set by a scheduler's checkpoint handler (backends/slurm.py) before it requeues


def request_requeue(reason: str) -> None:
    """The scheduler is about to requeue this job (Slurm preemption or time limit, through submitit): the
    interruption that follows is journaled as ``requeue`` (the run goes on in the next attempt, from its
    checkpoint, in the same MLflow run), not as an ``end`` KILLED, and the SIGTERM that comes with the
    requeue is ignored."""
    global _requeue_reason
    _requeue_reason = reason


def requeue_refused(answer: str) -> NoReturn:
    """The requeue announced by ``request_requeue`` did not happen (e.g. Slurm's ``JobRequeue=0``): without
    this the interruption would be journaled ``requeue`` and the run wait for an attempt that never comes,
    closed later with only the job's exit state. Raised from the scheduler's signal handler, inside the
    workload: the run ends KILLED with the scheduler's answer as its error (``orch.error``)."""
    global _requeue_reason
    reason, _requeue_reason = _requeue_reason, None
    raise RequeueRefused(f"{answer} (after {reason})" if reason else answer)


requeue_probe: Callable[[], str | None] | None = None  # set under a scheduler: is this SIGTERM a requeue?


def _raise_terminated(signum: int, frame: Any) -> None:
    global _requeue_reason
    if _requeue_reason is not None:
        return  # the requeue's own SIGTERM: the process is already on its way out
    if requeue_probe is not None:
        _requeue_reason = requeue_probe()  # e.g. `scontrol requeue`: journal `requeue`, not KILLED
    raise Terminated(f"terminated by signal {signum}")


THREADPOOLS: Any = None  # a threadpoolctl.ThreadpoolController made once by job/preload.py, else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:  # only workloads that use torch pay for importing it
        import torch

        torch.manual_seed(seed)


def set_threads(cpus: int) -> None:
    """One thread per allotted core; per-step loops collapse when threads exceed cores (measured: docs/architecture.md).

    The environment variables reach libraries loaded from now on; threadpoolctl resizes the BLAS and
    OpenMP pools already loaded (a forkserver child inherits numpy's OpenBLAS sized for the whole machine,
    and two runs side by side would then spin four BLAS threads on two cores)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(cpus)
    if "numpy" in sys.modules or "torch" in sys.modules:
        if THREADPOOLS is None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(cpus)
        else:  # the forkserver's scan of the loaded libraries (job/preload.py): ~10 ms a run saved
            THREADPOOLS.limit(limits=cpus)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(cpus)


class SilentJournal:
    """The journal of a multi-task run's rank > 0: rank 0 journals the run (job/dist.py); the others' writes
    (start, device, metrics, checkpoints, end) go nowhere."""

    def write(self, event: str, **fields: Any) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def previous_attempts(run_dir: RunDir) -> int:
    return len(events(run_dir.journal, Event.START))


def judge_final(final: Any, metric: str) -> tuple[dict[str, float], str, str | None]:
    """The final metrics a run may record and its status: FAILED when the main metric is missing or not a
    finite number (an infinite loss would win every "min" comparison), or when a name or value is one
    MLflow refuses (only the valid ones are kept: one run's bad output must not stop the store's ingestion)."""
    if not isinstance(final, dict):
        return {}, FAILED, f"run() must return a dict of final metrics, got {type(final).__name__}"
    kept: dict[str, float] = {}
    problems = []
    for name, value in final.items():
        problem = metric_rules.name_problem(name)
        if problem is None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problem = f"final metric {name!r} must be a number, got {value!r}"
        if problem:
            problems.append(problem)
        else:
            kept[name] = value
    value = kept.get(metric)
    if problems:
        return kept, FAILED, problems[0]
    if value is None:
        return kept, FAILED, f"workload returned no main metric '{metric}'"
    if math.isnan(value):
        return kept, FAILED, f"main metric '{metric}' is NaN"
    if math.isinf(value):
        return kept, FAILED, f"main metric '{metric}' is infinite ({value})"
    return kept, FINISHED, None


def execute(
    path: str | Path, extra_callbacks: list | None = None, on_failure: Callable[[BaseException], None] | None = None
) -> str:
    """Run the job described by ``<path>/run.json``; return its final status. Never raises for a
    workload error: the error is the run's outcome, written to the journal. ``on_failure`` (``orch run
    --pdb``: a post-mortem) sees the workload's exception once its end is journaled."""
    run_dir = RunDir(Path(path))
    if run_dir.cancelled() is not None:
        # Cancelled while queued (backends/local.py): the canceller journals its end; start nothing.
        return KILLED
    job = run_dir.load()
    set_threads(job.cpus)
    gone = snapshot.missing(job.code)
    if gone:  # the workdir was cleaned under a queued job: say so in the run, do not run other code
        journal = JournalWriter(run_dir.journal)
        journal.write(Event.END, status=FAILED, final={}, error=gone)
        journal.close()
        return FAILED
    with snapshot.activated(job.code):
        return _execute(run_dir, job, extra_callbacks, on_failure)


def _execute(
    run_dir: RunDir,
    job: RunJob,
    extra_callbacks: list | None,
    on_failure: Callable[[BaseException], None] | None,
) -> str:
    run, cpus = job.run, job.cpus
    rank = dist.from_environ()  # None: a one-process run; else this process's place in a multi-task run
    if (rank.world_size if rank else 1) != job.world_size:
        return _wrong_layout(run_dir, job, rank)
    workload = registry.for_job(run, job)
    params = workload.params_model.model_validate(run["params"])
    seed_everything(run["seed"])
    attempt = previous_attempts(run_dir) + 1
    main_rank = rank is None or rank.is_main
    journal: Any = JournalWriter(run_dir.journal) if main_rank else SilentJournal()
    ctx = RunContext(run["seed"], run_dir, journal, cpus=cpus, dist=rank)  # its device: device.claim, after `start`
    ctx.on_log.extend(extra_callbacks or [])
    pusher = push.start(run_dir, job) if main_rank else None  # http(s) tracking: metrics reach the server live
    restore_usr2 = None
    if pusher is not None:
        ctx.on_log.append(pusher.notify)
        restore_usr2 = push.flush_on_signal(pusher) if _main_thread() else None
    resumed_from = None
    if run_dir.checkpoint.exists():  # its step, from the journal: unpickling is left to ctx.load_checkpoint's checks
        resumed_from = (last_event(run_dir.journal, Event.CHECKPOINT) or {}).get("step")
    journal.write(
        Event.START,
        attempt=attempt,
        pid=os.getpid(),
        host=socket.gethostname(),
        armed=job.armed,
        resumed_from_step=resumed_from,
        restart_count=int(os.environ.get("SLURM_RESTART_COUNT", 0)),
    )
    main = _main_thread()
    sampler: sysmetrics.Sampler | None = None
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    previous_int = signal.getsignal(signal.SIGINT) if main else None
    try:
        cancelled = run_dir.cancelled()
        if cancelled is not None:
            # A cancel that marked the run between the check above and our `start` may have looked for our
            # pid before we journaled it, so nobody will SIGTERM us: checking after `start` closes that window.
            raise Terminated(cancelled)
        ctx.device = device.claim(job.gpus, journal)  # journals the device facts (tags); gpus > 0 without CUDA: FAILED
        if rank is not None and ctx.device == "cuda":
            ctx.device = f"cuda:{rank.local_rank}"  # each rank its own GPU (torchrun's convention)
        sampler = start_sampler(run_dir, job, journal) if main_rank else None
        if workload.command:
            from orchestrator.job.command import run_command

            final = run_command(workload.command, params, ctx, job.code, job.submit_dir)
        else:
            assert workload.runner is not None
            if rank is not None:  # the workload finds the group made: it wraps its model, orch did the rest
                ctx.dist_backend = dist.init_group(rank, ctx.device)
            # a schedule (spec/schedule.py) runs phase by phase, restarting from its checkpoints
            schedule = run.get("schedule")
            final = phases.run(workload.runner, workload.params_model, params, schedule, ctx, seed_everything)
        stop_sampler(sampler)  # its totals, before the end
        traceback_text = None
        if main_rank:
            final, status, error = judge_final(final, workload.metric)
        else:  # a rank > 0's return value is not the run's: it finished, that is all rank 0 needs to know
            final, status, error = {}, FINISHED, None
        if rank is not None:
            if rank.is_main:  # the run's end waits for every rank's: FINISHED only when all finished
                judged = status
                status, error, traceback_text = dist.settle(run_dir, rank, status, error, None)
                final = {} if judged == FINISHED and status != FINISHED else final
            else:
                dist.report_end(run_dir, rank, status)
        journal.write(Event.END, status=status, final=final, error=error, **_traceback(traceback_text))
    except BaseException as err:
        stop_sampler(sampler)
        if main:  # a second Ctrl-C, or the orchestrator's SIGTERM after its own Ctrl-C, must not cut the end short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _requeue_reason is not None:  # submitit requeued the job and exits: no end, the run goes on later
            journal.write(Event.REQUEUE, step=ctx.last_step, reason=_requeue_reason)
            if rank is not None and not rank.is_main:
                dist.report_end(run_dir, rank, "REQUEUE", _requeue_reason)
            raise
        if isinstance(err, (Terminated, KeyboardInterrupt)):
            status, error, traceback_text = KILLED, str(err) or "interrupted", None
        else:
            status, error, traceback_text = FAILED, f"{type(err).__name__}: {err}", traceback.format_exc()
        if rank is not None and not rank.is_main:  # rank 0 journals it: this rank's traceback goes there
            dist.report_end(run_dir, rank, status, error, traceback_text)
            if traceback_text:
                print(traceback_text, file=sys.stderr, flush=True)  # and to this rank's log (orch logs)
        elif rank is not None:
            status, error, traceback_text = dist.settle(run_dir, rank, status, error, traceback_text)
        journal.write(Event.END, status=status, final={}, error=error, **_traceback(traceback_text))
        if status == FAILED and on_failure is not None:
            journal.sync()
            on_failure(err)
    finally:
        if rank is not None:
            dist.close_group()
        journal.sync()
        journal.close()
        if pusher is not None:
            pusher.close()  # last push; what it cannot send is ingested from the journal
        if restore_usr2 is not None:
            restore_usr2()
        if previous_term is not None:  # `orch run` executes in orch's own process: give its handlers back
            signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    return status


def _traceback(text: str | None) -> dict[str, str]:
    return {"traceback": text} if text else {}


def _wrong_layout(run_dir: RunDir, job: RunJob, rank: dist.DistEnv | None) -> str:
    """run.json asks for a multi-task run and this process was not started as one of its ranks (or the
    other way round): running it would train with the wrong world size; the run fails saying so."""
    journal = JournalWriter(run_dir.journal)
    seen = f"{rank.world_size} ranks" if rank else "a single process"
    journal.write(
        Event.END,
        status=FAILED,
        final={},
        error=f"this run asks for {job.world_size} processes (nodes {job.nodes} x tasks_per_node "
        f"{job.tasks_per_node}) but was started as {seen}: only a backend starts a multi-task run's ranks",
    )
    journal.close()
    return FAILED


def start_sampler(run_dir: RunDir, job: RunJob, journal: JournalWriter) -> sysmetrics.Sampler | None:
    """The run's system metrics (job/sysmetrics.py), unless the spec turned them off; its GPUs are those it
    holds (CUDA_VISIBLE_DEVICES), none when it asked for none. Sample numbers go on across attempts."""
    interval = job.system_metrics_s
    if interval <= 0:
        return None
    gpus = job.gpus
    previous = last_event(run_dir.journal, Event.SYSTEM)
    return sysmetrics.Sampler(
        journal,
        interval,
        gpus_held=gpus,
        gpus=sysmetrics.gpu_reader(sysmetrics.visible_gpus()) if gpus else None,
        first_step=previous["step"] + 1 if previous else 0,
        # rank 0 of local ranks samples them all (their supervisor's tree); on a cluster, its own processes
        root=int(os.environ[dist.SUPERVISOR_ENV]) if os.environ.get(dist.SUPERVISOR_ENV) else None,
    ).start()


def stop_sampler(sampler: sysmetrics.Sampler | None) -> None:
    if sampler is not None:
        sampler.stop()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


INTERRUPTED_EXIT = 130  # what a shell reports for a process ended by Ctrl-C


def child_main(path: str) -> None:
    """Entry point of a local-backend process: logs to the run directory, then ``execute``.

    Ctrl-C in a terminal reaches every process of its group, so each worker gets it with the orchestrator.
    Inside the workload it is journaled KILLED (``execute``); landing anywhere else (while the run sets up,
    before it journaled ``start``) it ends the process quietly: the orchestrator got the same Ctrl-C and
    closes a run whose journal has no end KILLED. Left to multiprocessing, each such worker printed its
    traceback on orch's terminal."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rank = dist.from_environ()
    try:
        with output_to(RunDir(Path(path)), rank.rank if rank else 0):
            status = execute(path)
    except (KeyboardInterrupt, Terminated):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(INTERRUPTED_EXIT)
    sys.exit(0 if status == FINISHED else 1)


if __name__ == "__main__":  # python -m orchestrator.job.worker RUN_DIR (used by the Slurm/Ray backends)
    child_main(sys.argv[1]) if len(sys.argv) > 1 else sys.exit("usage: python -m orchestrator.job.worker RUN_DIR")
