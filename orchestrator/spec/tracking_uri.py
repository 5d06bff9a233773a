"""Tracking URIs as orch reads them: the schemes it can track through, the embedded store's default, and the
one place that turns an ``sqlite:///`` URI into its database file."""

from __future__ import annotations

from pathlib import Path

SQLITE = "sqlite:///"  # three slashes: an absolute path follows
STORE_DIR = Path("mlruns")
URI_SCHEMES = (SQLITE, "http://", "https://", "postgresql://", "postgresql+", "mysql://", "mysql+")


def check_tracking_uri(uri: str | None) -> str | None:
    """A URI MLflow can track to, in a form orch reads (sqlite with an absolute path: three slashes)."""
    if uri is not None and not uri.startswith(URI_SCHEMES):
        raise ValueError(
            f"'{uri}' is not a tracking URI orch can use; expected sqlite:///path/to/mlflow.db, "
            "http(s)://host:port (an MLflow server) or postgresql://... / mysql://..."
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI; None for any other store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def default_uri(root: Path | None = None) -> str:
    """The embedded store: ``mlruns/mlflow.db`` under ``root`` (the working directory)."""
    return f"{SQLITE}{((root or Path.cwd()) / STORE_DIR / 'mlflow.db').resolve()}"
