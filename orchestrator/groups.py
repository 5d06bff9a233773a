"""The group parents of an experiment: one MLflow run per configuration (variant x grid point) whose children
are its seeds. Created with the tags status and compare read (metric, chance, seeds asked for, the
defaults of the latest submission), then kept up to date: their status summarises their seeds', and a
group whose asked seeds all finished gets its aggregates (mean, std, interval) as metrics."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import yaml

from orchestrator.provenance import Provenance
from orchestrator.spec import registry
from orchestrator.spec.identity import KEY_SCHEME, defaults_tag
from orchestrator.spec.plan import Run, flat_params
from orchestrator.spec.spec import Spec
from orchestrator.tracking import notify
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import FAILED, FINISHED, KILLED, RUNNING, Role, RunRecord, Tag, latest_per_key


def metric_of(spec: Spec) -> tuple[str, str]:
    if spec.metric:
        return spec.metric.name, spec.metric.mode
    workload = registry.for_spec(spec)
    return workload.metric, workload.mode


def chance_tag(spec: Spec) -> dict[str, str]:
    """The workload's chance levels, on each group so that `orch compare` reads them without the workload."""
    chance = dict(registry.for_spec(spec).chance)
    return {Tag.CHANCE: json.dumps(chance, sort_keys=True)} if chance else {}


def tuning_tags(spec: Spec, variant: str) -> dict[str, str]:
    """The search that chose the group's params (the spec's ``tuning:``): `orch compare` warns when a baseline
    got less of it than what it is compared with."""
    budget = spec.tuning_of(variant)
    if budget is None:
        return {}
    return {Tag.TUNING_TRIALS: str(budget.trials), **({Tag.TUNING_SWEEP: budget.sweep} if budget.sweep else {})}


def _group_tags(spec: Spec, run: Run, seeds_requested: int, code: Provenance, chance: dict[str, str]) -> dict[str, str]:
    metric, mode = metric_of(spec)
    return {
        Tag.ROLE: Role.GROUP,
        Tag.GROUP: run.group,
        Tag.VARIANT: run.variant,
        Tag.GRID_POINT: yaml.safe_dump(run.grid_point, default_flow_style=True).strip() if run.grid_point else "",
        Tag.WORKLOAD: run.workload,
        Tag.SPEC: spec.source,
        Tag.METRIC: metric,
        Tag.MODE: mode,
        Tag.SEEDS_REQUESTED: str(seeds_requested),
        **identity_tags(run),
        **chance,
        **tuning_tags(spec, run.variant),
        **code.tags(),
    }


def identity_tags(run: Run) -> dict[str, str]:
    """How the run's key was made, and what it left out at its default (a later change of default is seen)."""
    return {Tag.KEY_SCHEME: str(KEY_SCHEME), Tag.DEFAULTS: defaults_tag(run.defaulted)}


def ensure_groups(
    ledger: Ledger, experiment_id: str, spec: Spec, runs: list[Run], code: Provenance | None = None
) -> dict[str, str]:
    """One parent run per group; records how many seeds were asked for, so status can count missing ones,
    and the code each submission ran (``code/<snapshot>/`` artifacts, once per snapshot)."""
    code = code or Provenance(spec)
    parents = {r.tags.get(Tag.GROUP): r for r in ledger.runs(experiment_id, role=Role.GROUP)}
    seeds_by_group: dict[str, int] = defaultdict(int)
    for run in runs:
        seeds_by_group[run.group] = max(seeds_by_group[run.group], run.index + 1)
    ids: dict[str, str] = {}
    spec_text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    code_tags = code.tags()
    chance = chance_tag(spec)
    for run in {r.group: r for r in runs}.values():
        parent = parents.get(run.group)
        requested = seeds_by_group[run.group]
        if parent is None:
            run_id = ledger.create_run(
                experiment_id,
                run.label,
                _group_tags(spec, run, requested, code, chance),
                flat_params(run),
                status=RUNNING,
            )
            ledger.log_text(run_id, spec_text, "spec.yaml")
        else:
            run_id = parent.run_id
            updates: dict[str, object] = {}
            if requested > int(parent.tags.get(Tag.SEEDS_REQUESTED, 0)):
                updates[Tag.SEEDS_REQUESTED] = requested
            if chance and parent.tags.get(Tag.CHANCE) != chance[Tag.CHANCE]:
                updates.update(chance)  # a group recorded before its workload declared them
            updates.update(latest_word(parent, spec, run))
            if parent.tags.get(Tag.CODE) == code_tags.get(Tag.CODE) and Tag.CODE in code_tags:
                run_id = ""  # this code is on record already
            else:
                updates.update(code_tags)  # the parent says which code its latest seeds ran
            if updates:
                ledger.set_tags(parent.run_id, updates)
        if run_id:
            for path, text in code.artifacts().items():
                ledger.log_text(run_id, text, path)
        ids[run.group] = parent.run_id if parent is not None else run_id
    return ids


def latest_word(parent: RunRecord, spec: Spec, run: Run) -> dict[str, str]:
    """The tags of a group the latest submission changes: its defaults (status and compare, which read
    records only, name the seeds recorded under another default: analysis/status.py) and how its params were
    chosen (``tuning:``)."""
    updates = {} if parent.tags.get(Tag.DEFAULTS) == defaults_tag(run.defaulted) else identity_tags(run)
    tuned = tuning_tags(spec, run.variant)
    if any(parent.tags.get(k) != v for k, v in tuned.items()):
        updates.update(tuned)
    return updates


def mark_done(ledger: Ledger, experiment_id: str, spec: Spec, runs: list[Run]) -> None:
    """Groups with nothing left to run still take the latest submission's word (``latest_word``)."""
    parents = {r.tags.get(Tag.GROUP): r for r in ledger.runs(experiment_id, role=Role.GROUP)}
    for run in {r.group: r for r in runs}.values():
        parent = parents.get(run.group)
        if parent is None:
            continue
        updates = latest_word(parent, spec, run)
        if updates:
            ledger.set_tags(parent.run_id, updates)


def notify_end(ledger: Ledger, experiment_id: str, records: list[RunRecord] | None = None) -> list[RunRecord]:
    """A submission whose runs all ended gets its end notified, once (tracking/notify.py); returns the records."""
    records = ledger.runs(experiment_id) if records is None else records
    statuses = {r.run_id: r.status for r in records}
    for folder in {Path(r.tags[Tag.RUN_DIR]).parent for r in records if r.tags.get(Tag.RUN_DIR)}:
        notify.maybe_end(folder, statuses)
    return records


def update_groups(ledger: Ledger, experiment_id: str, records: list[RunRecord] | None = None) -> list[RunRecord]:
    """A parent's status summarises its children: FINISHED when all asked seeds finished, FAILED when
    any failed, RUNNING otherwise. Returns the parents, up to date."""
    records = ledger.runs(experiment_id) if records is None else records
    latest_by_group: dict[str, list[str]] = defaultdict(list)
    seeds_by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for best in latest_per_key(records):
        latest_by_group[best.tags.get(Tag.GROUP, "")].append(best.status)
        seeds_by_group[best.tags.get(Tag.GROUP, "")].append(best)
    parents = []
    for parent in ledger.runs(experiment_id, role=Role.GROUP):
        statuses = latest_by_group.get(parent.tags.get(Tag.GROUP, ""), [])
        requested = int(parent.tags.get(Tag.SEEDS_REQUESTED, 0))
        if statuses.count(FINISHED) >= requested and requested:
            status = FINISHED
        elif any(s in (FAILED, KILLED) for s in statuses):
            status = FAILED
        else:
            status = RUNNING
        if parent.status != status:
            if status == FINISHED:  # every asked seed is in: the group's aggregates, sortable in the MLflow UI
                log_aggregates(ledger, parent, seeds_by_group[parent.tags.get(Tag.GROUP, "")])
            ledger.set_status(parent.run_id, status)
            parent = dataclasses.replace(parent, status=status)
        parents.append(parent)
    return parents


def log_aggregates(ledger: Ledger, parent: RunRecord, seeds: list[RunRecord]) -> None:
    """``<metric>_mean``, ``_std``, ``_ci_low``, ``_ci_high``, ``_n`` of the group's FINISHED seeds."""
    from orchestrator.analysis.interval import aggregates  # scipy.special: only when a group completes

    metric = parent.tags.get(Tag.METRIC, "")
    values = [r.metrics[metric] for r in seeds if r.status == FINISHED and metric in r.metrics]
    if metric and values:
        ledger.log_values(parent.run_id, aggregates(metric, values))
