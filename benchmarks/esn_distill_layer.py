"""Benchmark 1 of esn_distill: one layer, the same data and the same matrices, this engine against
reservoirpy's ``(Reservoir >> Ridge).fit``.

Data: hidden_states[0] -> hidden_states[1] of a random bert-base teacher (2 layers are enough for one pair)
on seeded random token sequences, split by sample into train / test. Matrices: one reservoir drawn with
``random_reservoir`` (reservoirpy's initialisers) and handed to both. Readout on the reservoir state only
(reservoirpy's Ridge sees what the Reservoir outputs), intercept unpenalised in both.

Timed: reservoir states of the training sequences + readout fit (ours: esn_states on padded batches,
streamed RidgeAccumulator; reservoirpy: Reservoir.run per sequence + Ridge). The test MSE of the two fitted
readouts is compared (reservoirpy runs the test sequences untimed).

Threads: both sides run under the same limit (BLAS, OpenMP and torch pools), once per entry of --threads
(default: one thread, then every core). One thread compares per core; every core is what a user of this
machine gets. reservoirpy's own parallelism, ``fit(workers=n)`` (joblib workers over sequences), is run too:
the faster of workers=1 and workers=n is the reference of that thread limit.

    .venv/bin/python benchmarks/esn_distill_layer.py [--quick] [--units 500] [--samples 200] [--threads 1,2]
Writes benchmarks/results/esn_distill_layer.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from esn_distill_e2e import blas_kernels  # noqa: E402  (this directory: the script's own)

from workloads.esn.reservoir import esn_states, random_reservoir  # noqa: E402
from workloads.esn.ridge import RidgeAccumulator  # noqa: E402
from workloads.esn_distill.teacher import pad, random_teacher  # noqa: E402


def layer_pair(samples: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, targets): per sample, hidden_states[0] and [1] of the real tokens, standardised inputs."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(200, 301, size=samples)
    seqs = [np.concatenate([[2], rng.integers(5, 30522, size=L - 2), [3]]) for L in lengths]
    model = random_teacher("bert-base", 2, 30522, 512, seed, init_range=0.1).eval()
    xs, ys = [], []
    for i in range(0, samples, 16):
        ids, mask = pad(seqs[i : i + 16])
        with torch.inference_mode():
            hs = model(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
            ).hidden_states
        for b, L in enumerate(mask.sum(1)):
            xs.append(hs[0][b, :L].double().numpy())
            ys.append(hs[1][b, :L].double().numpy())
    mu = np.concatenate(xs).mean(0)
    sd = np.concatenate(xs).std(0) + 1e-6
    return [(x - mu) / sd for x in xs], ys


def ours(W, W_in, bias, leak, ridge, xs, ys, dtype, batch_tokens=32768):
    """Run + fit with this engine, as esn_distill runs it: sequences sorted by length into padded batches,
    states of the real tokens gathered with np.take, readout statistics streamed; returns (seconds,
    readout, matrices)."""
    t = time.perf_counter()
    np_dtype = np.dtype(dtype)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    Wt, Wit, bt = (torch.as_tensor(m, dtype=tdt) for m in (W, W_in, bias))
    N, D = W.shape[0], xs[0].shape[1]
    acc = RidgeAccumulator(N, ys[0].shape[1], np_dtype)
    order = np.argsort([-len(x) for x in xs], kind="stable")  # similar lengths together: little padding
    i = 0
    while i < len(order):
        T = len(xs[order[i]])
        idx = order[i : i + max(1, batch_tokens // T)]
        lengths = np.array([len(xs[k]) for k in idx])
        real = np.flatnonzero((np.arange(T)[None, :] < lengths[:, None]).ravel())
        u = np.zeros((len(idx) * T, D), dtype=np_dtype)
        u[real] = np.concatenate([xs[k] for k in idx])
        states = esn_states(Wt, Wit, torch.from_numpy(u.reshape(len(idx), T, D)), leak, bt)
        acc.update(np.take(states.numpy().reshape(-1, N), real, axis=0), np.concatenate([ys[k] for k in idx]))
        i += len(idx)
    sol = acc.solve(ridge)
    return time.perf_counter() - t, sol, (Wt, Wit, bt)


def ours_predict(sol, mats, leak, xs):
    Wt, Wit, bt = mats
    return [sol.predict(esn_states(Wt, Wit, torch.from_numpy(x[None]).to(Wt.dtype), leak, bt)[0].numpy()) for x in xs]


def reference(W, W_in, bias, leak, ridge, xs, ys, workers=1):
    from reservoirpy.nodes import Reservoir, Ridge
    from scipy import sparse

    t = time.perf_counter()
    # Sparse W and W_in, as reservoirpy's own initialisers return them at these densities (its fast path).
    model = Reservoir(
        W=sparse.csr_matrix(W), Win=sparse.csr_matrix(W_in), bias=bias, lr=leak, dtype=np.float64
    ) >> Ridge(ridge=ridge)
    # A list: every sequence starts from the zero state (reservoirpy 0.4); `workers` runs sequences in
    # parallel (joblib), reservoirpy's own way of using more than one core.
    model.fit(xs, ys, workers=workers)
    return time.perf_counter() - t, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 samples, 200 units: a smoke check")
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=200, help="sequences of 200-300 tokens (80%% train)")
    ap.add_argument("--ridge", type=float, default=10.0)
    ap.add_argument("--batch-tokens", type=int, default=32768, help="padded tokens stepped together (ours)")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread limits to run")
    ap.add_argument("--out-name", default=None, help="results file name (default esn_distill_layer[_quick])")
    args = ap.parse_args()
    if args.quick:
        args.units, args.samples = 200, 60
    console = Console()
    t0 = time.perf_counter()
    xs, ys = layer_pair(args.samples, seed=0)
    teacher_s = time.perf_counter() - t0
    n_train = int(0.8 * len(xs))
    (xtr, ytr), (xte, yte) = (xs[:n_train], ys[:n_train]), (xs[n_train:], ys[n_train:])
    W, W_in, bias = random_reservoir(
        args.units, xs[0].shape[1], sr=0.9, input_scaling=0.1, rc_connectivity=0.1, input_connectivity=0.1, seed=1
    )
    leak = 0.5
    tokens = sum(len(x) for x in xtr)
    console.print(
        f"{tokens} training tokens, {sum(len(x) for x in xte)} test tokens, {args.units} units, "
        f"teacher forward {teacher_s:.1f} s; load average {os.getloadavg()[0]:.1f}"
    )

    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            # reservoirpy at its best under this limit: one sequence at a time (BLAS threads in its Ridge
            # products) or `threads` joblib workers; the faster one is the reference of the row.
            refs = []
            for workers in sorted({1, threads}):
                ref_s, ref_model = reference(W, W_in, bias, leak, args.ridge, xtr, ytr, workers=workers)
                refs.append((ref_s, workers, ref_model))
            ref_s, _, ref_model = min(refs, key=lambda r: r[0])
            ref_model.reset()  # fit left the reservoir in the last training sequence's final state
            ref_pred = ref_model.run(xte)
            ref_mse = float(np.mean(np.concatenate([(p - y) ** 2 for p, y in zip(ref_pred, yte, strict=False)])))
            for seconds, workers, _ in refs:
                rows.append(
                    {
                        "threads": threads,
                        "engine": f"reservoirpy (Reservoir >> Ridge).fit, float64, workers={workers}",
                        "seconds": seconds,
                        "test_mse": ref_mse,
                        "speedup": ref_s / seconds,
                        "mse_rel_diff": 0.0,
                    }
                )
            for dtype in ("float64", "float32"):
                s, sol, mats = ours(W, W_in, bias, leak, args.ridge, xtr, ytr, dtype, args.batch_tokens)
                pred = ours_predict(sol, mats, leak, xte)
                mse = float(np.mean(np.concatenate([(p - y) ** 2 for p, y in zip(pred, yte, strict=False)])))
                rows.append(
                    {
                        "threads": threads,
                        "engine": f"ours esn_states + RidgeAccumulator, {dtype}",
                        "seconds": s,
                        "test_mse": mse,
                        "speedup": ref_s / s,
                        "mse_rel_diff": abs(mse - ref_mse) / ref_mse,
                    }
                )

    columns = ("threads", "engine", "run + fit (s)", "speed-up", "test MSE", "rel. diff vs reservoirpy")
    table = Table(title=f"esn_distill one layer: {tokens} tokens x {args.units} units, 768 -> 768")
    for col in columns:
        table.add_column(col)
    md = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in rows:
        cells = [
            str(r["threads"]),
            r["engine"],
            f"{r['seconds']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['test_mse']:.6g}",
            f"{r['mse_rel_diff']:.1e}",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    blas = blas_kernels()
    meta = {
        "tokens_train": tokens,
        "units": args.units,
        "batch_tokens": args.batch_tokens,
        "samples": args.samples,
        "ridge": args.ridge,
        "quick": args.quick,
        "threads": args.threads,
        "blas": blas,
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    name = args.out_name or ("esn_distill_layer_quick" if args.quick else "esn_distill_layer")
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"{name}.md").write_text(
        f"# esn_distill, one layer: ours vs reservoirpy\n\n{tokens} training tokens, {args.units} units, "
        f"numpy BLAS {blas}, load average {meta['load_average_1min']:.1f} on {meta['cpus']} cores.\n\n"
        + "\n".join(md)
        + "\n"
    )


if __name__ == "__main__":
    main()
