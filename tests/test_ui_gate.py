"""`orch ui`'s token gate (orchestrator/tracking/ui_gate.py) as an ASGI app, request by request: who gets in,
what the printed link does, and the landing page's script. The real server and browser: tests/test_ui.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestrator.tracking.ui_gate import TOKEN_QUERY, TokenGate, cookie_name, landing_script

TOKEN = "t" * 43
PAGE = b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>"


async def inner_app(scope, receive, send):
    """Stands for MLflow's app: the landing page as HTML, the rest as JSON naming the path."""
    if scope["path"] == "/":
        body, kind = PAGE, b"text/html; charset=utf-8"
    else:
        body, kind = json.dumps({"path": scope["path"]}).encode(), b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def call(gate, path="/", query="", headers=(), kind="http"):
    messages = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        messages.append(message)

    scope = {
        "type": kind,
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(gate(scope, receive, send))
    if kind == "websocket":
        return messages[0], {}, b""
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def gate():
    return TokenGate(inner_app, TOKEN, 5000)


def test_without_the_token_everything_but_health_is_refused(gate):
    for path in ("/", "/api/2.0/mlflow/experiments/search", "/get-artifact", "/static-files/main.js", "/ajax-api/x"):
        status, _, body = call(gate, path)
        assert status == 401 and b"Open the link `orch ui` printed" in body, path
    assert call(gate, "/health")[0] == 200
    wrong = [
        {"authorization": "Bearer " + "u" * 43},
        {"authorization": f"Basic {TOKEN}"},
        {"cookie": f"{cookie_name(5000)}={'u' * 43}"},
        {"cookie": f"{cookie_name(5001)}={TOKEN}"},  # another orch ui's cookie: one name per port
        {"cookie": '"; =;;;\x00 broken'},
    ]
    for headers in wrong:
        assert call(gate, "/api/x", headers=tuple(headers.items()))[0] == 401, headers
    assert call(gate, "/", query=f"{TOKEN_QUERY}=guess")[0] == 401
    assert call(gate, "/", query=f"{TOKEN_QUERY}={TOKEN[:-1]}")[0] == 401
    closed, _, _ = call(gate, "/ws", kind="websocket")
    assert closed == {"type": "websocket.close", "code": 1008}


def test_the_printed_link_sets_a_private_cookie_and_drops_the_token_from_the_address(gate):
    status, headers, _ = call(gate, "/", query=f"{TOKEN_QUERY}={TOKEN}&o=1")
    assert status == 303 and headers["location"] == "/?o=1" and headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(5000)}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # the cookie the browser now sends, or a script's bearer header, lets it in
    for sent in ({"cookie": f"other=1; {cookie_name(5000)}={TOKEN}"}, {"authorization": f"Bearer {TOKEN}"}):
        status, _, body = call(gate, "/api/2.0/mlflow/runs/search", headers=tuple(sent.items()))
        assert status == 200 and json.loads(body) == {"path": "/api/2.0/mlflow/runs/search"}


def test_the_landing_page_starts_on_training_runs_with_each_experiments_metric_columns():
    gate = TokenGate(inner_app, TOKEN, 5000)
    status, headers, body = call(gate, "/", headers=(("authorization", f"Bearer {TOKEN}"),))
    assert status == 200 and int(headers["content-length"]) == len(body)
    head = b"<!doctype html><html><head>"
    assert body.startswith(head + b"<script>") and body.endswith(PAGE[len(head) :])
    assert b"mlflow.workflowType_v1" in body and b"machine_learning" in body
    # any other response passes untouched
    status, _, body = call(gate, "/api/x", headers=(("authorization", f"Bearer {TOKEN}"),))
    assert body == b'{"path": "/api/x"}'

    script = landing_script({"7": ["acc_mean", "acc"], "8": ["x</script><script>alert(1)//"]}).decode()
    inside = script.removeprefix("<script>").removesuffix("</script>")
    assert "<" not in inside  # no metric name closes the script or opens a comment in it
    seeds = json.loads(inside[inside.index("d=") + 2 : inside.index(";s.setItem")])
    assert json.loads(seeds['MLflowLocalStorage-1.1-ExperimentPage-["8"]-ReactComponentState'])["selectedColumns"] == [
        "metrics.`x</script><script>alert(1)//`"
    ]
    state = json.loads(seeds['MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'])
    assert state == {"selectedColumns": ["metrics.`acc_mean`", "metrics.`acc`"]}
    assert seeds["mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"] == "true"
    assert "if(!s.getItem(k))" in script  # a browser's own column choice is kept


def test_a_short_token_is_refused():
    with pytest.raises(ValueError):
        TokenGate(inner_app, "short", 5000)
