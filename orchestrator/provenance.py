"""What a submission records about its code, taken once per submission: the snapshot its jobs will run
(``job/snapshot.py``), the git version and full diff of the tree it came from, the installed packages,
and the command line. Seed runs carry it as tags; each group's parent keeps the diff and the package list
as artifacts under ``code/<snapshot>/``, once per snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.job import snapshot
from orchestrator.spec import registry
from orchestrator.spec.spec import Spec
from orchestrator.tracking import codeversion
from orchestrator.tracking.records import Tag

CODE_STORE = ".code"  # under the spec's workdir root: shared by every experiment there


@dataclass
class Provenance:
    spec: Spec

    @cached_property
    def workload(self) -> registry.Workload:
        return registry.for_spec(self.spec)

    @cached_property
    def planned(self) -> snapshot.Plan | None:
        """The snapshot's files and digest, checked against its limits: called before anything is written."""
        root = self.workload.source_root
        if not self.spec.snapshot or root is None:
            return None
        top = self.workload.import_path.split(".")[0]
        try:
            return snapshot.plan(
                root, self.code_store, top, exclude=[Path(self.spec.workdir).resolve(), Path("mlruns").resolve()]
            )
        except snapshot.SnapshotTooLarge as err:
            raise InputError(
                f"{err}: keep data and outputs out of it (.gitignore), or set 'snapshot: false' to run the live code",
                self.spec.source,
                "snapshot",
            ) from None

    @property
    def code_store(self) -> Path:
        return Path(self.spec.workdir).resolve() / CODE_STORE

    @cached_property
    def snapshot(self) -> snapshot.Snapshot | None:
        planned = self.planned
        return None if planned is None else snapshot.materialise(planned, self.code_store)

    @cached_property
    def version(self) -> codeversion.CodeVersion:
        root, packages = self.workload.source_root, self.workload.packages
        return codeversion.of(root, packages) if root is not None else codeversion.current(packages)

    def tags(self) -> dict[str, str]:
        tags = {**self.version.tags(), Tag.COMMAND_LINE: codeversion.command_line()}
        if self.snapshot is not None:
            tags.update({Tag.CODE: self.snapshot.digest, Tag.CODE_SOURCE: self.snapshot.source})
        return tags

    def job_fields(self) -> dict[str, Any]:
        """What run.json tells the worker about the code to run."""
        fields: dict[str, Any] = {"submit_dir": str(Path.cwd()), "module": self.workload.import_path}
        if self.snapshot is not None:
            fields["code"] = self.snapshot.to_dict()
        return fields

    def artifacts(self) -> dict[str, str]:
        """Artifact path -> text, for a group parent that has not recorded this snapshot yet."""
        folder = f"code/{self.snapshot.digest if self.snapshot else self.version.commit[:12]}"
        files = {
            f"{folder}/requirements.txt": codeversion.pip_freeze(),
            f"{folder}/command_line.txt": codeversion.command_line() + "\n",
        }
        if self.version.dirty:
            files[f"{folder}/code.diff"] = self.version.diff
        return files
