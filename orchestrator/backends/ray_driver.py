"""The detached Ray driver: ``python -m orchestrator.backends.ray_driver FOLDER``, started by
``DetachedRayBackend.submit`` in its own session (no terminal), so the runs outlive ``orch submit``.

It owns the Ray tasks of one submission (``FOLDER/manifest.json``: the run directories, their resources),
and tells the world about them through files on the shared filesystem, never through Ray, so ``orch status``
and ``orch cancel`` work from any shell without connecting to Ray:

- ``FOLDER/driver.json``, rewritten every ``HEARTBEAT_S``: pid, host, time, ``submitted``, ``ended``, and
  ``failures`` (run directory -> why its task ended without the run journaling an end: retries exhausted
  after node deaths, an OOM kill);
- each run directory's ``cancelled`` marker (``orch cancel``): the driver cancels that run's task (a packed
  run is stopped by its pack, job/pack.py, without touching the others).

It exits once every task ended. SIGTERM (``kill`` of the driver) cancels every task first."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.ray import DRIVER_FILE, HEARTBEAT_S, RayBackend, read_json
from orchestrator.job.journal import ended_last
from orchestrator.job.rundir import RunDir, atomic_write


class Driver:
    def __init__(self, folder: Path):
        self.folder = folder
        self.manifest = read_json(folder / "manifest.json")
        self.failures: dict[str, str] = {}
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "submitted": False,
            "ended": False,
        }

    def beat(self, **update: Any) -> None:
        self.state.update(update, t=time.time(), failures=self.failures)
        atomic_write(self.folder / DRIVER_FILE, json.dumps(self.state).encode())

    def run(self) -> int:
        from orchestrator.spec.spec import Resources

        self.beat()
        resources = Resources.model_validate(self.manifest["resources"])
        backend = RayBackend(
            self.manifest.get("address"),
            mem_gb=resources.mem_gb,
            resources=resources,
            time_limit_s=self.manifest.get("time_limit_s"),
        )
        tasks = backend.submit_tasks([RunDir(Path(p)) for p in self.manifest["runs"]])
        ray = backend.ray
        self.beat(submitted=True, tasks=len(tasks))
        stop = {"asked": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        pending = {ref.hex(): (pack, ref) for pack, ref in tasks}
        cancelled: set[str] = set()
        last = 0.0
        while pending:
            done, _ = ray.wait([ref for _, ref in pending.values()], num_returns=1, timeout=0.5, fetch_local=False)
            for ref in done:
                pack, _ = pending.pop(ref.hex())
                self.judge(ray, ref, pack)
            for key, (pack, ref) in pending.items():
                wanted = [r for r in pack if r.cancelled() is not None]
                if key not in cancelled and (stop["asked"] or (wanted and len(pack) == 1)):
                    ray.cancel(ref)  # KeyboardInterrupt in the task: the worker journals KILLED
                    cancelled.add(key)
            if time.monotonic() - last > HEARTBEAT_S:
                self.beat()
                last = time.monotonic()
        self.beat(ended=True)
        return 0

    def judge(self, ray: Any, ref: Any, pack: list[RunDir]) -> None:
        """A task ended: for each of its runs that did not journal an end, say why."""
        try:
            ray.get(ref, timeout=0)
            reason = "the Ray task returned without the run journaling an end"
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else ""
            reason = f"ray task ended: {type(err).__name__}: {first}"
        for run_dir in pack:
            if not ended_last(run_dir.journal):
                self.failures[str(run_dir.path)] = reason


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m orchestrator.backends.ray_driver FOLDER", file=sys.stderr)
        return 2
    return Driver(Path(argv[0])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
