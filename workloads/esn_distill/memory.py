"""How much memory a run needs, estimated before it starts, and the refusal of one that cannot fit.

The readout statistics grow as F^2 (F = hidden + units x directions: 20,768 features at 10,000 units per
direction on bert-base, 3.45 GB per F x F float64 matrix), so a units setting that fits at 1,000 is out
of reach at 10,000 on a 12 GB job. The phases, F x F float64 matrices counted as F^2 x 8 bytes:
- accumulation: the train and validation statistics (2 F^2 + 2 F D) and one batch's features, states and
  inputs (float32);
- solve (`workloads/esn/ridge.py: select_and_refit`): the two statistics, the centred scaled matrix and its
  eigenvectors (or the Cholesky factor of a second matrix on a GPU): 4 F^2 at most (tested);
- always: the reservoirs (W dense float32, its CSR copy on CPU) and the hidden-state arrays in memory (the
  layer pair, the chained inputs when ``train_on: chained``).
On a GPU the statistics and the solve sit in GPU memory, the hidden-state arrays in host memory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from orchestrator.errors import InputError

GB = 1e9
SLACK = 1.15  # allocator fragmentation, Python and library overheads beyond the arrays counted


@dataclass
class Estimate:
    F: int
    host: float  # bytes in host memory at the peak
    device: float  # bytes in GPU memory at the peak (0 on CPU)
    solve: float  # bytes of the solve phase's F x F matrices (<= 4 F^2 x 8)

    def describe(self) -> str:
        gpu = f", {self.device / GB:.1f} GB on the GPU" if self.device else ""
        return f"F = {self.F} readout features: ~{self.host / GB:.1f} GB host memory{gpu}"


def estimate(esn, hidden: int, n_tokens: int, device: str, chained_inputs: bool = False) -> Estimate:
    """Peak memory of a run with these ESN params (``esn``: ESNParams) on ``n_tokens`` tokens of width
    ``hidden``."""
    directions = 2 if esn.direction == "both" else 1
    F, D = hidden + esn.units * directions, hidden
    feat = 8 if esn.dtype == "float64" else 4
    stats = 2 * (F * F + F * D) * 8
    solve = 4 * F * F * 8
    batch = esn.batch_tokens * (F * feat + 2 * esn.units * feat + 2 * D * 4)  # features, states + drive, inputs
    reservoirs = directions * esn.units * (esn.units * feat + D * feat)
    if device == "cpu":
        reservoirs += directions * int(esn.connectivity * esn.units * esn.units) * 12  # the CSR copy of W
    arrays = n_tokens * hidden * 4 * (3 if chained_inputs else 2)
    on_device = max(stats + batch, solve + 2 * F * D * 8) + reservoirs
    if device == "cpu":
        return Estimate(F, SLACK * (on_device + arrays), 0.0, solve)
    return Estimate(F, SLACK * (arrays + batch), SLACK * on_device, solve)


def host_limit(ctx, mem_gb: float | None) -> tuple[float, str]:
    """(bytes the run may use, where that number comes from)."""
    if mem_gb:
        return mem_gb * GB, "mem_gb"
    spec = getattr(getattr(ctx, "run_dir", None), "spec_file", None)
    if spec is not None and spec.exists():
        job_mem = json.loads(spec.read_text()).get("mem_gb")
        if job_mem:
            return float(job_mem) * GB, "resources.mem_gb"
    if os.environ.get("SLURM_MEM_PER_NODE"):
        return float(os.environ["SLURM_MEM_PER_NODE"]) * 2**20, "resources.mem_gb"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "mem_gb"


def check(est: Estimate, mem_gb: float | None, ctx, device: str) -> None:
    """Refuse (InputError) a run whose estimate exceeds the job's memory or the GPU's."""
    limit, field = host_limit(ctx, mem_gb)
    if est.host > limit:
        raise InputError(
            f"{est.describe()}, more than the {limit / GB:.1f} GB this job may use: set "
            f"{field} to at least {est.host / GB:.1f} (or lower esn.units / esn.batch_tokens)",
            field=field,
        )
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        if est.device > total:
            raise InputError(
                f"{est.describe()}, more than this GPU's {total / GB:.1f} GB: lower esn.units, "
                f"or run on a GPU with at least {est.device / GB:.1f} GB (or device: cpu)",
                field="esn.units",
            )
