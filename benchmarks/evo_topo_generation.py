"""What one GA generation of the lab preset costs, by reservoir size: the budget table of docs/evo_topo.md.

    .venv/bin/python benchmarks/evo_topo_generation.py [--sizes 14 30 50 100] [--rounds 3]

One generation = the population (configs/evo_topo_lab.yaml: 60 genomes) scored on its fitness draws (2 x
1,000 training + 500 held-out trials) under the paper's protocol, one thread, as a run does it. Random nets of
each size stand in for genomes (the engine's cost depends on the size, not on where the weights came from).
CPU seconds (process_time), the median of the rounds; the hours a run and the whole preset need follow.
Writes benchmarks/results/evo_topo_generation.{json,md}, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from orchestrator.spec.spec import load_spec
from workloads.evo_topo import Params
from workloads.evo_topo.evaluate import EvalData, PopulationEvaluator
from workloads.evo_topo.experiment import FITNESS_TRIALS, draws_of, dynamics, seed_draws
from workloads.evo_topo.nets import random_net

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def generation_cpu_s(p: Params, size: int, rounds: int) -> float:
    p = p.model_copy(update={"max_neurons": max(size, p.max_neurons), "units": max(size, p.units)})
    nets = [
        random_net(
            size,
            p.sr,
            p.input_scaling,
            p.rc_connectivity,
            p.input_connectivity,
            p.bias_scaling,
            seed=np.random.default_rng([size, k]),
        )
        for k in range(p.population)
    ]
    evaluator = PopulationEvaluator(dynamics(p), seed_draws(p, 0), workers=1)
    times = []
    for r in range(rounds):
        datas: list[EvalData] = draws_of(p, FITNESS_TRIALS, 0, p.n_val, key=r)
        start = time.process_time()
        evaluator(nets, datas)
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[14, 30, 50, 100])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(ROOT / "configs" / "evo_topo_lab.yaml")
    p = Params(**spec.params)
    load_before = os.getloadavg()
    rows = []
    for size in args.sizes:
        cpu = generation_cpu_s(p, size, args.rounds)
        run_h = cpu * p.generations / 3600
        rows.append(
            {
                "neurons": size,
                "generation_cpu_s": round(cpu, 3),
                "run_cpu_h": round(run_h, 3),
                "ten_seeds_cpu_h": round(10 * run_h, 2),
            }
        )
    load_after = os.getloadavg()
    table = Table(
        title=f"one generation: {p.population} genomes x {p.val_draws} draws of {p.n_train} + {p.n_val} "
        f"trials (load {load_before[0]:.2f} before, {load_after[0]:.2f} after)"
    )
    for column in ("neurons", "CPU s / generation", f"CPU h / run ({p.generations} gen.)", "CPU h / 10 seeds"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "load_before": load_before,
        "load_after": load_after,
        "population": p.population,
        "val_draws": p.val_draws,
        "n_train": p.n_train,
        "n_val": p.n_val,
        "generations": p.generations,
        "cpu": os.uname().machine,
    }
    (RESULTS / "evo_topo_generation.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [
        f"# evo_topo: one generation of configs/evo_topo_lab.yaml by size ({meta['date']})",
        "",
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; one thread; CPU seconds",
        "",
        "| neurons | CPU s / generation | CPU h / run | CPU h / 10 seeds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['neurons']} | {r['generation_cpu_s']} | {r['run_cpu_h']} | {r['ten_seeds_cpu_h']} |" for r in rows]
    (RESULTS / "evo_topo_generation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
