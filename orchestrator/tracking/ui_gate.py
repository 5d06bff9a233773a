"""What `orch ui` serves: MLflow's own app behind a token that only the user who started it holds.

Every user of a login node can reach 127.0.0.1, and MLflow's UI has no login of its own: without a gate any
of them could read, change or delete the owner's runs. The token is random per `orch ui`, reaches the server
through its environment (readable by its owner only, never on a command line), and is in the link `orch ui`
prints. Opening that link sets a cookie (HttpOnly, SameSite=Strict, one name per port) and redirects to the
same page without the token; every later request of that browser carries the cookie, so the UI's own
requests are authenticated with no change to MLflow. Scripts may send ``Authorization: Bearer <token>``.
Anything else gets 401, but ``/health`` (it says "OK" and nothing else).

The gate also opens MLflow 3 on its model-training pages: the UI keeps its workflow type (GenAI or
machine learning) in the browser's localStorage and starts in GenAI mode when it is unset, whatever the
page's query or the experiment's kind, and its runs table shows no metric at all until columns are picked.
The landing page therefore sets, before the app starts: the model-training view (the side bar's switch still
works until the page is reloaded); each orch experiment's main metric as columns (its seeds' values and its
groups' means), unless the browser already keeps columns of its own for that experiment; and MLflow's
assistant panel as already shown once, so that it does not open by itself over the table.

Served by ``mlflow server --app-name orch-ui`` (the ``mlflow.app`` entry point), so that MLflow's own server
command sets up its stores and artifacts exactly as it does for itself."""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from orchestrator.vocabulary import Role, Tag

TOKEN_ENV = "ORCH_UI_TOKEN"
PORT_ENV = "ORCH_UI_PORT"
TOKEN_QUERY = "token"
# MLflow's UI keeps its settings in the browser's localStorage, under keys of its own storage helpers: the
# workflow switch and whether its assistant panel (which hides the table's right half) already opened by
# itself (key + "_v1"), and each experiment page's columns (``ExperimentPage`` + the page's experiment ids)
WORKFLOW_KEY = "mlflow.workflowType_v1"
ASSISTANT_SHOWN_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
PAGE_STATE_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"
DENIED = (
    b"orch ui: this MLflow UI belongs to the user who started it. Open the link `orch ui` printed "
    b"(it carries the access token).\n"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def cookie_name(port: int | str) -> str:
    """Browsers share cookies across the ports of one host: one name per `orch ui` port."""
    return f"orch_ui_{port}"


class TokenGate:
    """An ASGI app: ``inner`` for requests that carry the token, 401 for the others."""

    def __init__(self, inner: App, token: str, port: int | str, tracking_uri: str | None = None):
        if len(token) < 32:
            raise ValueError("orch ui's token is too short to guard anything")
        self.inner, self.token, self.cookie = inner, token, cookie_name(port)
        self.tracking_uri = tracking_uri

    async def _landing_script(self) -> bytes:
        if self.tracking_uri is None:
            return landing_script({})
        from starlette.concurrency import run_in_threadpool

        try:  # read in a thread: the store's queries must not stall the server's event loop
            columns = await run_in_threadpool(metric_columns, self.tracking_uri)
        except Exception:  # the page opens without the columns rather than not at all
            columns = {}
        return landing_script(columns)

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def _presented(self, scope: Scope) -> str | None:
        """The token the request carries in its cookie or its Authorization header."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return None
        morsel = cookies.get(self.cookie)
        return morsel.value if morsel else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope.get("path") == "/health"):
            await self.inner(scope, receive, send)  # /health says "OK" and nothing else: how a start is awaited
            return
        if self._matches(self._presented(scope)):
            if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in ("/", "/index.html"):
                await self.inner(scope, receive, _with_landing_script(send, self._landing_script))
            else:
                await self.inner(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [value for name, value in query if name == TOKEN_QUERY]
        if scope["type"] == "http" and offered and self._matches(offered[0]):
            await self._enter(scope, [(n, v) for n, v in query if n != TOKEN_QUERY], send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await respond(send, 401, DENIED, [(b"content-type", b"text/plain; charset=utf-8")])

    async def _enter(self, scope: Scope, query: list[tuple[str, str]], send: Send) -> None:
        """The printed link: set the cookie, then the same page without the token (so that it is neither
        bookmarked nor kept in the history). The browser keeps the link's #fragment across the redirect."""
        location = scope.get("path", "/") + (f"?{urlencode(query)}" if query else "")
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        headers = [(b"location", location.encode()), (b"set-cookie", cookie.encode()), (b"cache-control", b"no-store")]
        await respond(send, 303, b"", headers)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def landing_script(columns: dict[str, list[str]]) -> bytes:
    """The script the landing page runs first: ``columns`` maps experiment ids to the metric columns their
    runs page shows unless the browser already keeps a choice for that page (in place of MLflow's default
    Source, Models and Dataset, which orch's runs leave empty)."""
    seeds = {
        PAGE_STATE_KEY.format(ids=json.dumps([experiment_id], separators=(",", ":"))): json.dumps(
            {"selectedColumns": [f"metrics.`{m}`" for m in metrics]}
        )
        for experiment_id, metrics in columns.items()
    }
    seeds[ASSISTANT_SHOWN_KEY] = "true"
    # json.dumps of a str is a valid JS string literal; every "<" (only ever inside one) escaped: no value can
    # close the script or open an HTML comment in it
    body = (
        f"var s=window.localStorage,d={json.dumps(seeds)};s.setItem({json.dumps(WORKFLOW_KEY)},"
        f"{json.dumps(json.dumps('machine_learning'))});for(var k in d)if(!s.getItem(k))s.setItem(k,d[k]);"
    ).replace("<", "\\u003c")
    return f"<script>try{{{body}}}catch(e){{}}</script>".encode()


def metric_columns(tracking_uri: str) -> dict[str, list[str]]:
    """Per orch experiment of the store, its main metric as columns: the seeds' value and the groups' mean."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    columns = {}
    for experiment in client.search_experiments():
        parents = client.search_runs([experiment.experiment_id], f"tags.`{Tag.ROLE}` = '{Role.GROUP}'", max_results=1)
        metric = parents[0].data.tags.get(Tag.METRIC) if parents else None
        if metric:
            columns[experiment.experiment_id] = [f"{metric}_mean", metric]
    return columns


def _with_landing_script(send: Send, script: Callable[[], Awaitable[bytes]]) -> Send:
    """``send`` with ``script`` run first by the landing page (plain HTML only: a compressed or streamed page
    goes through untouched)."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            sent = {k.lower(): v for k, v in message.get("headers", [])}
            plain_html = b"text/html" in sent.get(b"content-type", b"") and b"content-encoding" not in sent
            if not plain_html:
                await send(message)
                return
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        first = await script()
        body = b"".join(chunks)
        body = body.replace(b"<head>", b"<head>" + first, 1) if b"<head>" in body else first + body
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def create_app() -> App:
    """The ``mlflow.app`` entry point (a factory: MLflow's server command imports this module before
    forking the server, which must not build MLflow's app in that process)."""
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR
    from mlflow.server.fastapi_app import app as mlflow_app

    return TokenGate(mlflow_app, os.environ[TOKEN_ENV], os.environ[PORT_ENV], os.environ.get(BACKEND_STORE_URI_ENV_VAR))
