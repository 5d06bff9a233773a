"""Which tracking store a command uses, checked before anything is created: ``--tracking-uri``, then
``MLFLOW_TRACKING_URI``, then the spec's, then the embedded store; a server must answer first."""

from __future__ import annotations

import os

from orchestrator.errors import InputError
from orchestrator.spec.tracking_uri import check_tracking_uri, default_uri


def resolve_uri(cli_uri: str | None = None, spec_uri: str | None = None) -> str:
    """``--tracking-uri``, then ``MLFLOW_TRACKING_URI``, then the spec, then the embedded store; a URI
    MLflow cannot use, or a server that does not answer, is refused before anything is created."""
    for uri, source in (
        (cli_uri, "--tracking-uri"),
        (os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI"),
        (spec_uri, "tracking.uri"),
    ):
        if uri:
            check_uri(uri, source)
            return uri
    return default_uri()


PROBE_TIMEOUT_S = 5.0
_answered: set[str] = set()  # servers that answered once in this process: not probed again


def check_uri(uri: str, source: str) -> None:
    """A scheme orch can track through, and for a server, one that answers /health within a few seconds
    (MLflow's client would retry a dead address for minutes, silently)."""
    try:
        check_tracking_uri(uri)
    except ValueError as err:
        raise InputError(str(err), source) from None
    if uri.startswith(("http://", "https://")) and uri not in _answered:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S) as response:
                ok = response.status == 200
        except urllib.error.HTTPError as err:
            ok, reason = False, f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            ok, reason = False, str(getattr(err, "reason", err))
        else:
            reason = "unexpected answer to /health"
        if not ok:
            raise InputError(
                f"no MLflow server answers at {uri} ({reason}, {PROBE_TIMEOUT_S:.0f} s); start one "
                "with `orch server start`, or check the address",
                source,
            )
        _answered.add(uri)
