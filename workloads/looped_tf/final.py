"""The final evaluation: one pass of the model to the longest evaluated loop count on the fixed evaluation
prompts gives the error curves at b, at the long horizon and at the extras, the headline, and loop_err
(the error at the last position after every iteration, logged with step = loop count); then the baselines,
the optional state-mask sweep, and the artifacts (error_curves.json, error_vs_k.png, loop_err.png,
loop_err.json, and mask_sweep.png when there is a sweep)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from workloads.looped_tf import Params
from workloads.looped_tf.baselines import BASELINES
from workloads.looped_tf.data import Batch
from workloads.looped_tf.evaluate import Curve, curve, normalised_errors, write_curves
from workloads.looped_tf.model import InContextRegressor
from workloads.looped_tf.plots import plot_curves, plot_loop_err, plot_mask_sweep
from workloads.looped_tf.predict import trajectory
from workloads.looped_tf.protocol import (
    eval_keep,
    evaluated_loops,
    headline_loops,
    long_horizon,
    loop_err_positions,
    loops_of,
)
from workloads.looped_tf.state_mask import Keep


def label_of(p: Params) -> str:
    b, window = loops_of(p)
    return f"looped L={p.n_layer}, b={b}, T={window}" if p.model == "looped" else f"standard, {p.n_layer} layers"


def final_evaluation(
    model: InContextRegressor, p: Params, evaluation: Batch, seeds: dict[str, int], device: torch.device, ctx
) -> dict[str, float]:
    b, window = loops_of(p)
    counts, head, horizon = evaluated_loops(p), headline_loops(p), long_horizon(p)
    xs, ys = evaluation.xs, evaluation.ys
    run = trajectory(model, xs, ys, max(counts), counts, p, device, eval_keep(p))
    rng = np.random.default_rng(seeds["bootstrap"])

    curves: dict[str, Curve] = {}
    for loops in counts:
        curves[f"model_loops{loops}"] = curve(run.per_prompt[loops], rng, p.bootstrap_trials)
    curves["model"] = curves[f"model_loops{head}"]
    for name, baseline in BASELINES.items():
        curves[name] = curve(normalised_errors(baseline(xs, ys), ys, p.n_dims), rng, p.bootstrap_trials)

    metrics: dict[str, Any] = {}
    for name, c in curves.items():
        for k, value in enumerate(c.mean):
            if name == "model":
                metrics[f"err_k{k}"] = value
            elif name.startswith("model_loops"):
                metrics[f"err_k{k}_loops{name.removeprefix('model_loops')}"] = value
            else:
                metrics[f"{name}_err_k{k}"] = value
    metrics["final_err"] = curves["model"].mean[-1]
    metrics["final_err_lo"], metrics["final_err_hi"] = curves["model"].lo[-1], curves["model"].hi[-1]
    metrics["final_err_b"] = curves[f"model_loops{b}"].mean[-1]
    metrics["final_err_long"] = curves[f"model_loops{horizon}"].mean[-1]
    metrics["headline_loops"] = head
    metrics["n_params"] = sum(t.numel() for t in model.parameters())

    # loop_err: the reference's per-loop error at the last in-context example, one metric point per loop count.
    for loop, err in enumerate(run.by_loop[:, -1], start=1):
        ctx.log(loop, loop_err=float(err))
    ks = loop_err_positions(p)
    (ctx.artifact_dir / "loop_err.json").write_text(
        json.dumps(
            {
                "meta": {
                    "b": b,
                    "T": window,
                    "loops": run.by_loop.shape[0],
                    "k": "labelled points seen",
                    "error": "squared error / d, mean over the evaluation prompts",
                },
                "by_loop": {str(k): run.by_loop[:, k].tolist() for k in range(run.by_loop.shape[1])},
            },
            indent=1,
        )
    )
    if p.model == "looped":  # a standard model has one pass: no curve over loops to draw
        plot_loop_err(run.by_loop, ks, b, window, f"{label_of(p)}; d={p.n_dims}", ctx.artifact_dir / "loop_err.png")

    if p.model == "looped" and p.mask_sweep:
        metrics.update(mask_sweep(model, p, evaluation, head, metrics["final_err"], device, ctx))

    meta = {
        "model": p.model,
        "n_dims": p.n_dims,
        "n_points": p.n_points,
        "n_loops": b,
        "evaluated_loops": counts,
        "headline_loops": head,
        "eval_horizon": horizon,
        "state_mask": p.state_mask.model_dump(),
        "eval_prompts": p.eval_prompts,
        "interval": "bootstrap 5-95%",
        "k": "labelled points seen",
    }
    write_curves(curves, meta, ctx.artifact_dir / "error_curves.json")
    plot_curves(
        {k: v for k, v in curves.items() if k not in (f"model_loops{head}",)},
        p.n_dims,
        f"{label_of(p)}; d={p.n_dims}; model at {head} loops",
        ctx.artifact_dir / "error_vs_k.png",
    )
    return {k: float(v) for k, v in metrics.items()}


def mask_sweep(
    model: InContextRegressor, p: Params, evaluation: Batch, loops: int, unmasked: float, device: torch.device, ctx
) -> dict[str, float]:
    """The error at the last position after ``loops`` iterations with only the first / last N pairs of the
    state kept, for every N of ``mask_sweep``; logged as mask_first_err / mask_last_err with step = N."""
    sweep: dict[str, dict[int, float]] = {"first": {}, "last": {}}
    out: dict[str, float] = {}
    for n in sorted(set(p.mask_sweep)):
        for side in ("first", "last"):
            run = trajectory(model, evaluation.xs, evaluation.ys, loops, [], p, device, Keep(side, n))  # type: ignore[arg-type]
            sweep[side][n] = out[f"mask_{side}{n}_err"] = float(run.by_loop[-1, -1])
        ctx.log(n, mask_first_err=sweep["first"][n], mask_last_err=sweep["last"][n])
    plot_mask_sweep(
        sweep, unmasked, loops, f"{label_of(p)}; state mask at evaluation", ctx.artifact_dir / "mask_sweep.png"
    )
    return out
