"""What a run costs while it runs, through its journal (so offline compute nodes, requeues and every backend
work the same): a thread in the worker samples the run's own process tree (CPU %, resident memory) and the
run's own GPUs (those ``CUDA_VISIBLE_DEVICES`` lists: utilisation, memory; pynvml when installed, else
``nvidia-smi``), and journals ``system`` events that ingestion turns into ``system/*`` metrics. When the run
ends it journals the totals: wall time, CPU-seconds, GPU-seconds held, peak memory and peak GPU memory.

Sampling starts fast (1 s, 2 s, 4 s, ...) up to the interval, so a short run still gets a few samples; a
sample costs about a millisecond. ``tracking.system_metrics_s: 0`` turns it off."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.job.journal import JournalWriter
from orchestrator.vocabulary import Event

PREFIX = "system/"
FIRST_INTERVAL_S = 1.0


@dataclass
class GpuSample:
    index: str  # the physical index or UUID, as CUDA_VISIBLE_DEVICES names it
    util_percent: float
    mem_mb: float


def visible_gpus(env: dict[str, str] | None = None) -> list[str] | None:
    """The run's own GPUs, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs); None: not set (a run
    that asked for no GPU, or a machine without the variable: no GPU is sampled, never the whole node)."""
    value = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]


NVIDIA_SMI_QUERY = ["--query-gpu=index,uuid,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str, wanted: list[str]) -> list[GpuSample]:
    """``nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used --format=csv,noheader,nounits``'s
    lines, kept for the GPUs in ``wanted`` (indices or UUIDs), in ``wanted``'s order."""
    rows: dict[str, GpuSample] = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        index, uuid, util, mem = parts
        try:
            sample = GpuSample(index, float(util), float(mem))
        except ValueError:  # "[N/A]" (a MIG slice, a GPU that does not report it)
            continue
        rows[index] = rows[uuid] = sample
    return [rows[w] for w in wanted if w in rows]


def _nvml_reader(wanted: list[str]) -> Callable[[], list[GpuSample]] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [
            pynvml.nvmlDeviceGetHandleByUUID(w) if w.startswith("GPU-") else pynvml.nvmlDeviceGetHandleByIndex(int(w))
            for w in wanted
        ]
    except Exception:
        return None

    def read() -> list[GpuSample]:
        out = []
        for name, handle in zip(wanted, handles, strict=True):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            out.append(GpuSample(name, float(util), float(mem)))
        return out

    return read


def gpu_reader(wanted: list[str] | None) -> Callable[[], list[GpuSample]] | None:
    """How to read the run's GPUs, or None when it has none (or the machine has no NVIDIA tools)."""
    if not wanted:
        return None
    nvml = _nvml_reader(wanted)
    if nvml is not None:
        return nvml
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None

    def read() -> list[GpuSample]:
        try:
            text = subprocess.run([smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return parse_nvidia_smi(text, wanted)

    return read


@dataclass
class Totals:
    """What the run cost, summed or peaked over its samples."""

    started: float = field(default_factory=time.monotonic)
    peak_rss_mb: float = 0.0
    peak_gpu_mem_mb: float = 0.0
    gpus_held: float = 0.0

    def final(self, cpu_s: float) -> dict[str, float]:
        wall = time.monotonic() - self.started
        out = {"wall_s": wall, "cpu_s": cpu_s, "peak_rss_mb": self.peak_rss_mb, "gpu_s": wall * self.gpus_held}
        if self.gpus_held:
            out["peak_gpu_mem_mb"] = self.peak_gpu_mem_mb
        return {PREFIX + k: round(v, 3) for k, v in out.items()}


class Sampler:
    """The sampling thread of one run (``start`` once its ``start`` event is journaled, ``stop`` at its end)."""

    def __init__(
        self,
        journal: JournalWriter,
        interval_s: float,
        gpus_held: float = 0.0,
        gpus: Callable[[], list[GpuSample]] | None = None,
        first_step: int = 0,
        root: int | None = None,
    ):
        import psutil

        self.journal, self.interval_s = journal, interval_s
        # the process whose tree is the run: this one, or the supervisor of a multi-task run's local ranks
        self.me = psutil.Process(root or os.getpid())
        self.own = root is None or root == os.getpid()
        self.read_gpus = gpus
        self.totals = Totals(gpus_held=gpus_held)
        self.samples = first_step  # the step of the next sample: a resumed run's go on after the last attempt's
        self._stopped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orch-system-metrics", daemon=True)

    def start(self) -> Sampler:
        self.me.cpu_percent(None)  # the first call only sets the reference point
        self._thread.start()
        return self

    def _tree(self) -> list:
        import psutil

        try:
            return [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            return [self.me]

    def sample(self) -> dict[str, float]:
        """One sample of the process tree and the GPUs, as ``system/*`` metrics."""
        import psutil

        cpu, rss = 0.0, 0.0
        for proc in self._tree():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:  # ended between the listing and the reading
                continue
        metrics = {"cpu_percent": cpu, "rss_mb": rss / 2**20}
        self.totals.peak_rss_mb = max(self.totals.peak_rss_mb, metrics["rss_mb"])
        for n, gpu in enumerate(self.read_gpus() if self.read_gpus else []):
            metrics[f"gpu{n}_util_percent"] = gpu.util_percent
            metrics[f"gpu{n}_mem_mb"] = gpu.mem_mb
            self.totals.peak_gpu_mem_mb = max(self.totals.peak_gpu_mem_mb, gpu.mem_mb)
        return {PREFIX + k: round(v, 3) for k, v in metrics.items()}

    def _loop(self) -> None:
        wait = min(FIRST_INTERVAL_S, self.interval_s)
        while not self._stop.wait(wait):
            self._journal(self.sample())
            wait = min(wait * 2, self.interval_s)

    def _journal(self, metrics: dict[str, float]) -> None:
        try:
            self.journal.write(Event.SYSTEM, step=self.samples, metrics=metrics)
        except (OSError, ValueError):  # a full disk, a journal closed under us: a sample is not worth a crash
            return
        self.samples += 1

    def cpu_seconds(self) -> float:
        """CPU time of the run's process tree: its root, the root's live descendants, and its reaped children
        (the kernel adds a reaped child's time to its parent's)."""
        if self.own:
            times = os.times()
            base = times.user + times.system + times.children_user + times.children_system
        else:
            try:
                t = self.me.cpu_times()
                base = t.user + t.system + t.children_user + t.children_system
            except Exception:
                base = 0.0
        live = 0.0
        for proc in self._tree()[1:]:
            try:
                t = proc.cpu_times()
                live += t.user + t.system
            except Exception:
                continue
        return base + live

    def stop(self) -> None:
        """Stop sampling; journal the run's totals (its last ``system`` event). Once."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._thread.join(timeout=5)
        self._journal({**self.sample(), **self.totals.final(self.cpu_seconds())})
