"""Which code produced a run: git commit, dirty flag and the full diff (untracked files included) of the
tree a workload comes from, the installed packages, and the command line that submitted it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cache import cached
from orchestrator.tracking.records import Tag

# orch and what it runs on; a workload adds its own (its PACKAGES, spec/registry.py)
PACKAGES = ("orch", "torch", "numpy", "mlflow", "submitit", "ray", "scipy")
MAX_TAG = 5000  # MLflow caps a tag value at 8000 characters


@dataclass(frozen=True)
class CodeVersion:
    commit: str
    dirty: bool
    diff: str
    versions: dict[str, str]

    def tags(self) -> dict[str, str]:
        tags = {
            Tag.GIT_COMMIT: self.commit,
            Tag.GIT_DIRTY: str(self.dirty).lower(),
            "mlflow.source.git.commit": self.commit,
        }
        tags.update({f"orch.pkg.{name}": version for name, version in self.versions.items()})
        return tags


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _untracked_diff(root: Path) -> str:
    """New files as a patch (``git diff`` leaves them out): a new workload module is code that ran."""
    names = [n for n in _git(root, "ls-files", "-z", "--others", "--exclude-standard").split("\0") if n]
    patches = []
    for name in names:
        # `git diff --no-index` exits 1 when the files differ, which they always do here
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            patches.append(
                subprocess.run(
                    ["git", "-C", str(root), "diff", "--no-index", "--", "/dev/null", name],
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout
            )
    return "".join(patches)


def of(root: Path, packages: tuple[str, ...] = ()) -> CodeVersion:
    """The version of the git work tree holding ``root`` ("unknown" outside git), read afresh each time: a
    notebook that submits, edits and submits again must record the second version."""
    commit = _git(root, "rev-parse", "HEAD").strip() or "unknown"
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    diff = (_git(root, "diff", "HEAD", "--", ".") + _untracked_diff(root)) if status.strip() else ""
    versions = {"python": platform.python_version()}
    for name in dict.fromkeys((*PACKAGES, *packages)):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return CodeVersion(commit, bool(status.strip()), diff, versions)


def current(packages: tuple[str, ...] = ()) -> CodeVersion:
    """orch's own checkout (or installed package): a workload installed as a package has no tree of its own."""
    return of(Path(__file__).resolve().parents[2], packages)


def pip_freeze() -> str:
    """Every installed distribution as ``name==version`` (what ``pip freeze`` prints, without running pip).
    Reading every distribution's metadata costs ~0.5 s, so the list is cached (orchestrator/cache.py) for
    the package directories as they are: installing or removing a distribution changes their mtime."""

    def compute() -> str:
        seen = {(d.metadata["Name"] or "?", d.version) for d in importlib.metadata.distributions()}
        return "".join(f"{name}=={version}\n" for name, version in sorted(seen, key=lambda nv: nv[0].lower()))

    state = [
        (entry, os.stat(entry).st_mtime_ns)
        for entry in sys.path
        if os.path.basename(entry) in ("site-packages", "dist-packages") and os.path.isdir(entry)
    ]
    return cached("pip-freeze", f"{sys.prefix}\0{state!r}", compute)


def command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:MAX_TAG] if sys.argv and sys.argv[0] else ""
