"""What `orch server start` serves: MLflow's app (with its basic-auth app by default) and one route of orch's,
``POST /orch/api/1/record``, that records the journals of many runs in one transaction.

MLflow's REST API writes one run per request (``log-batch``), so an orchestrator ingesting the journals of
runs that ended together through a server pays a round trip and a transaction per run and per 1,000 metrics:
1.3-1.8x sqlite-direct throughput where writing the database itself reaches 4x. This route takes the runs'
writes together and applies them with the same one-transaction writer orch uses on a database it reaches
itself (``sqlwrite.py``: MLflow's table models, validation and latest-metric rule). Anything that writer
cannot do as MLflow's client would (a row a job's live push already inserted, a deleted run) is answered
409 with nothing committed, and the caller writes those runs through MLflow's own API.

With authentication on, the route asks for the same credentials as the rest of the server and takes writes
from an administrator only: they may touch any run. Served by ``mlflow server --app-name orch-server``
(the ``mlflow.app`` entry point), ``ORCH_SERVER_AUTH=1`` selecting MLflow's basic-auth app underneath."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
from typing import Any

from orchestrator.tracking.ui_gate import App, Receive, Scope, Send, respond

ROUTE = "/orch/api/1/record"
AUTH_ENV, LOCK_ENV = "ORCH_SERVER_AUTH", "ORCH_SERVER_LOCK"
MAX_BODY = 256 * 1024 * 1024  # 16 runs x 2,000 metrics is ~2 MB of JSON: room for a large burst, not more


class OrchRoutes:
    """An ASGI app: orch's route, and ``inner`` (MLflow's app) for everything else."""

    def __init__(self, inner: App, authenticate: bool):
        self.inner, self.authenticate = inner, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != ROUTE:
            await self.inner(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await _json(send, 405, {"error": f"{ROUTE} takes POST"})
            return
        if self.authenticate and (refusal := _refusal(scope)) is not None:
            status, message = refusal
            headers = [(b"www-authenticate", b'Basic realm="mlflow"')] if status == 401 else []
            await _json(send, status, {"error": message}, headers)
            return
        body = await _read_body(receive)
        if body is None:
            await _json(send, 413, {"error": f"a request body over {MAX_BODY} bytes"})
            return
        try:
            writes = parse_writes(json.loads(body))
        except (ValueError, TypeError, KeyError) as err:
            await _json(send, 400, {"error": f"not a list of run writes: {err}"})
            return
        from starlette.concurrency import run_in_threadpool

        status, answer = await run_in_threadpool(record, writes)
        await _json(send, status, answer)


def parse_writes(payload: Any) -> list:
    """``[{"run_id", "metrics": [[key, value, timestamp_ms, step], ...], "tags": {}, "status", "ended",
    "drop_tags": []}, ...]`` into RunWrites; a malformed one raises ValueError, TypeError or KeyError."""
    from mlflow.entities import Metric

    from orchestrator.tracking.sqlwrite import RunWrite

    if not isinstance(payload, list):
        raise TypeError("expected a JSON list")
    writes = []
    for item in payload:
        if not isinstance(item["run_id"], str) or not isinstance(item.get("tags", {}), dict):
            raise TypeError("run_id must be a string and tags an object")
        metrics = [Metric(str(k), float(v), int(t), int(s)) for k, v, t, s in item.get("metrics", [])]
        tags = {str(k): str(v) for k, v in item.get("tags", {}).items()}
        status = item.get("status")
        if status is not None and not isinstance(status, str):
            raise TypeError("status must be a string")
        drop = tuple(str(t) for t in item.get("drop_tags", []))
        writes.append(RunWrite(item["run_id"], metrics, tags, status, bool(item.get("ended", False)), drop))
    return writes


def encode_writes(writes: list) -> list[dict[str, Any]]:
    """The client's half of ``parse_writes``."""
    return [
        {
            "run_id": w.run_id,
            # NaN and infinities as strings: strict JSON (what requests sends) has no token for them
            "metrics": [
                [m.key, m.value if math.isfinite(m.value) else str(m.value), m.timestamp, m.step] for m in w.metrics
            ],
            "tags": w.tags,
            "status": w.status,
            "ended": w.ended,
            "drop_tags": list(w.drop_tags),
        }
        for w in writes
    ]


def post_writes(client: Any, writes: list) -> bool | None:
    """The writes through the route of the client's tracking server: True when recorded, False when they
    must go through MLflow's API (nothing recorded), None when the server has no such route (a plain
    ``mlflow server``). The client's credentials and retries are MLflow's own (``http_request``)."""
    from mlflow.utils.rest_utils import http_request

    store = client._tracking_client.store
    try:
        response = http_request(store.get_host_creds(), ROUTE, "POST", json=encode_writes(writes), max_retries=2)
    except Exception as err:  # unreachable, timed out: MLflow's API decides, run by run, and says why
        logging.getLogger(__name__).warning("orch server's batch route failed (%s): writing run by run", err)
        return False
    if response.status_code == 200:
        return True
    # no such route (a plain `mlflow server`), or writes it does not take from this user: not again
    return None if response.status_code in (401, 403, 404, 405) else False


def _number(value: float) -> float | str:
    """NaN and infinities as strings ("nan", "-inf"; float() reads them back): strict JSON, which requests
    sends, has no token for them."""
    return value if math.isfinite(value) else str(value)


def record(writes: list) -> tuple[int, dict[str, Any]]:
    """The writes in one transaction of the server's own store: 200, or 409 when MLflow's API must make them
    (nothing committed), or 400 when MLflow refuses a value (a bad metric name: the client would be refused
    too, with the same message)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from orchestrator.tracking.sqlwrite import Fallback, SqlWriter

    store = _get_tracking_store()
    if not isinstance(store, SqlAlchemyStore):
        return 409, {"fallback": "the server's store is not an SQL database"}
    try:
        SqlWriter(store).record_many(writes)
    except Fallback as err:
        return 409, {"fallback": str(err)}
    except MlflowException as err:
        return 400, {"error": err.message}
    return 200, {"recorded": len(writes)}


def _refusal(scope: Scope) -> tuple[int, str] | None:
    """None for an administrator's basic credentials; else the status and why (the writes may touch any run)."""
    from mlflow.server.auth import store

    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return 401, "basic credentials expected"
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return 401, "malformed basic credentials"
    if not store.authenticate_user(username, password):
        return 401, "wrong user name or password"
    if not store.get_user(username).is_admin:
        return 403, f"{username} is not an administrator: write through MLflow's API"
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, payload: dict[str, Any], headers: list | None = None) -> None:
    kind = [(b"content-type", b"application/json")]
    await respond(send, status, json.dumps(payload).encode(), [*kind, *(headers or [])])


def create_app() -> App:
    """The ``mlflow.app`` entry point (a factory: see ``ui_gate.create_app``)."""
    authenticate = os.environ.get(AUTH_ENV) == "1"
    if authenticate:
        import fcntl

        from mlflow.server.auth import create_app as basic_auth_app

        # MLflow's auth app creates its admin user in every worker; its own server command does it once
        # before forking them, which an app of another name does not get: one worker at a time instead
        with open(os.environ[LOCK_ENV], "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            inner = basic_auth_app()
    else:
        from mlflow.server.fastapi_app import app as inner
    return OrchRoutes(inner, authenticate)
