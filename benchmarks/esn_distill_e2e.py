"""Benchmark 2 of esn_distill: the lab's run end to end on this machine. 12 layers of a bert-base teacher,
12 x (1,000 + 1,000 units, forward + backward), ~250,000 tokens (1,000 samples of 212-288 tokens),
teacher forward included. The lab's own run took about 5 hours; the targets are < 15 min and < 8 GiB.

It runs configs/esn_distill_lab.yaml's params through the real worker (``python -m orchestrator.job.worker``,
a child process) and reports its wall time and peak resident memory (the child's ru_maxrss).
``--quick`` runs the same shape at 1/10 of the tokens and 300 units, as a smoke check. ``--config
configs/esn_distill_pretrained.yaml`` runs the pretrained MiniLM teacher on the KJV (results named
``esn_distill_e2e_pretrained``); ``--layers N`` keeps the first N layers of a random teacher (a reduced run on
a busy machine, to extrapolate from: the teacher forward scales with N, every layer costs the same).

Beside the wall time it prints the run's arithmetic floor: its flop count (workloads/esn_distill/flops.py) at
this host's matrix-product peaks (float32, float64; bfloat16 for a bfloat16 teacher), measured on the same
threads before and after the run (the better of the two). No
implementation that executes these operations runs faster on this host, so a wall time near the floor says that a
faster target needs other hardware or less arithmetic, not better code.

    .venv/bin/python benchmarks/esn_distill_e2e.py [--quick] [--cpus 2] [--config ...] [--layers N] [--samples N]
        [--set params.teacher.precision=bfloat16 --name bf16]
Writes benchmarks/results/esn_distill_e2e[_<config suffix>][_<N>layers][_<N>samples][_quick][_<name>].{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))

import itertools  # noqa: E402

from orchestrator.job.journal import read_journal  # noqa: E402
from orchestrator.job.rundir import RunDir  # noqa: E402
from orchestrator.spec.plan import expand  # noqa: E402
from orchestrator.spec.spec import load_spec  # noqa: E402


def blas_kernels() -> str:
    """numpy's BLAS and the kernels it runs (OPENBLAS_CORETYPE pins them: Haswell = AVX2 even on AVX-512)."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)
    from threadpoolctl import threadpool_info

    return ", ".join(
        f"{p['internal_api']} {p.get('version')} {p.get('architecture')}"
        for p in threadpool_info()
        if p["user_api"] == "blas"
    )


def gemm_peak(dtype: str, threads: int, n: int = 4096) -> float:
    """flop/s of an n x n matrix product on ``threads`` threads (best of 3): numpy's for float32 and float64
    (the readout's BLAS), torch's for bfloat16 (the teacher's autocast products, on oneDNN)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    if dtype == "bfloat16":
        t_a = torch.from_numpy(a).to(torch.bfloat16)
        product = lambda: t_a @ t_a  # noqa: E731
    else:
        a = a.astype(dtype)
        product = lambda: a @ a  # noqa: E731
    best, threads_before = float("inf"), torch.get_num_threads()
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        product()
        for _ in range(3):
            t = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - t)
    torch.set_num_threads(threads_before)
    return 2 * n**3 / best


def gemm_peaks(threads: int, before: dict[str, float] | None = None) -> dict[str, float]:
    """Each dtype's peak, the best of this measure and ``before``'s: a measure disturbed by another process
    (a busy start) would otherwise lower the peak and make the floor look higher than it is."""
    now = {dt: gemm_peak(dt, threads) for dt in ("float32", "float64", "bfloat16")}
    return {dt: max(v, (before or {}).get(dt, 0.0)) for dt, v in now.items()}


def floor_seconds(work: dict, n_layers: int, peaks: dict[str, float], precision: str) -> dict[str, float]:
    """Seconds of each part at the peaks; a bfloat16 teacher's products at the bfloat16 peak."""
    teacher = work["teacher"].float32 / (peaks["bfloat16"] if precision == "bfloat16" else peaks["float32"])
    per_layer = work["per_layer"].seconds(peaks["float32"], peaks["float64"])
    return {"teacher": teacher, "per_layer": per_layer, "total": teacher + n_layers * per_layer}


def arithmetic(params: dict, seed: int) -> tuple[dict, int]:
    """The run's flop counts (workloads/esn_distill/flops.py) from its params, and its layer count: the
    teacher's sizes and the corpus's sample lengths, rebuilt as the run builds them."""
    from workloads.esn_distill import Params, flops
    from workloads.esn_distill.pipeline import split_lengths, teacher_and_corpus

    p = Params(**params)
    model, _, corpus = teacher_and_corpus(p, seed)
    c = model.config
    return flops.run(
        p,
        {s: split_lengths(corpus, s).tolist() for s in ("train", "val", "test")},
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
    ), c.num_hidden_layers


def print_measures(console, title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column (measure, value) table: the end-to-end summary, complete or partial."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value")
    for measure, value in rows:
        table.add_row(measure, value)
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 samples, 300 units per direction")
    ap.add_argument(
        "--cpus",
        type=int,
        default=os.cpu_count(),
        help="threads given to the run (resources.cpus; default: every core)",
    )
    ap.add_argument("--config", default=str(REPO / "configs" / "esn_distill_lab.yaml"))
    ap.add_argument("--samples", type=int, default=None, help="data.n_samples (a reduced run: fewer tokens)")
    ap.add_argument("--layers", type=int, default=None, help="teacher.num_layers (random teacher only)")
    ap.add_argument(
        "--resume",
        default=None,
        help="continue this stopped run directory (wall time: all its attempts; peak memory: this attempt's)",
    )
    ap.add_argument(
        "--timeout-min",
        type=float,
        default=None,
        help="stop the run after this long and report the layers done and a projection",
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the config, as `orch submit --set` "
        "(e.g. params.teacher.precision=bfloat16); repeatable",
    )
    ap.add_argument("--name", default="", help="suffix of the results' file name (a run with --set)")
    args = ap.parse_args()
    console = Console()
    # resources.cpus is the cluster request (the lab config asks 4); this benchmark gives the run --cpus
    run = expand(load_spec(Path(args.config), sets=[f"resources.cpus={args.cpus}", *args.sets]))[0]
    params = run.params
    if args.quick:
        params["data"]["n_samples"] = 100
        params["esn"]["units"] = 300
    if args.layers:
        params["teacher"]["num_layers"] = args.layers
    if args.samples:
        params["data"]["n_samples"] = args.samples
    if args.resume:  # a run stopped by --timeout-min, continued from its checkpoint (same params as then)
        run_dir = RunDir(Path(args.resume))
        params = json.loads(run_dir.spec_file.read_text())["run"]["params"]
    else:
        run_dir = RunDir(Path(tempfile.mkdtemp(prefix="esn_distill_e2e_")))
        run_dir.create(
            {
                "run": {**run.to_dict(), "params": params},
                "run_id": "bench",
                "experiment_id": "0",
                "cpus": args.cpus,
                "gpus": 0,
            }
        )
    peaks = gemm_peaks(args.cpus)
    load_before = os.getloadavg()
    console.print(
        f"run dir {run_dir.path}; load average before: {load_before[0]:.1f} (1 min) on {os.cpu_count()} cores"
    )
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.job.worker", str(run_dir.path)], cwd=REPO)
    try:
        proc.wait(timeout=args.timeout_min * 60 if args.timeout_min else None)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the worker journals KILLED; the checkpoint holds the layers done
        proc.wait()
    wall = time.perf_counter() - t
    if args.resume:  # every attempt's time, start to its last line (the stopped one included)
        wall = attempts_wall(read_journal(run_dir.journal)[0])
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    load_after = os.getloadavg()
    records, _ = read_journal(run_dir.journal)
    end = [r for r in records if r["event"] == "end"][-1]
    if end["status"] == "KILLED":
        partial(console, run_dir, records, wall, peak_gib, load_before, args)
        return
    if proc.returncode or end["status"] != "FINISHED":
        console.print(f"[red]run failed: {end.get('error')}[/red]")
        console.print((run_dir.stderr.read_text() if run_dir.stderr.exists() else "")[-3000:])
        sys.exit(1)
    final = end["final"]
    peaks = gemm_peaks(args.cpus, before=peaks)
    work, n_layers = arithmetic(params, run.seed)
    floor = floor_seconds(work, n_layers, peaks, params["teacher"].get("precision", "float32"))
    timings = json.loads((run_dir.artifacts / "timings.json").read_text())
    layers = json.loads((run_dir.artifacts / "layers.json").read_text())["layers"]

    summary = [
        ("tokens (train+val+test)", f"{final['tokens']:.0f}"),
        ("layers x units", f"{len(layers)} x {params['esn']['units']} per direction ({params['esn']['direction']})"),
        ("wall time, all included", f"{wall / 60:.1f} min (target < 15 min)"),
        ("  teacher forward", f"{timings['teacher_s']:.0f} s ({params['teacher'].get('precision', 'float32')})"),
        (
            "  per layer (mean, max)",
            f"{sum(timings['layers_s']) / len(timings['layers_s']):.0f} s, {max(timings['layers_s']):.0f} s",
        ),
        (
            "arithmetic floor at this host's gemm peak",
            f"{floor['total'] / 60:.1f} min (teacher {floor['teacher']:.0f}"
            f" s, per layer {floor['per_layer']:.0f} s); wall / floor "
            f"{wall / floor['total']:.2f}",
        ),
        (
            "  gemm peak float32 / float64 / bfloat16",
            f"{peaks['float32'] / 1e9:.0f} / {peaks['float64'] / 1e9:.0f}"
            f" / {peaks['bfloat16'] / 1e9:.0f} GFLOP/s ({args.cpus} threads, "
            "best before / after the run)",
        ),
        (
            "  flops teacher / per layer (f32 + f64)",
            f"{work['teacher'].float32:.3g} / {work['per_layer'].float32:.3g} + {work['per_layer'].float64:.3g}",
        ),
        ("peak resident memory", f"{peak_gib:.2f} GiB (target < 8 GiB)"),
        ("load average 1 min (before, after)", f"{load_before[0]:.1f}, {load_after[0]:.1f} on {os.cpu_count()} cores"),
        ("threads; numpy BLAS kernels", f"{args.cpus}; {blas_kernels()}"),
        ("mean_nmse (ESN)", f"{final['mean_nmse']:.4f}"),
        (
            "mean_mse (ESN) / linear / identity",
            f"{final['mean_mse']:.4f} / {final['mean_baseline_linear_mse']:.4f}"
            f" / {final['mean_baseline_identity_mse']:.4f}",
        ),
        (
            "probe accuracy teacher / student / embeddings",
            " / ".join(
                f"{final.get(f'probe_{k}_acc', float('nan')):.3f}" for k in ("teacher", "student", "embeddings")
            ),
        ),
        ("mean linear-baseline nmse", f"{final['mean_baseline_linear_nmse']:.4f}"),
        ("chained_final_nmse", f"{final.get('chained_final_nmse', float('nan')):.4f}"),
        ("params ESN total / teacher layers", f"{final['params_esn_total']:.3g} / {final['params_teacher']:.3g}"),
    ]
    print_measures(console, "esn_distill end to end (the lab's run: ~5 h)", summary)
    per_layer = [
        "| layer | mse | nmse | linear mse | linear nmse | identity mse | identity nmse | chained mse | "
        "chained nmse | r2 | ridge | state scale | seconds |",
        "|" + "---|" * 13,
    ]
    for r, s in zip(layers, timings["layers_s"], strict=False):
        per_layer.append(
            f"| {r['layer']} | {r['mse']:.4f} | {r['nmse']:.4f} | {r['baseline_linear_mse']:.4f} | "
            f"{r['baseline_linear_nmse']:.4f} | {r['baseline_identity_mse']:.4f} | "
            f"{r['baseline_identity_nmse']:.4f} | {r.get('chained_mse', float('nan')):.4f} | "
            f"{r.get('chained_nmse', float('nan')):.4f} | {r['r2']:.4f} | {r['ridge']:g} | "
            f"{r['state_scale']:g} | {s:.0f} |"
        )
    name = result_name(args)
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "cpus_given": args.cpus,
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "python": platform.python_version(),
        "blas": blas_kernels(),
        "params": params,
        "gemm_peak_flops": peaks,
        "flops": {k: vars(f) for k, f in work.items()},
        "layers": n_layers,
        "floor_s": floor,
    }
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "wall_s": wall,
                "peak_rss_gib": peak_gib,
                "timings": timings,
                "final": final,
                "layers": layers,
            },
            indent=1,
        )
    )
    (out / f"{name}.md").write_text(
        "# esn_distill end to end\n\n| measure | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in summary)
        + "\n\n"
        + "\n".join(per_layer)
        + "\n"
    )
    console.print(f"artifacts in {run_dir.artifacts}")


def attempts_wall(records) -> float:
    """Seconds the run's attempts ran: from each start event to the attempt's last journal line."""
    total, start, last = 0.0, None, None
    for r in records:
        if r["event"] == "start":
            if start is not None:
                total += last - start
            start = r["t"]
        last = r["t"]
    return total + (last - start if start is not None else 0.0)


def result_name(args) -> str:
    stem = Path(args.config).stem.removeprefix("esn_distill").removeprefix("_").removesuffix("lab")
    parts = [
        "esn_distill_e2e",
        stem,
        f"{args.layers}layers" if args.layers else "",
        f"{args.samples}samples" if args.samples else "",
        "quick" if args.quick else "",
        args.name,
    ]
    return "_".join(p for p in parts if p)


def partial(console, run_dir, records, wall, peak_gib, load_before, args) -> None:
    """Stopped by --timeout-min: the teacher's time (its cache marker), the layers done, and a projection."""
    start = [r for r in records if r["event"] == "start"][-1]["t"]
    steps = [r for r in records if r["event"] == "metrics"]
    markers = list((run_dir.path / "teacher_cache").glob("*/complete.json"))
    teacher_done = markers[0].stat().st_mtime - start if markers else None
    summary = [
        ("status", f"stopped by --timeout-min after {wall / 60:.1f} min, {len(steps)} layers done"),
        (
            "start -> teacher cache written (imports, teacher forward)",
            f"{teacher_done / 60:.1f} min" if teacher_done else "not finished",
        ),
    ]
    if steps and teacher_done:
        times = [start + teacher_done] + [r["t"] for r in steps]
        per_layer = [b - a for a, b in itertools.pairwise(times)]
        layer_s = sum(per_layer) / len(per_layer)
        n_layers = json.loads(markers[0].read_text())["n_states"] - 1
        summary += [
            ("per layer (mean of those done)", f"{layer_s:.0f} s"),
            (f"projected wall time, {n_layers} layers", f"{(teacher_done + n_layers * layer_s) / 60:.1f} min"),
        ]
    summary += [
        ("peak resident memory so far", f"{peak_gib:.2f} GiB (target < 8 GiB)"),
        (
            "load average 1 min (before, now)",
            f"{load_before[0]:.1f}, {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        ),
    ]
    summary += [
        (
            f"layer {r['step']} nmse / linear nmse",
            f"{r['metrics']['nmse']:.4f} / {r['metrics']['baseline_linear_nmse']:.4f}",
        )
        for r in steps
    ]
    print_measures(console, "esn_distill end to end (partial)", summary)
    name = result_name(args)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"{name}.json").write_text(
        json.dumps({"partial": True, "wall_s": wall, "peak_rss_gib": peak_gib, "summary": summary}, indent=1)
    )
    (ROOT / "results" / f"{name}.md").write_text(
        "# esn_distill end to end (partial)\n\n| measure | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in summary)
        + "\n"
    )


if __name__ == "__main__":
    main()
