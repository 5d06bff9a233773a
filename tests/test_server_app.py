"""orch's route on `orch server` (orchestrator/tracking/server_app.py), request by request in this process:
what it refuses and how; the real servers (with and without authentication) in test_server.py and
test_server_security.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from mlflow.entities import Metric

from orchestrator.tracking import server_app
from orchestrator.tracking.server_app import ROUTE, OrchRoutes, encode_writes, parse_writes
from orchestrator.tracking.sqlwrite import RunWrite


async def mlflow_stand_in(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"mlflow"})


def call(app, path=ROUTE, method="POST", body=b"", headers=()):
    messages = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(k.encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], body


def test_writes_travel_as_json_and_back_unchanged():
    writes = [
        RunWrite(
            "a" * 32,
            [Metric("loss", 0.5, 1000, 3), Metric("acc", float("nan"), 1001, 3), Metric("g", float("-inf"), 1, 3)],
            {"t": "v"},
            "RUNNING",
        ),
        RunWrite("b" * 32, [], {}, "FINISHED", True, ("orch.error",)),
    ]
    back = parse_writes(json.loads(json.dumps(encode_writes(writes), allow_nan=False)))  # strict, as requests
    assert [(w.run_id, w.tags, w.status, w.ended, w.drop_tags) for w in back] == [
        (w.run_id, w.tags, w.status, w.ended, w.drop_tags) for w in writes
    ]
    assert [(m.key, m.timestamp, m.step) for m in back[0].metrics] == [("loss", 1000, 3), ("acc", 1001, 3), ("g", 1, 3)]
    assert back[0].metrics[1].value != back[0].metrics[1].value and back[0].metrics[2].value == float("-inf")


def test_everything_but_the_route_is_mlflows_and_bad_requests_are_refused(monkeypatch):
    app = OrchRoutes(mlflow_stand_in, authenticate=False)
    assert call(app, "/api/2.0/mlflow/runs/search") == (200, b"mlflow")
    assert call(app, method="GET")[0] == 405
    for bad in (
        b"not json",
        b'{"run_id": 1}',
        b'[{"metrics": []}]',
        b'[{"run_id": "x", "metrics": [[1, 2]]}]',
        b'[{"run_id": "x", "status": 3}]',
        b'[{"run_id": "x", "tags": []}]',
    ):
        status, body = call(app, body=bad)
        assert status == 400 and b"not a list of run writes" in body, bad
    monkeypatch.setattr(server_app, "MAX_BODY", 100_000)
    assert call(app, body=b"[" + b" " * 200_000 + b"]")[0] == 413  # read in chunks, refused past the cap


def test_with_authentication_only_an_administrator_writes(monkeypatch):
    app = OrchRoutes(mlflow_stand_in, authenticate=True)
    asked = []

    def refusal(scope):
        asked.append(dict(scope["headers"]))
        return (403, "x is not an administrator")

    monkeypatch.setattr(server_app, "_refusal", refusal)
    status, body = call(app, body=b"[]", headers=(("authorization", "Basic eDp5"),))
    assert status == 403 and b"administrator" in body and asked
    monkeypatch.setattr(server_app, "_refusal", lambda scope: (401, "basic credentials expected"))
    assert call(app, body=b"[]")[0] == 401


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!notbase64", "Basic /w=="])
def test_malformed_credentials_are_refused_before_any_lookup(header):
    scope = {"headers": [(b"authorization", header.encode())]}
    status, _ = server_app._refusal(scope) or (200, "")
    assert status == 401
