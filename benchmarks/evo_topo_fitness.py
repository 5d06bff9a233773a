"""Fitness evaluations per CPU-second under the paper's protocol: evo_topo's population engine against the
reference's way of evaluating a reservoir (naomichx/ESN_RL_ICDL), genome after genome, on the same trials.

    .venv/bin/python benchmarks/evo_topo_fitness.py [--population 16] [--rounds 2]

The protocol on both sides: the online reward-learning readout learns on the workload's n_train trials, then
frozen and greedy on its n_val held-out trials; the state carried from trial to trial; output feedback; state
noise; a reservoir bias (the genome's bias gene).
- ours: one fitness call of the workload (all genomes padded into one batch, one Python step loop for the
  whole population; workloads/esn/stepper.py), in float32 (the default) and float64;
- the reference's way: per genome, a reservoirpy ``Reservoir`` node and a readout node (``Ridge`` holding
  W_out) stepped each step of each trial, as the reference's ``esn.call`` steps its reservoir >> readout model;
  the online rule in numpy between trials, the new W_out written back into the readout node as the reference
  does. reservoirpy 0.4 has no feedback or noise arguments: the feedback is fed as extra input columns
  [W_in | W_fb] with input [u_t, y_{t-1}], the noise added to the state after each step (the same update).
  Its cost is per genome: it is timed on the first ``--ref-genomes`` genomes of each population.
Both use the same draws (readout initialisation, exploration, noise), so the float64 fitness must agree.
Rounds alternate the two sides so that load from other processes hits both alike; the median round counts.
One thread each (as a run gets). CPU time (process_time) is what is compared, wall time printed beside it.
Writes benchmarks/results/evo_topo_fitness.{json,md}, with the load average before and after.
"""

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
import numpy as np
import reservoirpy
import torch
from reservoirpy.nodes import Reservoir, Ridge
from rich.console import Console
from rich.table import Table

from workloads.evo_topo import Params
from workloads.evo_topo.evaluate import EvalData, mean_scores
from workloads.evo_topo.experiment import dynamics, layout, seed_draws
from workloads.evo_topo.genome import CellLaw, random_genome
from workloads.evo_topo.nets import decode
from workloads.evo_topo.readout import OnlineReadout
from workloads.evo_topo.task import N_POS, N_STEPS

ROOT = Path(__file__).resolve().parent


def reference_fitness(nets, data: EvalData, p: Params, draws) -> np.ndarray:
    """The reference's way: per genome, a reservoirpy Reservoir stepped through every trial, the readout
    choosing and learning after each training trial."""
    dyn = dynamics(p)
    readout_rng_seed, noise_seed = [data.seed, 0], [data.seed, 1]
    inputs = np.concatenate([data.train.inputs, data.test.inputs])
    n_train = len(data.train)
    scores = []
    for net in nets:
        n = net.n
        W_fb = draws.W_fb[:n]
        res = Reservoir(W=net.W, Win=np.c_[net.W_in, W_fb], bias=net.bias, lr=dyn.leak, dtype=np.float64)
        readout = OnlineReadout(
            np.array([n]), n, dyn.width, n_train, dyn.online, np.random.default_rng(readout_rng_seed)
        )
        node = Ridge(output_dim=N_POS, Wout=readout.W_out[0].copy(), bias=np.zeros(N_POS))
        noise = np.random.default_rng(noise_seed)
        y = np.zeros(N_POS)
        correct = 0
        for t, trial in enumerate(inputs):
            xi = noise.standard_normal((N_STEPS, dyn.width))[:, :n] * dyn.noise_rc
            for s in range(N_STEPS):
                x = res.step(np.r_[trial[s], y])
                x = x + xi[s]
                res.state = {"out": x}
                y = node.step(x)
            out = y[None]
            if t < n_train:
                choice = readout.choose(t, out)
                readout.learn(t, x[None], out, choice, data.train.stimuli[t])
                node.Wout = readout.W_out[0].copy()
            else:
                correct += int(out.argmax() == data.test.correct[t - n_train])
        scores.append(correct / len(data.test))
    return np.array(scores)


def _time(fn):
    w, t = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - t, time.perf_counter() - w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=None, help="default: the workload's population")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ref-genomes", type=int, default=8, help="genomes the reference way is timed on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    p = Params()
    draws = seed_draws(p, 0)
    data = EvalData.draw(p.n_train, p.n_val, [0, 1])
    rng = np.random.default_rng(0)
    population = args.population or p.population
    lay = layout(p)
    rows = []
    for n, size in ((5, population), (p.max_neurons, population), (p.max_neurons, 60)):
        genomes = [random_genome(n, rng, CellLaw(p.values, p.density, p.input_density), lay.k) for _ in range(size)]
        nets = [decode(g, lay, draws) for g in genomes]
        times: dict[str, list[float]] = {k: [] for k in ("f32", "f64", "ref", "f32_wall", "f64_wall", "ref_wall")}
        for _ in range(args.rounds):
            for side, dtype in (("f32", "float32"), ("f64", "float64")):
                dyn = dataclasses.replace(dynamics(p), dtype=dtype)
                fit, cpu, wall = _time(lambda: mean_scores(nets, [data], dyn, draws)["accuracy"])  # noqa: B023
                times[side].append(cpu)
                times[side + "_wall"].append(wall)
                if side == "f64":
                    ours = fit
            sub = nets[: args.ref_genomes]
            ref, cpu, wall = _time(lambda: reference_fitness(sub, data, p, draws))  # noqa: B023
            times["ref"].append(cpu * size / len(sub))  # per-genome cost, scaled to the population
            times["ref_wall"].append(wall * size / len(sub))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "neurons": n,
                "population": size,
                "trials": len(data.train) + len(data.test),
                "steps_per_trial": N_STEPS,
                "ours_f32_evals_per_cpu_s": size / med["f32"],
                "ours_f64_evals_per_cpu_s": size / med["f64"],
                "ref_evals_per_cpu_s": size / med["ref"],
                "speedup_f32": med["ref"] / med["f32"],
                "speedup_f64": med["ref"] / med["f64"],
                "speedup_f32_wall": med["ref_wall"] / med["f32_wall"],
                "max_abs_fitness_diff_f64": float(np.abs(ours[: len(ref)] - ref).max()),
                "mean_fitness": float(ref.mean()),
            }
        )
    load_after = os.getloadavg()
    table = Table(title="evo_topo fitness evaluations per CPU-second, paper protocol (1 thread)")
    for col in (
        "N",
        "pop",
        "trials x steps",
        "ours f32",
        "ours f64",
        "reference way",
        "speedup f32 (cpu)",
        "speedup f64 (cpu)",
        "speedup f32 (wall)",
        "max |dfit| f64",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["neurons"]),
            str(r["population"]),
            f"{r['trials']} x {r['steps_per_trial']}",
            f"{r['ours_f32_evals_per_cpu_s']:.2f}",
            f"{r['ours_f64_evals_per_cpu_s']:.2f}",
            f"{r['ref_evals_per_cpu_s']:.3f}",
            f"{r['speedup_f32']:.0f}x",
            f"{r['speedup_f64']:.0f}x",
            f"{r['speedup_f32_wall']:.0f}x",
            f"{r['max_abs_fitness_diff_f64']:.3g}",
        )
    Console().print(table)
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1-min, 2 cores)"
    print(load)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    env = {
        "torch": torch.__version__,
        "reservoirpy": reservoirpy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "when": stamp,
        "rounds": args.rounds,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "evo_topo_fitness.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2))
    lines = [
        "# evo_topo fitness throughput (paper protocol)",
        "",
        "| neurons | population | trials x steps | ours f32 evals/cpu-s | ours f64 evals/cpu-s | reference way "
        "evals/cpu-s | speedup f32 (cpu) | speedup f64 (cpu) | speedup f32 (wall) | max abs fitness diff (f64) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['neurons']} | {r['population']} | {r['trials']} x {r['steps_per_trial']} | "
        f"{r['ours_f32_evals_per_cpu_s']:.2f} | {r['ours_f64_evals_per_cpu_s']:.2f} | "
        f"{r['ref_evals_per_cpu_s']:.3f} | {r['speedup_f32']:.0f}x | {r['speedup_f64']:.0f}x | "
        f"{r['speedup_f32_wall']:.0f}x | {r['max_abs_fitness_diff_f64']:.3g} |"
        for r in rows
    ]
    lines += [
        "",
        "Ours: the workload's fitness (online readout, carried state, feedback, noise, bias gene), the "
        "population batched through workloads/esn/stepper.py. Reference way: reservoirpy Reservoir.step and a "
        "Ridge readout node's step per step, per trial, per genome, the online rule in numpy between trials "
        "(feedback as extra input columns, noise added to the state: the same update and draws), timed on "
        f"{args.ref_genomes} genomes per row and scaled per genome. Speedups in CPU time (process_time); median of "
        f"{args.rounds} interleaved rounds, one thread; torch {torch.__version__}, reservoirpy "
        f"{reservoirpy.__version__}, {stamp}; {load}.",
        "",
    ]
    (results / "evo_topo_fitness.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
