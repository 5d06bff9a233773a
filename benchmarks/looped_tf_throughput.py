"""Training throughput of the looped_tf models against a straightforward reference built on transformers'
GPT2Model (the backbone of Garg et al.'s code), same sizes, same data, measured in the same process.

    .venv/bin/python benchmarks/looped_tf_throughput.py [--steps 200]

CPU: the CPU preset (configs/looped_tf.yaml) at its final curriculum values (d, points, b, T), one thread.
Ours and the reference alternate step by step, so that load from other processes hits both alike; median step times.
GPU (when one is present): the paper preset in bf16 autocast, and the projected time for its 500k steps.
Writes benchmarks/results/looped_tf_throughput.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from transformers import GPT2Config, GPT2Model

from workloads.looped_tf import Params
from workloads.looped_tf.data import sample_tasks, to_prompt
from workloads.looped_tf.protocol import loops_of
from workloads.looped_tf.train import build_model, make_optimizer

ROOT = Path(__file__).resolve().parent
PAPER_STEPS = 500_000


class ReferenceLooped(nn.Module):
    """What one writes first: read_in, transformers' GPT2Model called b times with input injection,
    read_out after each of the last T calls, the earlier calls under no_grad."""

    def __init__(self, p: Params):
        super().__init__()
        config = GPT2Config(
            n_positions=2 * p.n_points,
            n_embd=p.n_embd,
            n_layer=p.n_layer,
            n_head=p.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(p.n_dims, p.n_embd)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(p.n_embd, 1)

    def forward(self, prompt: torch.Tensor, n_loops: int = 1, grad_loops: int | None = None) -> list[torch.Tensor]:
        grad_loops = n_loops if grad_loops is None else grad_loops
        e = self.read_in(prompt)
        z = torch.zeros_like(e)
        preds = []
        for i in range(n_loops):
            with torch.set_grad_enabled(i >= n_loops - grad_loops):
                z = self.backbone(inputs_embeds=z + e).last_hidden_state
            if i >= n_loops - grad_loops:
                preds.append(self.read_out(z)[:, ::2, 0])
        return preds


class Trainer:
    """One model's training step at the final curriculum values (d, points, b, T), with its own Adam and
    its own copy of the task stream, so two trainers see the same data."""

    def __init__(self, model: nn.Module, p: Params, device: torch.device, bf16: bool, optimizer=None):
        self.model, self.p, self.device = model.to(device), p, device
        self.b, self.window = loops_of(p)
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=p.lr)  # the plain default
        self.gen = torch.Generator().manual_seed(0)
        self.cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(self) -> tuple[float, float]:
        """(wall, CPU) seconds for one full step: sampling, forward, backward, Adam, the loss read back."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.thread_time()
        batch = sample_tasks(self.gen, self.p.batch_size, self.p.n_points, self.p.n_dims)
        prompt, ys = to_prompt(batch.xs, batch.ys).to(self.device), batch.ys.to(self.device)
        with self.cast:
            preds = self.model(prompt, n_loops=self.b, grad_loops=self.window)
            loss = torch.stack([(y.float() - ys).square().mean() for y in preds]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss.item()  # a sync point, as the training loop has one
        return time.perf_counter() - start, time.thread_time() - cpu_start


def cpu_rows(presets: dict[str, Params], steps: int) -> list[dict]:
    """Ours and the reference step by step in alternation, one thread each. Throughput is counted in CPU
    time of the thread (what one dedicated core would give): this machine is shared, and wall time under
    load varied by 3x between identical runs; CPU time of a single-threaded step does not depend on how
    many other processes wait for the core. Wall-time medians are kept in the JSON for reference."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    rows = []
    for name, p in presets.items():
        torch.manual_seed(0)
        model = build_model(p)
        ours = Trainer(model, p, device, False, optimizer=make_optimizer(model, p))  # as train.py sets it up
        ref = Trainer(ReferenceLooped(p), p, device, False)
        for _ in range(max(3, steps // 10)):  # warm-up: allocator, kernels, Adam state
            ours.step(), ref.step()
        times_ours, times_ref = [], []
        for _ in range(steps):
            times_ours.append(ours.step())
            times_ref.append(ref.step())
        tokens = p.batch_size * 2 * p.n_points
        o = 1 / statistics.median(cpu for _, cpu in times_ours)
        r = 1 / statistics.median(cpu for _, cpu in times_ref)
        rows.append(
            {
                "model": name,
                "device": "cpu, 1 thread",
                "b": ours.b,
                "T": ours.window,
                "n_layer": p.n_layer,
                "ours_steps_s": o,
                "ref_steps_s": r,
                "ours_tokens_s": o * tokens,
                "ref_tokens_s": r * tokens,
                "speedup": o / r,
                "steps_timed": steps,
                "ours_wall_steps_s": 1 / statistics.median(w for w, _ in times_ours),
                "ref_wall_steps_s": 1 / statistics.median(w for w, _ in times_ref),
            }
        )
    return rows


def gpu_row(paper: Params, steps: int) -> dict | None:
    """The paper preset's looped model on the GPU: fp32 with TF32 matmuls (the reference's and the preset's
    setting) and bf16 autocast (the option), wall time (the GPU works alone)."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = paper.tf32
    row: dict = {
        "model": "looped (paper preset)",
        "device": torch.cuda.get_device_name(),
        "b": paper.n_loops,
        "T": paper.loop_window,
    }
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        trainer = Trainer(build_model(paper), paper, device, bf16=bf16)
        for _ in range(10):
            trainer.step()
        sps = 1 / statistics.median(trainer.step()[0] for _ in range(steps))
        row[f"{name}_steps_s"] = sps
        row[f"{name}_tokens_s"] = sps * paper.batch_size * 2 * paper.n_points
        row[f"{name}_projected_500k_h"] = PAPER_STEPS / sps / 3600
    return row


def load_params(path: Path, variant: str | None) -> Params:
    """Params of a spec file (its params, then one variant's overrides), without the orchestrator."""
    import yaml

    from orchestrator.spec.spec import deep_merge, nest

    doc = yaml.safe_load(path.read_text())
    tree = nest(doc.get("params", {}))
    if variant:
        tree = deep_merge(tree, nest(doc["variants"][variant]))
    return Params.model_validate(tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per model")
    args = parser.parse_args()
    load_start = os.getloadavg()  # this machine is shared: the load goes next to every figure
    configs = ROOT.parent / "configs"
    presets = {v: load_params(configs / "looped_tf.yaml", v) for v in ("looped", "standard")}
    rows = cpu_rows(presets, args.steps)
    gpu = gpu_row(load_params(configs / "looped_tf_paper.yaml", "looped_b30"), max(args.steps, 50))

    table = Table(title="looped_tf training throughput: ours vs transformers GPT2Model reference")
    for col in (
        "model",
        "device",
        "b / T / layers",
        "ours steps/s",
        "ref steps/s",
        "ours tokens/s",
        "ref tokens/s",
        "speedup",
    ):
        table.add_column(col, justify="right" if col not in ("model", "device") else "left")
    md = [
        "| model | device | b / T / layers | ours steps/s | ref steps/s | ours tokens/s | ref tokens/s | speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["model"],
            r["device"],
            f"{r['b']} / {r['T']} / {r['n_layer']}",
            f"{r['ours_steps_s']:.1f}",
            f"{r['ref_steps_s']:.1f}",
            f"{r['ours_tokens_s']:,.0f}",
            f"{r['ref_tokens_s']:,.0f}",
            f"{r['speedup']:.2f}x",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    if gpu:
        gpu_line = "; ".join(
            f"GPU ({gpu['device']}), paper preset b={gpu['b']}, {name}: {gpu[f'{name}_steps_s']:.1f} steps/s, "
            f"projected {PAPER_STEPS:,} steps {gpu[f'{name}_projected_500k_h']:.1f} h"
            for name in ("fp32", "bf16")
        )
    else:
        gpu_line = (
            "GPU: none on this machine; the paper preset's fp32 and bf16 throughput were not measured "
            "(GPU path untested)."
        )
    console = Console()
    console.print(table)
    console.print(gpu_line)

    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "steps": args.steps,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }
    load = (
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in meta['load_avg_end'])} at the end"
    )
    (out / "looped_tf_throughput.json").write_text(json.dumps({"meta": meta, "cpu": rows, "gpu": gpu}, indent=1))
    (out / "looped_tf_throughput.md").write_text(
        "# looped_tf training throughput\n\n" + "\n".join(md) + f"\n\n{gpu_line}\n\n"
        f"Reference: read_in + transformers GPT2Model (sdpa) called b times + read_out, same sizes and data. "
        f"steps/s = 1 / median CPU time of a step (one thread; wall time is unreliable on this shared machine, "
        f"wall medians in the JSON), {args.steps} steps each, ours and reference alternating step by step; torch "
        f"{torch.__version__}, "
        f"{meta['time']}; the machine was shared with other jobs: {load}.\n"
    )


if __name__ == "__main__":
    main()
