"""Journals into MLflow: each run directory's new journal lines become its record's metrics, tags and status
(``JournalIngestion``, a part of ``Ledger``). Idempotent through a cursor in the run directory; steps
replayed after a resume are skipped; lines a job's live pusher sent already are not sent again; a full
disk is one clear StorageError with the cursor left before what did not reach MLflow."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import storage_error
from orchestrator.job import metric_rules
from orchestrator.job.journal import JournalWriter, decode_number, read_journal
from orchestrator.job.push import live_file, read_state
from orchestrator.job.rundir import RunDir
from orchestrator.job.sysmetrics import PREFIX as SYSTEM_PREFIX
from orchestrator.tracking import notify
from orchestrator.tracking.records import FAILED, KILLED, RUNNING, Tag
from orchestrator.tracking.sqlwrite import RunWrite
from orchestrator.vocabulary import Event

if TYPE_CHECKING:
    from orchestrator.tracking.ledger import Ledger

log = logging.getLogger("orch")

LIVE_FRESH_S = 10.0  # a job's pusher that wrote live.json this recently is taken to be alive
PARALLEL_WRITES = 8  # runs written side by side through a tracking server (its workers x a few requests in flight)


def live_split(
    run_dir: RunDir, run_id: str, start: int, records: list[dict[str, Any]], offset: int
) -> tuple[int, list[dict[str, Any]], int]:
    """For ``Ledger.ingest`` of the journal ``records`` read from byte ``start`` up to ``offset``: how many
    of them had their metrics pushed live already, and which records to ingest now (with the offset after
    them). While a job's pusher keeps up (``live.json`` written in the last ``LIVE_FRESH_S``) and the
    journal has not ended, ingestion stops at the live cursor and leaves the tail to the pusher: two
    writers sending the same rows at once is wasted work on the server."""
    state = read_state(run_dir, run_id)
    if not state or state["offset"] <= start:
        return 0, records, offset
    with open(run_dir.journal, "rb") as f:
        f.seek(start)
        pushed = f.read(state["offset"] - start).count(b"\n")
    try:
        fresh = time.time() - live_file(run_dir).stat().st_mtime < LIVE_FRESH_S
    except OSError:
        fresh = False
    if pushed < len(records) and fresh and not any(r["event"] == Event.END for r in records):
        return pushed, records[:pushed], state["offset"]
    return pushed, records, offset


@dataclass
class _Pending:
    """An ingestion read but not written yet: its write, and the cursor to store once it is written."""

    write: RunWrite
    cursor: dict[str, Any]


def ingest(ledger: Ledger, run_dir: RunDir) -> str | None:
    """Bring the journal's new lines into the run's MLflow record. Idempotent: a cursor in the run
    directory remembers how far it got, and steps replayed after a resume are skipped.
    Returns the terminal status when the journal ended, else None. A full disk raises StorageError;
    the cursor then still points before the lines that did not reach MLflow, so nothing is lost."""
    return ingest_many(ledger, [run_dir])[0]


def ingest_many(ledger: Ledger, run_dirs: list[RunDir]) -> list[str | None]:
    """``ingest`` of several runs, written in one transaction on an SQL store (a burst of short runs
    that ended together is one commit); each run's cursor moves once its lines are in MLflow."""
    reads = []
    for run_dir in run_dirs:
        with disk_errors(run_dir):
            reads.append(_read_new(ledger, run_dir))
    pending = [(run_dir, read) for run_dir, read in zip(run_dirs, reads, strict=False) if isinstance(read, _Pending)]
    if pending:
        with disk_errors(pending[0][0]):
            together = ledger._record_many([item.write for _, item in pending])
        failures = {} if together else _record_each(ledger, [item.write for _, item in pending])
        for run_dir, item in pending:
            if item.write.run_id in failures:
                continue  # its cursor stays: the next ingestion sends these lines again
            with disk_errors(run_dir):
                run_dir.write_cursor(item.cursor)
            if item.cursor.get("ended") == FAILED:  # recorded now: tell whoever asked (spec's notify:)
                notify.run_ended(run_dir)
        for run_dir, item in pending:  # the others' cursors moved: now say what went wrong
            if item.write.run_id in failures:
                with disk_errors(run_dir):
                    raise failures[item.write.run_id]
    return [read.cursor.get("ended") if isinstance(read, _Pending) else read for read in reads]


def _record_each(ledger: Ledger, writes: list[RunWrite]) -> dict[str, Exception]:
    """Writes that need MLflow's client (a tracking server without orch's batch route): one request per batch
    of each run, the runs sent side by side (a server's workers and its database take them in parallel; one
    after another, each run waited for the previous one's round trip). The runs whose write failed, with
    their error: the others are recorded, and their cursors may move."""
    from concurrent.futures import ThreadPoolExecutor

    failures: dict[str, Exception] = {}

    def record(write: RunWrite) -> None:
        try:
            ledger._record_one(write)
        except Exception as err:  # kept for its run: raised where that run's cursor would move
            failures[write.run_id] = err

    if len(writes) == 1:  # the common case of a run ending alone: no thread for it
        record(writes[0])
    else:
        with ThreadPoolExecutor(min(PARALLEL_WRITES, len(writes)), thread_name_prefix="orch-ingest") as pool:
            list(pool.map(record, writes))
    return failures


def _read_new(ledger: Ledger, run_dir: RunDir) -> str | _Pending | None:
    """The journal's lines since the cursor, as the write they make (their files uploaded already),
    or the status on record when there is nothing new."""
    run_id = run_dir.load().run_id
    cursor = run_dir.read_cursor()
    if cursor.get("run_id") != run_id:
        cursor = {"offset": 0, "max_step": {}, "run_id": run_id, "ended": None}
    skipped: list[tuple[int, bytes]] = []
    records, offset = read_journal(run_dir.journal, cursor["offset"], skipped)
    for at, line in skipped:  # a line torn by a full disk or a crash: the rest of the journal still counts
        log.warning("%s: skipped an undecodable line at byte %d: %r", run_dir.journal, at, line[:80])
    # A job tracking through a server pushes its own metrics (orchestrator/job/push.py): skip the lines it
    # sent, and leave it the tail while it keeps up.
    pushed_live, records, offset = live_split(run_dir, run_id, cursor["offset"], records, offset)
    if not records:
        return cursor.get("ended")
    from mlflow.entities import Metric

    metrics: list[Metric] = []
    tags: dict[str, str] = {}
    end: dict[str, Any] | None = None
    max_step = cursor["max_step"]
    for index, record in enumerate(records):
        ms = int(record["t"] * 1000)
        if record["event"] in (Event.METRICS, Event.SYSTEM):  # the workload's, and job/sysmetrics.py's
            step = record["step"]
            for name, value in record["metrics"].items():
                problem = metric_rules.step_problem(step) or metric_rules.name_problem(name)
                if problem:  # a journal orch's checks did not write (an older orch, a hand edit): drop it
                    cursor["warnings"] = f"{cursor.get('warnings', '')}\nnot recorded: {problem}".strip()
                    tags[Tag.WARNING] = cursor["warnings"]
                    continue
                if step <= max_step.get(name, -1):
                    continue  # replayed after a resume: already recorded, same value by determinism
                max_step[name] = step
                if index >= pushed_live or record["event"] == Event.SYSTEM:  # the live pusher sends metrics only
                    metrics.append(Metric(name, decode_number(value), ms, step))
        elif record["event"] == Event.START:
            tags.update(
                {
                    Tag.ATTEMPT: record["attempt"],
                    Tag.HOST: record["host"],
                    Tag.PID: record["pid"],
                    Tag.RESTART_COUNT: record.get("restart_count", 0),
                }
            )
            if record.get("resumed_from_step") is not None:
                tags[Tag.RESUMED_FROM_STEP] = record["resumed_from_step"]
        elif record["event"] == Event.CHECKPOINT:
            tags[Tag.CHECKPOINT_STEP] = record["step"]
        elif record["event"] == Event.WARNING:  # ctx.warn: every warning of the run, one per line
            cursor["warnings"] = f"{cursor.get('warnings', '')}\n{record['message']}".strip()
            tags[Tag.WARNING] = cursor["warnings"]
        elif record["event"] == Event.DEVICE:  # job/device.py: names that records.Tag lists (tested)
            tags.update(record["tags"])
        elif record["event"] == Event.END:
            end = record
            # the workload's last step (not the system sampler's sample count): the final sits on it
            final_step = max((v for k, v in max_step.items() if not k.startswith(SYSTEM_PREFIX)), default=0)
            # one ms later than anything journaled before it: MLflow's "latest" value of a name is the one
            # with the highest (step, timestamp, value), and a command's last step line and its final can
            # share a millisecond; the final must win even when it is the smaller value
            metrics += [
                Metric(k, decode_number(v), ms + 1, final_step)
                for k, v in record["final"].items()
                if metric_rules.name_problem(k) is None
            ]
    ended = end["status"] if end is not None else None
    if end is not None:
        if end.get("error"):
            tags[Tag.ERROR] = end["error"]
        _upload_files(ledger, run_id, run_dir, end)  # before the end: a reader that sees it ended finds them
    started = any(r["event"] == Event.START for r in records)
    cursor.update(offset=offset, max_step=max_step, ended=ended)
    return _Pending(
        ledger._write(run_id, metrics, tags, ended or (RUNNING if started else None), ended=end is not None), cursor
    )


def _upload_files(ledger: Ledger, run_id: str, run_dir: RunDir, end: dict[str, Any]) -> None:
    """A run's traceback, artifacts and logs, uploaded when its journal ends."""
    if end.get("traceback"):
        ledger.log_text(run_id, end["traceback"], "traceback.txt")
    artifacts = run_dir.artifacts
    if artifacts.exists() and any(artifacts.iterdir()):
        ledger.client.log_artifacts(run_id, str(artifacts))
    for log in (run_dir.stdout, run_dir.stderr):
        if log.exists() and log.stat().st_size:
            ledger.client.log_artifact(run_id, str(log), "logs")


def close_dead(ledger: Ledger, run_dir: RunDir, reason: str, status: str = KILLED) -> str:
    """A job that ended without journaling its end (SIGKILL, OOM, node failure): ingest what it wrote,
    then record the end for it so it is not left RUNNING forever. (A run that never started, queued then
    cancelled, gets a journal of that one ``end``: the next submit still continues it, driver.prepare.)"""
    ended = ingest(ledger, run_dir)
    if ended:
        return ended
    with disk_errors(run_dir):
        journal = JournalWriter(run_dir.journal)
        try:
            journal.write(Event.END, status=status, final={}, error=reason)
        finally:
            journal.close()
    return ingest(ledger, run_dir) or status


@contextmanager
def disk_errors(run_dir: RunDir) -> Iterator[None]:
    """A full disk or quota (on the run directories, or under an sqlite store) as one clear StorageError
    instead of a traceback from deep inside MLflow or json. The cursor moves only after MLflow took the
    lines, so the next ingestion starts where this one could not go on."""
    try:
        yield
    except Exception as err:
        full = storage_error(err, f"recording run {run_dir.path.name}")
        if full is None:
            raise
        raise full from None
