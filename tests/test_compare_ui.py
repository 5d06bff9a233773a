"""`orch compare --curves` as the MLflow UI shows it: a real `mlflow server` over the store (started as
`orch ui` starts it, without `orch ui`'s token gate, which another change is reworking), its REST API, and a
headless Chromium rendering a group parent's run page, where the per-step mean curve and its band are."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
MLFLOW_SERVER = [sys.executable, "-m", "mlflow", "server", "--workers", "1"]  # one worker, as `orch ui` runs it


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Installed from Debian when missing (as tests/test_ui.py does: install, never skip)."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["update"], ["install", "-y", "chromium"]):
            apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", *step]
            subprocess.run(apt, env=env, check=True, capture_output=True)
    assert CHROMIUM.exists()
    return CHROMIUM


def rendered_text(chromium: Path, url: str, tmp: Path) -> str:
    """The text of the page once the app rendered it (scripts and styles dropped)."""
    dom = subprocess.run(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={tmp}",
            "--window-size=1400,900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def rest(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_a_group_parent_shows_its_mean_curve_in_the_ui(store, chromium, tmp_path):
    spec = store.spec(
        {
            "name": "bands",
            "workload": "smoke",
            "params": {"steps": 5, "noise": 0.1},
            "seeds": 3,
            "variants": {"low": {"offset": 0.0}, "high": {"offset": 0.5}},
        }
    )
    store.orch("submit", str(spec), check=True)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "compare", "bands", "--curves", "--json", "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    curve = json.loads(result.stdout)["curves"]["loss"]["low"]
    ledger = store.ledger()
    experiment_id = ledger.experiment_id("bands")
    parent = next(r for r in ledger.runs(experiment_id, role="group") if r.tags["orch.variant"] == "low")

    port = free_port()
    server = subprocess.Popen(
        [*MLFLOW_SERVER, "--backend-store-uri", store.uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=store.root,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "mlflow server exited"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):  # answers "OK"
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer in 120 s"
                time.sleep(0.5)
        # what the chart view reads: one point per step of each band's line
        query = f"{base}/api/2.0/mlflow/metrics/get-history?run_id={parent.run_id}&metric_key="
        for suffix, key in (("mean", "mean"), ("ci_low", "low"), ("ci_high", "high")):
            points = rest(query + f"loss_{suffix}")["metrics"]
            assert sorted((p["step"], p["value"]) for p in points) == list(zip(curve["steps"], curve[key], strict=True))
        # the parent's run page as a person sees it: its metrics list the curve's three lines
        page = f"{base}/#/experiments/{experiment_id}/runs/{parent.run_id}?workflowType=machine_learning"
        text = rendered_text(chromium, page, tmp_path / "chrome")
        assert "loss_mean" in text and "loss_ci_low" in text and "loss_ci_high" in text, text[:3000]
        charts = rendered_text(chromium, page.replace("?", "/model-metrics?"), tmp_path / "chrome")
        assert "loss_mean" in charts, charts[:3000]
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
