"""Stores written under key scheme 1 (a run's key hashed every resolved param) adopted by key scheme 2
(``spec/identity.py``), with no step of the user's: the first submission that meets such runs re-tags the
ones it plans (their key, group, scheme and defaults; nothing else changes), so they are found, not rerun.

A scheme-1 run is the planned run whose scheme-1 key it carries; failing that (a param was added to the
workload since), the planned run whose params agree with every param the run recorded, the ones it did not
record being at their default now. Runs no planned run matches keep their scheme-1 tags (another spec's,
or params changed since): nothing else reads them as this spec's runs. Idempotent: a re-tagged run says
scheme 2 and is not looked at again."""

from __future__ import annotations

import dataclasses

from orchestrator.spec.identity import KEY_SCHEME, defaults_tag
from orchestrator.spec.plan import Run, flat_params
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import Role, RunRecord, Tag

MLFLOW_PARAM_LENGTH = 6000  # what Ledger.create_runs keeps of a param's text


LEGACY = "1"  # the scheme tag of a scheme-1 run examined once and matched by no planned run


def is_legacy(record: RunRecord) -> bool:
    return record.tags.get(Tag.KEY_SCHEME, LEGACY) == LEGACY


def _recorded_as(value: object) -> str:
    return str(value)[:MLFLOW_PARAM_LENGTH]


def params_agree(run: Run, recorded: dict[str, str]) -> bool:
    """The run's resolved params are what was recorded; a param the record lacks is at its default."""
    planned = flat_params(run)
    return all(path in planned and _recorded_as(planned[path]) == text for path, text in recorded.items()) and all(
        path in recorded or path in run.defaulted for path in planned
    )


def match(
    record: RunRecord, runs_by_legacy_key: dict[str, Run], candidates: list[Run], recorded: dict[str, str] | None
) -> Run | None:
    run = runs_by_legacy_key.get(record.key)
    if run is not None or recorded is None:
        return run
    seed, workload = record.tags.get(Tag.SEED), record.tags.get(Tag.WORKLOAD)
    for run in candidates:
        if str(run.seed) == seed and run.workload == workload and not run.command and params_agree(run, recorded):
            return run
    return None


def adopt(
    ledger: Ledger, experiment_id: str, runs: list[Run], records: list[RunRecord], write: bool = True
) -> list[RunRecord]:
    """Re-tag the scheme-1 seed runs (and their group parents) that ``runs`` plans; returns ``records`` as
    they are now. ``write=False`` (``--dry-run``): the same records, re-tagged in memory only. A store with
    no scheme-1 run costs nothing; the params of a scheme-1 run are read once: one that matches no planned
    run is tagged scheme 1, and later matched by its key only."""
    if not any(is_legacy(r) for r in records):
        return records
    by_legacy_key = {run.legacy_key: run for run in runs}
    current = {run.key for run in runs}  # an untagged run already keyed by scheme 2 (another tool wrote it)
    groups: dict[str, Run] = {run.legacy_group: run for run in runs}  # scheme-1 group -> its planned runs' group
    out, met = [], False  # met: some scheme-1 run was looked at (its group parent may need re-tagging)
    for record in records:
        if not is_legacy(record) or record.key in current:
            out.append(record)
            continue
        met = True
        unseen = Tag.KEY_SCHEME not in record.tags and record.key not in by_legacy_key
        recorded = ledger.client.get_run(record.run_id).data.params if unseen else None
        run = match(record, by_legacy_key, runs, recorded)
        if run is None:
            tags = {Tag.KEY_SCHEME: LEGACY} if unseen else {}
        else:
            # what the run left at its default then: the defaulted params it recorded (all, for a key match)
            defaulted = {p: v for p, v in run.defaulted.items() if recorded is None or p in recorded}
            tags = {
                Tag.KEY: run.key,
                Tag.GROUP: run.group,
                Tag.KEY_SCHEME: str(KEY_SCHEME),
                Tag.DEFAULTS: defaults_tag(defaulted),
            }
            groups[record.tags.get(Tag.GROUP, "")] = run
        if tags and write:
            ledger.set_tags(record.run_id, tags)
        out.append(dataclasses.replace(record, tags={**record.tags, **tags}))
    if write and met:
        for parent in ledger.runs(experiment_id, role=Role.GROUP):
            run = groups.get(parent.tags.get(Tag.GROUP, "")) if Tag.KEY_SCHEME not in parent.tags else None
            if run is not None:
                ledger.set_tags(
                    parent.run_id,
                    {Tag.GROUP: run.group, Tag.KEY_SCHEME: str(KEY_SCHEME), Tag.DEFAULTS: defaults_tag(run.defaulted)},
                )
    return out
