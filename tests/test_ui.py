"""`orch ui`: a real MLflow server over the project's store on loopback, its REST API, a real headless
browser (Debian's chromium) rendering the runs page, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import free_port

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Installed from Debian when missing (CI is a fresh root Debian 12: install, never skip)."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"], env=env, check=True, capture_output=True
            )
            subprocess.run(install, env=env, check=True, capture_output=True)
    assert CHROMIUM.exists()
    return CHROMIUM


def headless(chromium: Path, url: str, tmp: Path, *action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}",
            "--window-size=1400,900",
            "--virtual-time-budget=8000",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_experiment(uri: str) -> tuple[str, list[str]]:
    """A small orch-shaped experiment written straight through the Ledger: two groups of two seeds."""
    from mlflow.entities import Metric

    from orchestrator.tracking.ledger import Ledger

    ledger = Ledger(uri)
    experiment_id = ledger.experiment_id("ui_demo", create=True)
    names = []
    for variant, offset in (("baseline_net", 0.5), ("evolved_net", 0.2)):
        parent = ledger.create_run(
            experiment_id,
            variant,
            {"orch.role": "group", "orch.variant": variant, "orch.group": variant, "orch.metric": "final_loss"},
            {"offset": offset},
            status="RUNNING",
        )
        for seed in (0, 1):
            run_id = ledger.create_run(
                experiment_id,
                f"{variant}/seed{seed}",
                {"orch.role": "seed", "orch.variant": variant, "orch.seed": str(seed)},
                {"offset": offset},
                parent_id=parent,
            )
            ledger.client.log_batch(run_id, metrics=[Metric("final_loss", offset + 0.01 * seed, 0, 0)])
            ledger.set_status(run_id, "FINISHED")
        ledger.log_text(parent, f"# report of {variant}\n", "report.md")
        ledger.set_status(parent, "FINISHED")
        names.append(variant)
    return experiment_id, names


def rest(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def server_processes(port: int) -> list[int]:
    """Processes whose command line is an mlflow server on this (unique, random) port."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mlflow" in b" ".join(args) and str(port).encode() in args and b"ui" not in args:
            pids.append(int(cmdline.parent.name))
    return pids


def start_ui(store) -> tuple[subprocess.Popen, int]:
    """`orch ui` over the store, as a real process on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", "--port", str(port), "--tracking-uri", store.uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=store.root,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )
    return proc, port


def wait_for_experiment(proc: subprocess.Popen, base: str, name: str, timeout: float = 120) -> dict:
    """The server's answer for experiment ``name`` once it answers (a first start takes seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            return rest(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
        except OSError:
            assert time.monotonic() < deadline, f"orch ui: the server did not answer within {timeout:.0f} s"
            time.sleep(0.5)


@pytest.mark.slow
def test_orch_ui_serves_the_store_to_rest_and_a_browser(store, chromium, tmp_path):
    experiment_id, names = make_experiment(store.uri)
    proc, port = start_ui(store)
    base = f"http://127.0.0.1:{port}"
    try:
        found = wait_for_experiment(proc, base, "ui_demo")
        assert found["experiment"]["experiment_id"] == experiment_id
        runs = rest(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 50})[
            "runs"
        ]
        assert len(runs) == 6
        groups = {r["info"]["run_name"] for r in runs if {"key": "orch.role", "value": "group"} in r["data"]["tags"]}
        assert groups == set(names)
        parent = next(r for r in runs if r["info"]["run_name"] == "evolved_net")
        with urllib.request.urlopen(
            f"{base}/get-artifact?path=report.md&run_uuid={parent['info']['run_id']}", timeout=10
        ) as resp:  # what the UI's artifact viewer fetches
            assert resp.read().decode() == "# report of evolved_net\n"

        page = f"{base}/#/experiments/{experiment_id}/runs"
        dom = headless(chromium, page, tmp_path / "chrome", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "ui_demo" in dom.stdout and all(name in dom.stdout for name in names), dom.stdout[-3000:]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "mlflow_runs.png"
        shot.unlink(missing_ok=True)
        result = headless(chromium, page, tmp_path / "chrome", f"--screenshot={shot}")
        assert result.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        pixels = matplotlib.image.imread(shot)
        assert pixels.shape[:2] == (900, 1400) and pixels.std() > 0.05  # a rendered page, not a blank one
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = proc.stdout.read()
    assert code == 0, output
    assert f"http://127.0.0.1:{port}" in output and "stopping the MLflow UI" in output
    assert server_processes(port) == []  # the server and its workers are gone
    with socket.socket() as s:  # and the port is free again (REUSEADDR: closed connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_orch_ui_refuses_a_busy_port_and_a_missing_store(store, tmp_path):
    make_experiment(store.uri)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = store.orch("ui", "--port", str(port), "--tracking-uri", store.uri)
    assert result.exit_code == 2 and f"port {port} is in use" in result.output
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    result = store.orch("ui", "--tracking-uri", missing)
    assert result.exit_code == 2 and "no MLflow store" in result.output
    assert not (tmp_path / "nothing.db").exists()


def page_text(chromium: Path, url: str, tmp: Path) -> str:
    """The text a person sees on the page, once the app rendered it."""
    import html
    import re

    dom = headless(chromium, url, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


@pytest.mark.slow
def test_the_ui_opens_on_training_runs_and_a_parent_shows_its_group_mean(store, chromium, tmp_path):
    """What a lab member clicks: the link `orch ui` prints opens the experiment's runs (not MLflow 3's GenAI
    traces page), and a group's parent run shows its seeds' mean as soon as they finished."""
    from orchestrator.tracking.ui import page

    spec = store.spec(
        {
            "name": "ui_real",
            "workload": "smoke",
            "params": {"steps": 4},
            "variants": {"low": {"offset": 0.0}, "high": {"offset": 1.0}},
        }
    )
    store.orch("submit", str(spec), "--seeds", "2", check=True)
    ledger = store.ledger()
    experiment_id = ledger.experiment_id("ui_real")
    parent = next(r for r in ledger.runs(experiment_id, role="group") if r.tags["orch.variant"] == "low")
    proc, port = start_ui(store)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_experiment(proc, base, "ui_real")
        runs_page = page_text(chromium, page(base, experiment_id), tmp_path / "chrome")
        assert "Run Name" in runs_page and "low" in runs_page and "high" in runs_page, runs_page[:2000]
        assert "No data available for the selected time range" not in runs_page  # the GenAI overview
        parent_page = page_text(chromium, page(base, experiment_id, parent.run_id), tmp_path / "chrome")
        mean = parent.metrics["final_loss_mean"]
        assert "final_loss_mean" in parent_page and f"{mean:.6f}"[:7] in parent_page, parent_page[:3000]
        assert "final_loss_n 2" in parent_page
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert page(base) in proc.stdout.read()  # the printed link is the training view
