"""Which code produced a run: git commit, dirty flag and diff of the project, and package versions."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import workloads
from orchestrator.tracking.records import Tag

PACKAGES = ("orch", "torch", "numpy", "mlflow", "reservoirpy", "deap", "transformers", "submitit", "ray", "scipy")


@dataclass(frozen=True)
class CodeVersion:
    commit: str
    dirty: bool
    diff: str
    versions: dict[str, str]

    def tags(self) -> dict[str, str]:
        tags = {Tag.GIT_COMMIT: self.commit, Tag.GIT_DIRTY: str(self.dirty).lower(),
                "mlflow.source.git.commit": self.commit}
        tags.update({f"orch.pkg.{name}": version for name, version in self.versions.items()})
        return tags


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=1)
def current() -> CodeVersion:
    root = Path(workloads.__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD").strip() or "unknown"
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    diff = _git(root, "diff", "HEAD") if status.strip() else ""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return CodeVersion(commit, bool(status.strip()), diff, versions)
