"""Code snapshots: a job runs the code that was submitted, not whatever the checkout holds when it starts.

At submit, the workload's source tree (its top-level package, a plain module's directory, or a command's
working directory) is copied once into ``<workdir>/.code/<digest>/``: git-tracked and untracked-but-not-
ignored files when the tree is in a git work tree, otherwise every file but caches and orch's own output.
The digest is the content's (paths, bytes, exec bits), so identical code is stored once however often it is
submitted. In the job, ``activated`` puts the snapshot first on ``sys.path`` and drops the live tree's
modules, so the workload is imported from the copy; a command runs inside it."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.job.rundir import umask

MAX_FILES = 20_000
MAX_BYTES = 200 * 2**20
SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "venv", "mlruns", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"}


class SnapshotTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    digest: str
    path: str  # <store>/<digest>
    sys_path: str  # the entry put first on the job's sys.path
    workdir: str  # where a command runs (the copy of its working directory)
    package: str  # the top-level module to re-import from the copy ("" for a command)
    source: str  # the live tree it was taken from
    files: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git_files(root: Path) -> list[str] | None:
    """Files git would keep (tracked, plus untracked that no .gitignore excludes); None outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({name for name in out.decode(errors="surrogateescape").split("\0") if name})


def _walk_files(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if not f.endswith((".pyc", ".pyo"))]
    return sorted(found)


def source_files(root: Path, exclude: list[Path]) -> list[str]:
    """Relative paths of the files a snapshot of ``root`` holds (orch's own output under ``exclude`` never)."""
    names = _git_files(root)
    names = _walk_files(root) if names is None else names
    excluded = [p.resolve() for p in exclude]
    kept = []
    for name in names:
        path = root / name
        if not path.is_file() or any(part in SKIPPED_DIRS for part in Path(name).parts[:-1]):
            continue  # deleted but still tracked, or a cache dir someone committed
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in excluded):
            continue
        kept.append(name)
    return kept


@dataclass(frozen=True)
class Plan:
    """What a snapshot of ``root`` will hold and its content digest, known before anything is written."""

    root: Path
    names: list[str]
    key: str
    package: bool
    top_module: str


def plan(root: Path, store: Path, top_module: str = "", exclude: list[Path] | None = None) -> Plan:
    """List, check and digest the tree: the file count and the total size (from the files' sizes, before
    any is read: a 3 GB sparse file is refused, not loaded), then one streamed hash per file."""
    root = root.resolve()
    package = root.name == top_module
    names = source_files(root, [store, *(exclude or [])])
    if len(names) > MAX_FILES:
        raise SnapshotTooLarge(f"{root} holds {len(names)} files to snapshot (limit {MAX_FILES})")
    sizes = {name: (root / name).stat().st_size for name in names}
    if sum(sizes.values()) > MAX_BYTES:
        largest = max(sizes, key=sizes.__getitem__)
        raise SnapshotTooLarge(
            f"{root} holds {sum(sizes.values()) >> 20} MB to snapshot (limit {MAX_BYTES >> 20} MB; "
            f"the largest file: {largest}, {sizes[largest] >> 20} MB)"
        )
    digest = hashlib.sha256(f"{'package' if package else 'dir'}:{root.name}\n".encode())
    for name in names:
        with open(root / name, "rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
        executable = os.access(root / name, os.X_OK)
        digest.update(f"{name}\0{content}\0{int(executable)}\n".encode())
    return Plan(root, names, digest.hexdigest()[:16], package, top_module)


def take(root: Path, store: Path, top_module: str = "", exclude: list[Path] | None = None) -> Snapshot:
    """Copy ``root`` into ``store`` under its content digest (reused when already there). ``top_module``
    is the workload's top-level module: ``root`` is that package's directory, or the directory a plain
    module (or, with "", a command) lives in."""
    return materialise(plan(root, store, top_module, exclude), store)


def materialise(p: Plan, store: Path) -> Snapshot:
    """The planned snapshot's copy in ``store`` (made once per digest)."""
    root, names, key, package, top_module = p.root, p.names, p.key, p.package, p.top_module
    target = store / key
    if not target.is_dir():
        store.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=store, prefix=f".{key}."))
        try:
            for name in names:
                dest = tmp / root.name / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, dest)
                # a snapshot is evidence: not for editing in place; readable by whom the umask lets read
                dest.chmod(dest.stat().st_mode & ~0o222 & ~umask())
            tmp.chmod(0o777 & ~umask())  # mkdtemp makes it 0700
            os.rename(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # another submission of the same code won the rename: use theirs
                raise
    tree = target / root.name
    return Snapshot(key, str(target), str(target if package else tree), str(tree), top_module, str(root), len(names))


def missing(code: dict[str, Any] | None) -> str | None:
    """Why a run's snapshot cannot be used (someone deleted it), or None."""
    if code and not Path(code["sys_path"]).is_dir():
        return f"the run's code snapshot {code['sys_path']} is gone (taken from {code['source']}): submit again"
    return None


PRELOAD_ENV = "ORCH_PRELOAD_CODE"  # the workload module and snapshot a local forkserver imports (job/preload.py)


@contextmanager
def activated(code: dict[str, Any] | None, keep: bool = False) -> Iterator[None]:
    """Inside a job: import the workload from its snapshot for the duration of the run. Modules of the
    snapshotted package already imported from the live tree (a forkserver's preload of another submission,
    an earlier task in the same Ray worker) are dropped first, so the copy is what runs; modules imported
    from this very snapshot (job/preload.py) are kept. ``keep``: leave the snapshot's modules imported."""
    if not code:
        yield
        return
    package = code.get("package") or ""
    root = os.path.join(code["sys_path"], "")

    def of_package() -> list[str]:
        return [m for m in sys.modules if package and (m == package or m.startswith(package + "."))]

    loaded = of_package()
    ours = bool(loaded) and all((getattr(sys.modules[m], "__file__", None) or "").startswith(root) for m in loaded)
    live = {} if ours else {name: sys.modules.pop(name) for name in loaded}
    sys.path.insert(0, code["sys_path"])
    importlib.invalidate_caches()
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(code["sys_path"])
        # `orch run` executes in orch's own process: give it back the modules it had, so objects it holds
        # keep pickling as instances of the classes sys.modules names
        if not (keep or ours):
            for name in of_package():
                del sys.modules[name]
            sys.modules.update(live)
