"""``orch export`` / ``orch import``: move an experiment between MLflow stores (a cluster's tracking server
-> a laptop's sqlite file, and back), through a plain directory that can be copied anywhere.

A bundle is ``experiment.json`` plus one folder per run: ``run.json`` (info, tags, params) and
``metrics.jsonl`` (the full history, one ``[key, value, timestamp, step]`` per line), and ``artifacts/``.
MLflow cannot create a run with a chosen id, so an imported run keeps its original id in the tag
``orch.source_run_id`` and parents are re-linked through it. Importing again finds runs by that tag and
re-sends their rows, which the store drops as exact duplicates: import is idempotent, and a bundle
exported later (more metrics, a new status) updates what an earlier import brought in."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import InputError
from orchestrator.spec.tracking_uri import sqlite_path
from orchestrator.tracking.records import TERMINAL, Tag, chunks, search_all

SOURCE_TAG = Tag.SOURCE_RUN_ID
SOURCE_URI_TAG = Tag.SOURCE_URI
PARENT_TAG = "mlflow.parentRunId"
FORMAT = "orch-mlflow-bundle/1"


def _client(uri: str):
    from orchestrator.tracking.ledger import Ledger  # sets MLFLOW_DISABLE_TELEMETRY, creates a sqlite file's folder

    return Ledger(uri).client


def _number(value: float) -> float | str:
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else value


# -- export --------------------------------------------------------------------------------------------
def export_experiment(uri: str, name: str, out: Path) -> int:
    """Write experiment ``name`` of the store at ``uri`` into the bundle directory ``out``; returns the
    number of runs. An existing bundle there is replaced run by run (export is repeatable)."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise InputError(f"no experiment named '{name}' in {uri}")
    out.mkdir(parents=True, exist_ok=True)
    runs = search_all(client, experiment.experiment_id)
    (out / "experiment.json").write_text(
        json.dumps(
            {
                "format": FORMAT,
                "name": name,
                "tags": dict(experiment.tags),
                "source_uri": _redact(uri),
                "source_experiment_id": experiment.experiment_id,
                "runs": [r.info.run_id for r in runs],
            },
            indent=1,
        )
    )
    for run in runs:
        folder = out / "runs" / run.info.run_id
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        info = run.info
        (folder / "run.json").write_text(
            json.dumps(
                {
                    "run_id": info.run_id,
                    "run_name": info.run_name,
                    "status": info.status,
                    "start_time": info.start_time,
                    "end_time": info.end_time,
                    "tags": dict(run.data.tags),
                    "params": dict(run.data.params),
                },
                indent=1,
            )
        )
        with open(folder / "metrics.jsonl", "w") as f:
            for key in sorted(run.data.metrics):
                for m in client.get_metric_history(info.run_id, key):
                    f.write(json.dumps([m.key, _number(m.value), m.timestamp, m.step]) + "\n")
        if client.list_artifacts(info.run_id):
            client.download_artifacts(info.run_id, "", str(folder / "artifacts"))
    return len(runs)


def _redact(uri: str) -> str:
    from orchestrator.tracking.server import redact

    return redact(uri)


# -- import --------------------------------------------------------------------------------------------
RUN_ID = r"^[0-9A-Za-z_-]{1,64}$"  # MLflow's run ids are hex: nothing that could walk out of the bundle


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Experiment(_Strict):
    format: str
    name: str = Field(min_length=1, max_length=500)
    tags: dict[str, str] = Field(default_factory=dict)
    source_uri: str = ""
    runs: list[Annotated[str, Field(pattern=RUN_ID)]]


class _Run(_Strict):
    run_id: str = Field(pattern=RUN_ID)
    run_name: str | None = None
    status: Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
    start_time: int | None = None
    end_time: int | None = None
    tags: dict[str, str]
    params: dict[str, str]


def _load(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError("missing from the bundle", str(path)) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        detail = err.errors()[0] if isinstance(err, pydantic.ValidationError) else None
        what = f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}" if detail else f"not JSON ({err})"
        raise InputError(f"damaged bundle: {what}", str(path)) from None


def _check_metrics(path: Path) -> None:
    """Every line ``[key, value, timestamp, step]``, read before anything is written (all or nothing)."""
    if not path.exists():
        return
    number = 0  # the line an error is at (0: the file itself could not be read)
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):  # noqa: B007 - read by the error below
                key, value, timestamp, step = json.loads(line)
                if not (isinstance(key, str) and isinstance(timestamp, int) and isinstance(step, int)):
                    raise ValueError("expected [name, value, timestamp, step]")
                float(value)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise InputError(f"damaged bundle: line {number}: {err}", str(path)) from None


def _read_bundle(bundle: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The whole bundle, checked before anything is written: a damaged one is refused whole."""
    meta_file = bundle / "experiment.json"
    if not meta_file.exists():
        raise InputError("not an orch export bundle (no experiment.json)", str(bundle))
    meta = _load(_Experiment, meta_file)
    if meta.format != FORMAT:
        raise InputError(f"unknown bundle format {meta.format!r}, expected {FORMAT!r}", str(meta_file))
    runs = []
    for run_id in dict.fromkeys(meta.runs):
        folder = bundle / "runs" / run_id
        run = _load(_Run, folder / "run.json")
        if run.run_id != run_id:
            raise InputError(
                f"damaged bundle: run.json names run {run.run_id}, its folder {run_id}", str(folder / "run.json")
            )
        _check_metrics(folder / "metrics.jsonl")
        runs.append(run.model_dump())
    return meta.model_dump(), runs


def check_experiment_name(name: str, field: str = "--name") -> str:
    """An experiment name becomes a folder under the store's artifacts: no path out of it."""
    if not name.strip() or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise InputError(f"expected an experiment name without '/', '\\' or NUL, not '.' or '..', got {name!r}", field)
    return name


def _parents_first(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {r["run_id"] for r in runs}
    depth: dict[str, int] = {}
    by_id = {r["run_id"]: r for r in runs}

    def level(run_id: str, seen: frozenset = frozenset()) -> int:
        if run_id not in depth:
            parent = by_id[run_id]["tags"].get(PARENT_TAG)
            depth[run_id] = 0 if parent not in ids or parent in seen else 1 + level(parent, seen | {run_id})
        return depth[run_id]

    return sorted(runs, key=lambda r: level(r["run_id"]))


@dataclass(frozen=True)
class Imported:
    mapping: dict[str, str]  # source run id -> run id here
    new: int  # runs this import created (the others were here from an earlier import)


def import_bundle(uri: str, bundle: Path, name: str | None = None) -> Imported:
    """Bring a bundle into the store at ``uri`` (experiment ``name``, default the exported one's name).
    Idempotent: a run imported before is updated, not created again."""
    from mlflow.entities import Metric, Param, RunTag

    meta, runs = _read_bundle(bundle)
    name = check_experiment_name(name or meta["name"], "--name" if name else str(bundle / "experiment.json"))
    client = _client(uri)
    _refuse_self_import(client, runs, bundle)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        database = sqlite_path(uri)
        if database is not None:  # like Ledger: artifacts next to the database file
            location = (database.parent / "artifacts" / name).resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location, tags=meta.get("tags") or None)
    else:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        experiment_id = experiment.experiment_id
    existing = {
        r.data.tags[SOURCE_TAG]: r.info.run_id for r in search_all(client, experiment_id) if SOURCE_TAG in r.data.tags
    }
    mapping: dict[str, str] = {}
    new = 0
    for src in _parents_first(runs):
        tags = dict(src["tags"])
        tags.setdefault(SOURCE_TAG, src["run_id"])  # a run imported twice keeps its first origin
        tags.setdefault(SOURCE_URI_TAG, meta.get("source_uri", ""))
        source_id = tags[SOURCE_TAG]
        parent = tags.get(PARENT_TAG)
        if parent:
            tags[PARENT_TAG] = mapping.get(parent) or existing.get(parent, parent)
        run_id = existing.get(source_id)
        if run_id is None:
            run_id = client.create_run(
                experiment_id, start_time=src["start_time"], tags=tags, run_name=src["run_name"]
            ).info.run_id
            existing[source_id] = run_id
            new += 1
        mapping[src["run_id"]] = run_id
        for chunk in chunks([RunTag(k, v) for k, v in tags.items()], 100):
            client.log_batch(run_id, tags=chunk)
        for chunk in chunks([Param(k, v) for k, v in src["params"].items()], 100):
            client.log_batch(run_id, params=chunk)  # identical values: accepted again
        folder = bundle / "runs" / src["run_id"]
        for chunk in chunks(list(_metrics(folder / "metrics.jsonl", Metric))):
            client.log_batch(run_id, metrics=chunk)  # exact duplicates of an earlier import are dropped
        artifacts = folder / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(run_id, str(artifacts))
        if src["status"] in TERMINAL:
            client.set_terminated(run_id, src["status"], end_time=src["end_time"])
        else:
            client.update_run(run_id, status=src["status"])
    return Imported(mapping, new)


def _refuse_self_import(client, runs: list[dict[str, Any]], bundle: Path) -> None:
    """A bundle imported into the store it came from would double every run."""
    from mlflow.exceptions import MlflowException

    for run in runs[:1]:
        try:
            client.get_run(run["run_id"])
        except MlflowException:
            return
        raise InputError("this bundle was exported from this store: its runs are here already", str(bundle))


def _metrics(path: Path, Metric) -> Iterator:
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            key, value, timestamp, step = json.loads(line)
            yield Metric(key, float(value), int(timestamp), int(step))
