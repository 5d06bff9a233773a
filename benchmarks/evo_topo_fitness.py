"""Fitness evaluations per second: evo_topo's population engine against evaluating the same individuals one
by one with reservoirpy (``Reservoir`` + ``Ridge`` readout), on the same trials, in the same process.

    .venv/bin/python benchmarks/evo_topo_fitness.py [--population 40] [--rounds 3]

Both sides compute the same thing: each genome's W rescaled to the spectral radius and W_in scaled as the
workload does, run on the fitness trials (the defaults' n_train + n_val), a ridge readout fitted on the last
state of the training trials, accuracy on the held-out trials. Rounds alternate ours / reservoirpy so that
load from other processes hits both alike; the median round counts. One thread each (as a run gets). Both
CPU time (process_time: what each side costs, robust to the other jobs on a shared machine) and wall time
are measured; the speedup is on CPU time, the wall-clock one is printed beside it.
Writes benchmarks/results/evo_topo_fitness.{json,md}."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import reservoirpy  # noqa: E402
import torch  # noqa: E402
from reservoirpy.nodes import Reservoir, Ridge  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from workloads.evo_topo import Params  # noqa: E402
from workloads.evo_topo.evaluate import EvalData, fitness, reservoir_matrices  # noqa: E402
from workloads.evo_topo.experiment import eval_config  # noqa: E402
from workloads.evo_topo.genome import CellLaw, random_genome  # noqa: E402
from workloads.evo_topo.task import N_BLANK  # noqa: E402

ROOT = Path(__file__).resolve().parent


def reservoirpy_fitness(genomes: list[np.ndarray], data: EvalData, cfg) -> np.ndarray:
    """The straightforward way: one Reservoir per genome, run over every trial, Ridge on the last states."""
    scores = []
    n_train = len(data.train)
    # Same shortcut as ours: the blank leading steps leave a bias-free reservoir at exactly 0.
    inputs = np.concatenate([data.train.inputs, data.test.inputs])[:, N_BLANK:]
    targets = np.eye(4)[data.train.correct]
    for g in genomes:
        W, W_in, _ = reservoir_matrices([g], cfg)
        n = g.shape[0]
        res = Reservoir(W=W[0, :n, :n], Win=W_in[0, :n], lr=cfg.leak, dtype=np.float64)
        last = np.asarray(res.run(inputs))[:, -1]  # every trial from the zero state
        readout = Ridge(ridge=cfg.ridge).fit(last[:n_train], targets)
        choice = np.asarray(readout.run(last[n_train:])).argmax(-1)
        scores.append(float((choice == data.test.correct).mean()))
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=None, help="default: the workload's population")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    p = Params()
    cfg = eval_config(p)
    data = EvalData.draw(p.n_train, p.n_val, [0, 1])
    rng = np.random.default_rng(0)
    args.population = args.population or p.population
    fitness([random_genome(3, rng, CellLaw())], data, cfg)  # warm-up: torch's first calls are slow
    rows = []
    for n, dtype in ((5, "float64"), (p.max_neurons, "float64"), (p.max_neurons, "float32")):
        genomes = [random_genome(n, rng, CellLaw(p.values, p.density, p.input_density))
                   for _ in range(args.population)]
        ours_cfg = dataclasses.replace(cfg, dtype=dtype)
        times = {"ours": [], "ref": [], "ours_wall": [], "ref_wall": []}
        for _ in range(args.rounds):
            for side, fn, c in (("ours", fitness, ours_cfg), ("ref", reservoirpy_fitness, cfg)):
                w, t = time.perf_counter(), time.process_time()
                scores = fn(genomes, data, c)
                times[side].append(time.process_time() - t)
                times[side + "_wall"].append(time.perf_counter() - w)
                if side == "ours":
                    ours = scores
                else:
                    ref = scores
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"neurons": n, "dtype": dtype, "population": args.population,
                     "trials": len(data.train) + len(data.test), "steps_per_trial": int(data.train.inputs.shape[1]) - N_BLANK,
                     "ours_evals_per_cpu_s": args.population / med["ours"],
                     "ref_evals_per_cpu_s": args.population / med["ref"],
                     "speedup": med["ref"] / med["ours"], "speedup_wall": med["ref_wall"] / med["ours_wall"],
                     "max_abs_fitness_diff": float(np.abs(ours - ref).max())})
    table = Table(title="evo_topo fitness evaluations per second (1 thread)")
    for col in ("N", "ours dtype", "pop", "trials x steps", "ours evals/cpu-s", "rpy evals/cpu-s", "speedup cpu",
                "speedup wall", "max |dfit|"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["neurons"]), r["dtype"], str(r["population"]), f"{r['trials']} x {r['steps_per_trial']}",
                      f"{r['ours_evals_per_cpu_s']:.1f}", f"{r['ref_evals_per_cpu_s']:.2f}", f"{r['speedup']:.0f}x",
                      f"{r['speedup_wall']:.0f}x", f"{r['max_abs_fitness_diff']:.3g}")
    Console().print(table)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    env = {"torch": torch.__version__, "reservoirpy": reservoirpy.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "when": stamp, "rounds": args.rounds}
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "evo_topo_fitness.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2))
    lines = ["# evo_topo fitness throughput", "",
             "| neurons | ours dtype | population | trials x steps | ours evals/cpu-s | reservoirpy evals/cpu-s "
             "| speedup (cpu) | speedup (wall) | max abs fitness diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['neurons']} | {r['dtype']} | {r['population']} | {r['trials']} x {r['steps_per_trial']} | "
              f"{r['ours_evals_per_cpu_s']:.1f} | {r['ref_evals_per_cpu_s']:.2f} | {r['speedup']:.0f}x | "
              f"{r['speedup_wall']:.0f}x | {r['max_abs_fitness_diff']:.3g} |" for r in rows]
    lines += ["", "Ours: the population engine (workloads/esn esn_states, all genomes padded into one batch, in the "
              "row's dtype) + batched ridge (solved in float64 either way). Reference: reservoirpy Reservoir.run + "
              "Ridge.fit per genome (float64), same matrices and trials, both skipping the 5 blank steps; the speedup is in CPU time (process_time), "
              "the wall-clock ratio beside it. Max abs fitness diff: the two sides' accuracies per genome. "
              f"Median of {args.rounds} interleaved rounds, one thread; torch {torch.__version__}, "
              f"reservoirpy {reservoirpy.__version__}, {stamp}; the machine was shared with other jobs.", ""]
    (results / "evo_topo_fitness.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
