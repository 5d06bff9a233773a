"""Benchmark 3 of esn_distill: 10,000 units per reservoir (the lab's Plafrim goal), what this machine can
measure of it.

1. Drawing one 10,000-unit reservoir (reservoirpy's initialisers, 10% density) scaled to its spectral radius
   by `sparse_spectral_radius` (seeded ARPACK, 6 eigenvalues): draw and radius times (target < 30 s; reservoirpy's
   own radius did not finish in 5 minutes).
2. One layer fit at 10,000 units, one direction, on a reduced token count (random standardised inputs, hidden
   ``--hidden``), in a child process: accumulation, then the refit at one (ridge, scale) (no selection, so no
   eigendecomposition: the O(F^3) eigh of a 10k matrix takes longer than a shared 2-core machine allows;
   the selection's memory, <= 4 F^2 x 8 bytes, is tested at small F in tests/test_ridge.py). Reports the
   child's peak RSS against `memory.estimate` and against 4 F^2 x 8.

    .venv/bin/python benchmarks/esn_distill_10k.py [--tokens 3000] [--hidden 384] [--skip-draw]
Writes benchmarks/results/esn_distill_10k.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))


def draw(units: int, hidden: int) -> dict:
    from reservoirpy.mat_gen import normal
    from reservoirpy.utils.random import rand_generator

    from workloads.esn.reservoir import sparse_spectral_radius

    t = time.perf_counter()
    W = normal(units, units, sr=None, connectivity=0.1, seed=rand_generator(7))
    t_draw = time.perf_counter() - t
    t = time.perf_counter()
    rho = sparse_spectral_radius(W, seed=units)
    t_radius = time.perf_counter() - t
    t = time.perf_counter()
    (W * (0.9 / rho)).toarray()  # what random_reservoir does next: scale, then the dense W the engine steps
    t_dense = time.perf_counter() - t
    return {
        "units": units,
        "draw_s": t_draw,
        "radius_s": t_radius,
        "radius": rho,
        "dense_s": t_dense,
        "total_s": t_draw + t_radius + t_dense,
    }


def fit_child(units: int, hidden: int, tokens: int) -> dict:
    """In the child: one layer, forward reservoir, ``tokens`` tokens (samples of 250)."""
    import numpy as np

    from workloads.esn_distill import ESNParams, distill, memory
    from workloads.esn_distill.data import split_samples

    esn = ESNParams.model_validate(
        {
            "units": units,
            "direction": "forward",
            "ridges": [100.0],
            "state_scales": [1.0],
            "batch_tokens": 2000,
            "radius": "arpack",
        }
    )
    rng = np.random.default_rng(0)
    n = max(6, tokens // 250)
    corpus = split_samples([np.arange(250) for _ in range(n)], rng, 0.2, 0.2)
    H_in = rng.normal(size=(corpus.n_tokens, hidden)).astype(np.float32)
    H_out = (H_in + 0.1 * rng.normal(size=H_in.shape)).astype(np.float32)
    t = time.perf_counter()
    res = distill.build_reservoirs(esn, 0, 0, hidden, H_in.mean(0), H_in.std(0), "cpu")
    t_res = time.perf_counter() - t
    t = time.perf_counter()
    accs = distill.accumulate(res, H_in, H_out, corpus, esn.batch_tokens, np.float32)
    t_acc = time.perf_counter() - t
    t = time.perf_counter()
    distill.fit_layer(accs, hidden, esn.ridges, esn.state_scales, consume=True)
    t_fit = time.perf_counter() - t
    F = hidden + units
    est = memory.estimate(esn, hidden, corpus.n_tokens, "cpu")
    return {
        "F": F,
        "tokens": corpus.n_tokens,
        "reservoirs_s": t_res,
        "accumulate_s": t_acc,
        "fit_s": t_fit,
        "estimate_gb": est.host / 1e9,
        "four_F2_gb": 4 * F * F * 8 / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--skip-draw", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(fit_child(args.units, args.hidden, args.tokens)))
        return
    load = [os.getloadavg()[0]]
    out: dict = {"cores": os.cpu_count()}
    if not args.skip_draw:
        out["draw"] = draw(args.units, args.hidden)
        load.append(os.getloadavg()[0])
        print(f"draw: {out['draw']}", flush=True)
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--units",
            str(args.units),
            "--hidden",
            str(args.hidden),
            "--tokens",
            str(args.tokens),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    out["fit"] = json.loads(proc.stdout.strip().splitlines()[-1])
    load.append(os.getloadavg()[0])
    out["load_1min"] = load
    rows = []
    if "draw" in out:
        d = out["draw"]
        rows += [
            ("reservoir draw (sparse W)", f"{d['draw_s']:.1f} s"),
            ("spectral radius (ARPACK, 6 eigenvalues)", f"{d['radius_s']:.1f} s (radius {d['radius']:.4f})"),
            ("scale + dense W", f"{d['dense_s']:.1f} s"),
            ("draw in all (target < 30 s)", f"{d['total_s']:.1f} s"),
        ]
    f = out["fit"]
    rows += [
        ("one layer fit: F, tokens", f"{f['F']}, {f['tokens']}"),
        (
            "  reservoirs / accumulate / refit",
            f"{f['reservoirs_s']:.1f} s / {f['accumulate_s']:.1f} s / {f['fit_s']:.1f} s",
        ),
        ("  peak RSS (child)", f"{f['peak_rss_gb']:.2f} GB"),
        ("  memory.estimate / 4 F^2 x 8", f"{f['estimate_gb']:.2f} GB / {f['four_F2_gb']:.2f} GB"),
        ("load average 1 min (start, ..., end)", ", ".join(f"{x:.1f}" for x in load) + f" on {os.cpu_count()} cores"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "esn_distill_10k.json").write_text(json.dumps(out, indent=1))
    (ROOT / "results" / "esn_distill_10k.md").write_text(
        "# esn_distill at 10,000 units\n\n| measure | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in rows)
        + "\n"
    )


if __name__ == "__main__":
    main()
