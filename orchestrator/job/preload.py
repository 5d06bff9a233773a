"""What the local backend's forkserver imports once, after the worker, so that every run's process (a fork
of it) starts with it instead of importing it again (``ORCH_PRELOAD_CODE`` says what):

- the parent's main script, as multiprocessing's own ``"__main__"`` preload would if it worked: Python 3.11
  never hands the script's path to the forkserver (it asks for a key that preparation data does not have),
  so every child re-ran the script as ``__mp_main__`` (the `orch` entry script: the whole CLI, ~80 ms);
- numpy's random module (``seed_everything``) and threadpoolctl with its scan of the loaded BLAS/OpenMP
  libraries done;
- the workload as the job will run it: from the submission's code snapshot, so that ``snapshot.activated``
  finds the snapshot's modules already imported.
Measured on a 1-step run: a run's process went from ~120 ms to ~40 ms.

A forkserver already running (a second submission from the same Python process) keeps what it preloaded;
its runs then import their snapshot themselves, as before: slower, never other code."""

from __future__ import annotations

import importlib
import json
import os
import sys

import numpy.random  # noqa: F401 - imported for the forks
from threadpoolctl import ThreadpoolController

from orchestrator.job import snapshot, worker
from orchestrator.job.snapshot import PRELOAD_ENV


def _import_main(path: str | None) -> None:
    if not path or not os.path.isfile(path):
        return
    from multiprocessing import process, spawn
    # as the forkserver does: a script that starts processes when imported fails instead of forking on
    process.current_process()._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(path)
    except Exception as err:  # noqa: BLE001 - each child then imports it, as multiprocessing always did
        print(f"orch: preloading the main script {path} failed ({err})", file=sys.stderr)
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]


def _import_workload(wanted: dict) -> None:
    module = wanted.get("module")
    if not module:
        return
    try:
        with snapshot.activated(wanted.get("code"), keep=True):
            importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - the run itself reports a broken workload, with its traceback
        print(f"orch: preloading {module} failed ({err}); each run imports it", file=sys.stderr)


_wanted = json.loads(os.environ.pop(PRELOAD_ENV, "") or "{}")
_import_main(_wanted.get("main"))
_import_workload(_wanted)
worker.THREADPOOLS = ThreadpoolController()  # after the workload: torch's OpenMP is among the libraries
