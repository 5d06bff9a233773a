"""`orch ui`: a real MLflow server over the project's store on loopback, its REST API, a real headless
browser (Debian's chromium) rendering the runs page, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
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


def rest(url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, headers=headers)
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


class UI:
    """`orch ui` over a store, as a real process on a free port; its output collected as it comes."""

    def __init__(self, store):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "ui", "--port", str(self.port), "--tracking-uri", store.uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=store.root,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"},
        )
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def link(self, timeout: float = 120) -> str:
        """The link `orch ui` prints once the server answers (whole, on one line, whatever the width)."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(rf"{re.escape(self.base)}/\S+", self.output)):
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, f"orch ui printed no link within {timeout:.0f} s: {self.output}"
            time.sleep(0.25)
        return found.group(0)

    @property
    def token(self) -> str:
        return re.search(r"[?&]token=([^#&]+)", self.link()).group(1)

    def experiment(self, name: str) -> dict:
        return rest(f"{self.base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}", token=self.token)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def as_another_user(url: str) -> int:
    """What another local account (nobody) gets from ``url``: the attacker a shared login node has."""
    probe = (
        "import sys, urllib.request, urllib.error\n"
        "try: print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
        "except urllib.error.HTTPError as e: print(e.code)"
    )
    out = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe, url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.slow
def test_orch_ui_serves_the_store_to_its_owner_only_and_stops_cleanly(store, chromium, tmp_path):
    experiment_id, names = make_experiment(store.uri)
    ui = UI(store)
    base = ui.base
    try:
        found = ui.experiment("ui_demo")
        assert found["experiment"]["experiment_id"] == experiment_id
        search = {"experiment_ids": [experiment_id], "max_results": 50}
        runs = rest(f"{base}/api/2.0/mlflow/runs/search", search, token=ui.token)["runs"]
        assert len(runs) == 6
        groups = {r["info"]["run_name"] for r in runs if {"key": "orch.role", "value": "group"} in r["data"]["tags"]}
        assert groups == set(names)
        parent = next(r for r in runs if r["info"]["run_name"] == "evolved_net")
        artifact = f"{base}/get-artifact?path=report.md&run_uuid={parent['info']['run_id']}"
        request = urllib.request.Request(artifact, headers={"Authorization": f"Bearer {ui.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:  # what the UI's artifact viewer fetches
            assert resp.read().decode() == "# report of evolved_net\n"

        # without the token: nothing, for this user as for another one; /health only says it is up
        api = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui_demo"
        for url in (api, artifact, f"{base}/", f"{base}/static-files/favicon.ico"):
            assert status_of(url) == 401, url
            assert status_of(url, {"Authorization": "Bearer " + "x" * 43}) == 401, url
            assert status_of(url, {"Cookie": f"orch_ui_{ui.port}={'x' * 43}"}) == 401, url
        if os.geteuid() == 0:
            assert as_another_user(api) == 401 and as_another_user(f"{base}/?token=guess") == 401
        assert status_of(f"{base}/health") == 200
        deleted = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/delete",
            data=json.dumps({"run_id": parent["info"]["run_id"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(deleted, timeout=10)
        assert refused.value.code == 401
        assert rest(f"{base}/api/2.0/mlflow/runs/get?run_id={parent['info']['run_id']}", token=ui.token)
        # the token is in no process's command line (`ps` shows those to every user)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert ui.token.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                continue

        link = ui.link()
        runs_link = link.replace("/experiments?", f"/experiments/{experiment_id}/runs?")
        dom = headless(chromium, runs_link, tmp_path / "c", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "ui_demo" in dom.stdout and all(name in dom.stdout for name in names), dom.stdout[-3000:]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "mlflow_runs.png"
        shot.unlink(missing_ok=True)
        result = headless(chromium, link, tmp_path / "c", f"--screenshot={shot}")
        assert result.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        pixels = matplotlib.image.imread(shot)
        assert pixels.shape[:2] == (900, 1400) and pixels.std() > 0.05  # a rendered page, not a blank one
        # one uvicorn worker, no job runner and no huey consumers (GenAI jobs orch does not use)
        family = [p for p in server_processes(ui.port)]
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family]
        assert not any(b"huey" in c for c in commands), commands
    finally:
        code = ui.stop()
    assert code == 0, ui.output
    assert "stopping the MLflow UI" in ui.output
    assert server_processes(ui.port) == []  # the server and its workers are gone
    with socket.socket() as s:  # and the port is free again (REUSEADDR: closed connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ui.port))
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


@pytest.mark.slow
def test_clicking_from_the_printed_link_lands_on_training_runs_with_their_metrics(store, chromium, tmp_path):
    """What a lab member does: open the link `orch ui` prints, click the experiment, and land on its training
    runs (not MLflow 3's GenAI pages) with the main metric's columns shown; then a group's parent run shows
    its seeds' mean."""
    from playwright.sync_api import sync_playwright

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
    ui = UI(store)
    try:
        link = ui.link()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.goto(link)
            assert "token=" not in tab.url  # the token left the address bar (and the history) at once
            tab.get_by_role("link", name="ui_real").click(timeout=60_000)
            tab.get_by_role("columnheader", name="final_loss_mean").first.wait_for(timeout=60_000)
            headers = [h.inner_text().strip() for h in tab.get_by_role("columnheader").all()]
            assert "final_loss" in headers and "final_loss_mean" in headers, headers
            assert f"/experiments/{experiment_id}" in tab.url and "genai" not in tab.url, tab.url
            text = tab.inner_text("body")
            assert "low" in text and "high" in text and "Detect Issues" not in text, text[:2000]
            mode = tab.evaluate("localStorage.getItem('mlflow.workflowType_v1')")
            assert mode == '"machine_learning"'
            tab.screenshot(path=str(tmp_path / "runs.png"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "clicked_runs.png").write_bytes((tmp_path / "runs.png").read_bytes())

            tab.get_by_role("link", name="low", exact=True).first.click()
            mean = parent.metrics["final_loss_mean"]
            tab.get_by_text("final_loss_mean").first.wait_for(timeout=60_000)
            run_text = " ".join(tab.inner_text("body").split())
            assert f"/runs/{parent.run_id}" in tab.url, tab.url
            assert f"{mean:.6f}"[:7] in run_text and "final_loss_n 2" in run_text.replace("\t", " "), run_text[:3000]
            browser.close()
    finally:
        code = ui.stop()
    assert code == 0, ui.output
