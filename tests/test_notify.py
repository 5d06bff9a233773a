"""Notifications (the spec's `notify:`): a failed run, a stalled run and a submission's end reach a real HTTP
server on 127.0.0.1 and a command (argv, no shell) that appends what it gets to a file, exactly once each,
whichever orch command meets the event first; an unreachable webhook costs a warning and a retry, never a run;
a bad section is refused before anything is written."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import free_port, submitting, wait_for


@pytest.fixture
def hook():
    """A webhook on 127.0.0.1 that records every JSON body POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/orch", received
    server.shutdown()
    server.server_close()


def appender(path) -> list[str]:
    """A command that appends the event's JSON (its stdin) to ``path``, one line per event."""
    code = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read().strip() + '\\n')"
    return [sys.executable, "-c", code, str(path)]


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_failure_and_the_end_are_notified_once_to_a_webhook_and_a_command(store, hook):
    url, received = hook
    log = store.root / "events.jsonl"
    spec = {
        "name": "notified",
        "workload": "smoke",
        "params": {"steps": 4},
        "seeds": 2,
        "variants": {"ok": {}, "broken": {"fail_at_step": 2}},
        "notify": {"webhook": url, "command": appender(log), "on": ["failure", "end"]},
    }
    assert store.orch("submit", str(store.spec(spec))).exit_code == 1  # some runs failed
    failures = [e for e in received if e["event"] == "failure"]
    assert len(failures) == 2 and {e["seed"] for e in failures} == {0, 1}
    assert all(e["group"] == "broken" and "failing at step 2" in e["error"] and e["attempt"] == 1 for e in failures)
    (end,) = [e for e in received if e["event"] == "end"]
    assert end["summary"] == "notified: 4 runs ended: 2 finished, 2 failed, 0 killed"
    assert sorted(e["event"] for e in lines(log)) == ["end", "failure", "failure"]
    # status and sync meet the same events again: nothing is sent twice
    store.orch("status", "notified", check=True)
    store.orch("sync", "--workdir", str(store.workdir), check=True)
    assert len(received) == 3 and len(lines(log)) == 3
    # a resubmission reruns the failed runs: their new attempts are new events, and so is this submission's end
    assert store.orch("submit", str(store.spec(spec))).exit_code == 1
    assert sorted(e.get("attempt", 0) for e in received if e["event"] == "failure") == [1, 1, 2, 2]
    assert [e["runs"] for e in received if e["event"] == "end"] == [4, 2]


def test_a_stall_is_notified_once(store, hook):
    url, received = hook
    spec = store.spec(
        {
            "name": "silent",
            "workload": "smoke",
            "params": {"steps": 2, "sleep_s": 120},
            "tracking": {"stall_after_s": 1},
            "notify": {"webhook": url, "on": ["stall"]},
        }
    )
    with submitting(store, spec):

        def stalled():
            store.orch("status", "silent")
            return [e for e in received if e["event"] == "stall"]

        (event,) = wait_for(stalled, timeout=90, what="the stall notification")
        assert event["status"] == "STALLED" and event["threshold_s"] == 1 and event["silent_s"] > 1
        store.orch("status", "silent")
        assert len([e for e in received if e["event"] == "stall"]) == 1


def test_an_unreachable_webhook_is_a_warning_and_the_next_command_sends_it(store, hook):
    url, received = hook
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    spec = {"name": "later", "workload": "smoke", "params": {"steps": 2}, "notify": {"webhook": dead, "on": ["end"]}}
    result = store.orch("submit", str(store.spec(spec)), check=True)
    assert "did not reach its webhook" in " ".join(result.output.split())
    (run,) = store.seed_runs("later")
    assert run.status == "FINISHED"  # a notification never costs a run
    # the webhook comes back (the spec now names the live one, as a lab fixing its URL would): status sends it
    pending = next(store.workdir.glob("later/.notify-end.json"))
    pending.write_text(pending.read_text().replace(dead, url))
    store.orch("status", "later", check=True)
    assert [e["event"] for e in received] == ["end"]
    store.orch("status", "later", check=True)
    assert len(received) == 1


@pytest.mark.parametrize(
    "notify, expected",
    [
        ({"webhook": "ftp://x"}, "expected an http:// or https:// URL"),
        ({"command": []}, "expected [executable, arg, ...]"),
        ({"on": ["failure"]}, "needs a webhook or a command"),
        ({"webhook": "http://x", "on": ["sometimes"]}, "notify.on.0"),
        ({"webhook": "http://x", "on": []}, "notify.on"),
    ],
)
def test_a_bad_notify_section_is_refused_before_anything_is_written(store, notify, expected):
    result = store.orch("submit", str(store.spec({"name": "bad", "workload": "smoke", "notify": notify})))
    assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
    assert not (store.root / "mlflow.db").exists()


def test_a_cluster_profile_gives_its_notify_section_to_the_specs_that_have_none(tmp_path, monkeypatch):
    from orchestrator.backends.slurm_profile import apply_profile
    from orchestrator.errors import InputError
    from orchestrator.spec.spec import Spec

    monkeypatch.setenv("ORCH_CLUSTER_DIR", str(tmp_path))
    (tmp_path / "lab.yaml").write_text("partition: gpu\nnotify: {webhook: 'https://hooks.example.org/x'}\n")
    spec = Spec.model_validate({"name": "x", "workload": "smoke", "backend": "slurm", "cluster": "lab"})
    assert apply_profile(spec).notify.webhook == "https://hooks.example.org/x"
    own = Spec.model_validate({**spec.model_dump(), "notify": {"command": ["true"]}})
    assert apply_profile(own).notify.command == ["true"]  # the spec's own wins
    (tmp_path / "lab.yaml").write_text("notify: {webhook: 'ftp://x'}\n")
    with pytest.raises(InputError, match="expected an http") as err:
        apply_profile(spec)
    assert err.value.field == "notify.webhook" and "lab.yaml" in str(err.value.source)


def test_processes_meeting_one_failure_at_once_send_it_once(store, hook):
    """Eight threads (as eight orch commands would) meet the same failed run at once: one notification."""
    from orchestrator.job.journal import JournalWriter
    from orchestrator.job.rundir import RunDir
    from orchestrator.tracking import notify

    url, received = hook
    run_dir = RunDir(store.root / "run")
    run_dir.create({"run": {"variant": "v", "seed": 0}, "run_id": "r", "notify": {"webhook": url, "on": ["failure"]}})
    journal = JournalWriter(run_dir.journal)
    journal.write("start", attempt=1)
    journal.write("end", status="FAILED", final={}, error="boom")
    journal.close()
    threads = [threading.Thread(target=notify.run_ended, args=(run_dir,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["error"] for e in received] == ["boom"]
