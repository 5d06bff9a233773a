"""The backend contract carries itself: a backend is one module registered by an installed package in the
``orch.backends`` entry-point group, nothing in orch edited (tests/plugins/detached_backend.py); it
overrides only what it needs, and a registration that is not a backend is refused with its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import support

from orchestrator.backends.base import Backend
from orchestrator.spec import backends

PLUGINS = Path(__file__).resolve().parent / "plugins"
SMOKE = {"name": "viaplugin", "workload": "smoke", "params": {"steps": 3, "noise": 0.0}, "seeds": 2}


@pytest.fixture
def registered(store, monkeypatch):
    """An installed package (a dist-info folder on sys.path) that registers two backends: a real one and
    a name that points at something that is not a backend."""
    info = store.root / "site" / "orch_detached-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: orch-detached\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[orch.backends]\ndetached = detached_backend:DetachedBackend\n"
        "notabackend = detached_backend:ended_last\n"
        "local = detached_backend:DetachedBackend\n"
    )
    monkeypatch.syspath_prepend(str(store.root / "site"))
    monkeypatch.syspath_prepend(str(PLUGINS))
    backends.backends.cache_clear()
    yield
    backends.backends.cache_clear()


def test_a_registered_backend_runs_a_submission_end_to_end(store, registered):
    assert "detached" in backends.names()
    result = store.orch("submit", str(store.spec(SMOKE)), "--backend", "detached", check=True)
    assert "detached processes, one per run" in result.output  # its describe() hook
    assert "queued 2 runs" in result.output  # not blocking: submit returned at once, as on Slurm

    def finished():  # orch status polls the backend and ingests the journals
        store.orch("status", "viaplugin", check=True)
        return [r for r in store.seed_runs("viaplugin") if r.status == "FINISHED"]

    runs = support.wait_for(lambda: len(finished()) == 2 and finished(), timeout=120, what="the runs to finish")
    assert {r.tags["orch.backend"] for r in runs} == {"detached"}
    # a second submit finds them finished: nothing is queued again
    again = store.orch("submit", str(store.spec(SMOKE)), "--backend", "detached", check=True)
    assert "0 to run" in " ".join(again.output.split())


def test_a_registration_that_is_not_a_backend_is_refused_by_name(store, registered):
    result = store.orch("submit", str(store.spec(SMOKE)), "--backend", "notabackend")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "backend 'notabackend' (detached_backend:ended_last) is not a subclass" in text
    assert not (store.root / "mlflow.db").exists() and not store.workdir.exists()


def test_a_package_cannot_take_over_a_built_in_backend(registered):
    assert backends.backends()["local"] == backends.BUILT_IN["local"]


def test_an_unknown_backend_lists_the_registered_ones(store, registered):
    result = store.orch("submit", str(store.spec(SMOKE)), "--backend", "detachd")
    assert result.exit_code == 2
    assert "did you mean 'detached'" in " ".join(result.output.split())


def test_optional_hooks_default_to_nothing_and_required_ones_are_enforced():
    class Minimal(Backend):
        name, blocking = "minimal", True

        @classmethod
        def from_spec(cls, spec, **options):
            return cls()

        def submit(self, run_dirs):
            return []

        def poll(self, jobs):
            return []

        def cancel(self, jobs):
            pass

    minimal = Minimal.from_spec(None)
    assert minimal.describe() is None and minimal.job_id == "" and not minimal.starts_before_recording
    assert minimal.check_submission(10**6) is None and minimal.warm({}) is None

    class Incomplete(Backend):
        name, blocking = "incomplete", True

        def submit(self, run_dirs):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]
