"""Credentials for an authenticated tracking server (``orch server start``, MLflow's basic-auth app).

On a shared login node every user can reach 127.0.0.1: a server without authentication lets any of them
read, change or delete every run. ``orch server start`` therefore creates one admin user with a random
password, kept only in files readable by the user who started it (0600 in a 0700 directory):
  - ``<server run dir>/auth/credentials.json``: what a restart of that server reuses;
  - ``<ORCH_CREDENTIALS_DIR or ~/.config/orch/servers>/<host>_<port>.json``: how orch commands of the same
    user find it from any directory.
An orch process that tracks through ``http://host:port`` and has no ``MLFLOW_TRACKING_USERNAME`` in its
environment puts these credentials there (``use``): MLflow's client reads them, and every job it starts
inherits them. They are never printed or logged."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import InputError

USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def credentials_dir() -> Path:
    return Path(os.environ.get("ORCH_CREDENTIALS_DIR") or Path.home() / ".config" / "orch" / "servers")


def _key(uri: str) -> str:
    parts = urlsplit(uri)
    host = "127.0.0.1" if parts.hostname in ("localhost", "0.0.0.0", "::", None) else parts.hostname
    return f"{host}_{parts.port or (443 if parts.scheme == 'https' else 80)}"


def private_dir(path: Path) -> Path:
    """``path`` created 0700, or refused when it exists and another user owns it or others may write it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(f"refusing to keep credentials in {path}: owned by another user or writable by others")
    path.chmod(0o700)
    return path


def write_private(path: Path, payload: dict[str, str]) -> None:
    """Created 0600 from the start (O_EXCL on a fresh name, then renamed): never readable by others."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


def read_private(path: Path) -> dict[str, str] | None:
    """The file's credentials, or None when it is missing or not safe to trust (another owner, or group
    or others may read or write it: then anyone could have read or planted them)."""
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"username", "password"} <= set(data) else None


def server_credentials(auth_dir: Path) -> dict[str, str]:
    """This server's admin credentials: those of an earlier start of it (its user store keeps them), else
    new ones."""
    found = read_private(auth_dir / "credentials.json")
    if found is not None:
        return found
    user = os.environ.get("USER") or str(os.getuid())
    created = {"username": f"orch-{user}", "password": secrets.token_urlsafe(24)}
    write_private(auth_dir / "credentials.json", created)
    return created


def remember(uri: str, credentials: dict[str, str]) -> Path:
    path = credentials_dir() / f"{_key(uri)}.json"
    write_private(path, {"uri": uri, "username": credentials["username"], "password": credentials["password"]})
    return path


def lookup(uri: str) -> dict[str, str] | None:
    return read_private(credentials_dir() / f"{_key(uri)}.json")


def use(uri: str) -> bool:
    """Put the credentials of the server at ``uri`` into this process's environment (for MLflow's client
    and the jobs this process starts), unless the user set their own. True when some are there."""
    if not uri.startswith(("http://", "https://")):
        return False
    if os.environ.get(USER_ENV):
        return True
    found = lookup(uri)
    if found is None:
        return False
    os.environ[USER_ENV], os.environ[PASSWORD_ENV] = found["username"], found["password"]
    return True
