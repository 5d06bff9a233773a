"""Is a folder on a filesystem the compute nodes share with this (login) node? Is the sqlite store off NFS?

A job folder on node-local storage (``/tmp``, tmpfs) makes every job on another node fail with its logs in
a folder nobody can read; a sqlite store on NFS, Lustre or BeeGFS can be corrupted (SQLite's locking is not
reliable there). Both are judged from the filesystem type in ``/proc/self/mounts``: a network filesystem is
shared; tmpfs and the usual temp folders are node-local; a local disk (ext4, xfs, ...) cannot be told
apart from a disk the nodes reach some other way, so that is a warning, not a refusal."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from orchestrator.spec.tracking_uri import sqlite_path

NETWORK_FS = {
    "nfs",
    "nfs4",
    "lustre",
    "beegfs",
    "gpfs",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "fuse.ceph",
    "fuse.sshfs",
    "panfs",
    "wekafs",
    "glusterfs",
    "fuse.glusterfs",
    "9p",
    "orangefs",
    "pvfs2",
    "fuse.beegfs",
    "afs",
}
SQLITE_UNSAFE_FS = {
    "nfs",
    "nfs4",
    "lustre",
    "beegfs",
    "fuse.beegfs",
    "gpfs",
    "cifs",
    "smb3",
    "smbfs",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
}
NODE_LOCAL_FS = {"tmpfs", "ramfs", "devtmpfs"}
NODE_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/scratch/local", "/local")


def mount_of(path: str | Path, mounts: str = "/proc/self/mounts") -> tuple[str, str]:
    """(mount point, filesystem type) of ``path`` (or of its nearest existing parent)."""
    target = Path(os.path.abspath(path))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a folder not created yet: resolve links in the part that exists
    real = os.path.normpath(os.path.join(os.path.realpath(existing), os.path.relpath(target, existing)))
    best = ("/", "unknown")
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, parts[2])
    return best


def local_addresses() -> set[str]:
    """This host's names and IPv4 addresses (Ray names a node by the address it picked, e.g. 192.0.2.2)."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    try:  # every local IPv4 address: the kernel's table marks them "/32 host LOCAL"
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        names |= {lines[i - 1].split()[-1] for i, line in enumerate(lines) if i and "/32 host LOCAL" in line}
    except OSError:
        pass
    return names


def job_folder_problem(
    folder: str | Path, node_hosts: set[str], mounts: str = "/proc/self/mounts"
) -> tuple[str, str] | None:
    """("error" | "warning", message) when ``folder`` may not be visible from the nodes ``node_hosts``
    (their names or addresses); None when it is (a network filesystem, or every node is this host)."""
    if node_hosts and node_hosts <= local_addresses():
        return None  # the nodes are this machine (the dev cluster): whatever this host sees, they see
    point, fstype = mount_of(folder, mounts)
    if fstype in NETWORK_FS:
        return None
    absolute = os.path.realpath(os.path.abspath(folder))
    where = f"{folder} ({fstype} mounted at {point})"
    if fstype in NODE_LOCAL_FS or any(absolute == d or absolute.startswith(d + "/") for d in NODE_LOCAL_DIRS):
        return (
            "error",
            f"the job folder {where} is node-local storage: jobs on other nodes cannot read their "
            "run directories and their logs would stay on the node. Put it on the shared filesystem "
            "(the spec's workdir, or job_folder in the cluster profile)",
        )
    return (
        "warning",
        f"cannot tell whether the job folder {where} is shared with the compute nodes (a local "
        "disk type); if jobs fail at once with no journal, put it on the shared filesystem",
    )


def sqlite_problem(uri: str, mounts: str = "/proc/self/mounts") -> str | None:
    """A warning when a ``sqlite:///`` store lives on a network filesystem."""
    database = sqlite_path(uri)
    if database is None:
        return None
    path = str(database)  # `sqlite:////abs/x.db` is absolute, `sqlite:///mlruns/x.db` relative to the cwd
    point, fstype = mount_of(Path(path).absolute().parent, mounts)
    if fstype in SQLITE_UNSAFE_FS:
        return (
            f"the MLflow sqlite store {path} is on {fstype} ({point}): SQLite's file locking is unsafe there "
            "and the store can be corrupted; keep it on a local disk of the login node (MLFLOW_TRACKING_URI, "
            "--tracking-uri) or use `orch server`"
        )
    return None
