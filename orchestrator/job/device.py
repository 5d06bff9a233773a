"""The device a run gets, and the facts about it that become the run's tags.

A run that asks for GPUs (``resources.gpus > 0``) and finds no CUDA device fails at once with a clear error:
training silently on the CPU would take hours and record numbers nobody asked for. Every run journals a
``device`` event (``tags``: the names below -> values) before its workload starts; the Ledger copies them
onto the MLflow run, so a result always says which GPU model, driver and CUDA produced it.

The tag names are ``vocabulary.Tag``'s, like every tag orch writes."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Protocol

from orchestrator.vocabulary import Event, Tag

# cuda | cpu (what ctx.device says); the first visible GPU's model; the CUDA devices the run sees; the NVIDIA
# driver (nvidia-smi); the CUDA runtime torch was built with; CUDA_VISIBLE_DEVICES as the run saw it ("unset")
DEVICE, GPU_MODEL, GPU_COUNT, GPU_DRIVER = Tag.DEVICE, Tag.GPU_MODEL, Tag.GPU_COUNT, Tag.GPU_DRIVER
CUDA_VERSION, CUDA_VISIBLE, CPU_MODEL = Tag.CUDA_VERSION, Tag.CUDA_VISIBLE, Tag.CPU_MODEL
TAGS = (DEVICE, GPU_MODEL, GPU_COUNT, GPU_DRIVER, CUDA_VERSION, CUDA_VISIBLE, CPU_MODEL)


class NoCudaError(RuntimeError):
    """``resources.gpus > 0`` but no CUDA device is usable here."""


class Journal(Protocol):
    def write(self, event: str, **fields: Any) -> None: ...


def claim(gpus: float, journal: Journal) -> str:
    """Journal the run's device facts and return ``ctx.device``; raise ``NoCudaError`` (inside the worker's
    try: the run ends FAILED with this message) when ``gpus`` (run.json's) were asked for and none is usable."""
    facts = describe(gpus)
    journal.write(Event.DEVICE, tags=facts)
    if gpus > 0 and facts[DEVICE] != "cuda":
        raise NoCudaError(
            f"resources.gpus={gpus:g} but no CUDA device is usable on {platform.node()} "
            f"(CUDA_VISIBLE_DEVICES={facts[CUDA_VISIBLE]}; {facts.get('why', 'torch.cuda.is_available() is False')}): "
            "orch refuses to run a GPU request on the CPU. Check the job's GPU request (cluster profile "
            "gpu_request / constraint) and the CUDA module in the profile's setup lines"
        )
    facts.pop("why", None)
    return str(facts[DEVICE])


def describe(gpus: float) -> dict[str, Any]:
    """Facts about this process's device. Torch is imported only for a run that asks for GPUs (a CPU run
    does not pay its 2 s import)."""
    facts: dict[str, Any] = {
        DEVICE: "cpu",
        CUDA_VISIBLE: os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        CPU_MODEL: cpu_model(),
    }
    if gpus <= 0:
        return facts
    try:
        import torch
    except ImportError:
        facts["why"] = "torch is not installed"
        return facts
    if not torch.cuda.is_available():
        facts["why"] = f"torch {torch.__version__}: torch.cuda.is_available() is False"
        return facts
    facts.update(
        {
            DEVICE: "cuda",
            GPU_COUNT: torch.cuda.device_count(),
            GPU_MODEL: torch.cuda.get_device_name(0),
            CUDA_VERSION: torch.version.cuda or "unknown",
            GPU_DRIVER: driver_version(),
        }
    )
    return facts


def driver_version() -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (``model name``, ``vendor_id``); None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or sys.platform
