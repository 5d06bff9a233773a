"""A job imports the standard library, its environment and its code snapshot, never the directory it was
started from. Python puts that directory first on ``sys.path`` for ``python -c`` (the local backend's
forkserver), ``python -m`` (submitit's Slurm entry point) and Ray's workers: a ``colorsys.py`` beside the
user's spec would then shadow the standard library in every run. Imported first in the forkserver; called
at the start of a Slurm or Ray task. The workload's own code comes first through ``snapshot.activated``."""

from __future__ import annotations

import os
import sys


def drop_working_directory() -> None:
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]


drop_working_directory()
