"""The training loop (nanoGPT's train.py in spirit): fresh tasks every step, Adam, curricula on dimension,
prompt length and loop count, periodic evaluation, checkpoints that make a resumed run equal an
uninterrupted one, and the final evaluation against the baselines."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from workloads.looped_tf import Params
from workloads.looped_tf.baselines import BASELINES
from workloads.looped_tf.data import sample_tasks, schedule, to_prompt
from workloads.looped_tf.evaluate import Curve, curve, normalised_errors, plot_curves, write_curves
from workloads.looped_tf.model import InContextRegressor

EVAL_CHUNK = 256  # prompts per forward pass at evaluation: bounds memory on long prompts


def build_model(p: Params) -> InContextRegressor:
    return InContextRegressor(p.n_dims, p.n_points, p.n_embd, p.n_layer, p.n_head, p.injection)


def make_optimizer(model: InContextRegressor, p: Params) -> torch.optim.Adam:
    # fused: one kernel per step instead of a dozen small ops per tensor; on these small models the
    # optimiser step otherwise costs as much as a transformer layer (benchmarks/looped_tf_throughput.py).
    return torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay, fused=True)


def loops_of(p: Params) -> tuple[int, int]:
    """(b, T) at the end of the curriculum; a standard transformer is one pass with gradient."""
    return (p.n_loops, p.loop_window) if p.model == "looped" else (1, 1)


def curriculum_at(p: Params, step: int) -> tuple[int, int, int]:
    """(active dims, points, loops) used at ``step``."""
    c = p.curriculum
    b, window = loops_of(p)
    dims = schedule(step, c.dims.start or p.n_dims, p.n_dims, c.dims.inc, c.dims.interval)
    points = schedule(step, c.points.start or p.n_points, p.n_points, c.points.inc, c.points.interval)
    loops = schedule(step, c.loops.start or window, b, c.loops.inc, c.loops.interval) if p.model == "looped" else 1
    return dims, points, loops


def autocast(p: Params, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if p.bf16 else contextlib.nullcontext()


def seeds_for(seed: int) -> dict[str, int]:
    """Independent streams for model init, training tasks, evaluation prompts and the bootstrap, so that
    e.g. evaluating more often does not shift the training data."""
    init, data, evaluation, bootstrap = np.random.SeedSequence(seed).generate_state(4)
    return {"init": int(init), "data": int(data), "eval": int(evaluation), "bootstrap": int(bootstrap)}


@torch.inference_mode()
def model_predictions(model: InContextRegressor, xs: torch.Tensor, ys: torch.Tensor, loop_counts: list[int],
                      p: Params, device: torch.device) -> dict[int, torch.Tensor]:
    """Predictions (P, n) after each iteration count in ``loop_counts``, from one pass to the largest
    (iteration i's state does not depend on how many come after it)."""
    model.eval()
    last = max(loop_counts)
    out: dict[int, list[torch.Tensor]] = {b: [] for b in loop_counts}
    for i in range(0, xs.shape[0], EVAL_CHUNK):
        prompt = to_prompt(xs[i : i + EVAL_CHUNK], ys[i : i + EVAL_CHUNK]).to(device)
        with autocast(p, device):
            preds = model(prompt, n_loops=last, grad_loops=last)
        for b in loop_counts:
            out[b].append(preds[b - 1].float().cpu())
    model.train()
    return {b: torch.cat(chunks) for b, chunks in out.items()}


def eval_tasks(p: Params, seeds: dict[str, int]):
    """The evaluation prompts: the final task (all d dimensions, all points), the same at every evaluation."""
    gen = torch.Generator().manual_seed(seeds["eval"])
    return sample_tasks(gen, p.eval_prompts, p.n_points, p.n_dims, noise_std=p.noise_std)


def train(p: Params, ctx) -> dict[str, float]:
    device = torch.device(ctx.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(ctx.cpus)))  # one per allotted core: more threads thrash (docs/architecture.md)
    seeds = seeds_for(ctx.seed)
    torch.manual_seed(seeds["init"])
    model = build_model(p).to(device)
    optimizer = make_optimizer(model, p)
    data_gen = torch.Generator().manual_seed(seeds["data"])
    b, window = loops_of(p)
    evaluation = eval_tasks(p, seeds)

    start, loss_sum, loss_count = 0, 0.0, 0
    saved = ctx.load_checkpoint()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        data_gen.set_state(saved["data_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        start, loss_sum, loss_count = saved["step"] + 1, saved["loss_sum"], saved["loss_count"]

    model.train()
    for step in range(start, p.steps):
        dims, points, loops = curriculum_at(p, step)
        batch = sample_tasks(data_gen, p.batch_size, points, p.n_dims, dims, p.noise_std)
        prompt, ys = to_prompt(batch.xs, batch.ys).to(device), batch.ys.to(device)
        with autocast(p, device):
            preds = model(prompt, n_loops=loops, grad_loops=min(window, loops))
            # Mean squared error over prompts, points and the last T iterations (the reference's loss).
            loss = torch.stack([(pred.float() - ys).square().mean() for pred in preds]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1

        if (step + 1) % p.log_every == 0 or step + 1 == p.steps:
            ctx.log(step, train_loss=loss_sum / loss_count, lr=optimizer.param_groups[0]["lr"],
                    n_loops=loops, n_dims=dims, n_points=points)
            loss_sum, loss_count = 0.0, 0
        if p.eval_every and (step + 1) % p.eval_every == 0 and step + 1 < p.steps:
            errors = normalised_errors(model_predictions(model, evaluation.xs, evaluation.ys, [b], p, device)[b],
                                       evaluation.ys, p.n_dims).mean(0)
            ctx.log(step, eval_final_err=float(errors[-1]), eval_mean_err=float(errors.mean()))
        if (step + 1) % p.checkpoint_every == 0:
            ctx.save_checkpoint({
                "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "data_rng": data_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "curriculum": dict(zip(("n_dims", "n_points", "n_loops"), (dims, points, loops))),
                "loss_sum": loss_sum, "loss_count": loss_count,
            })

    return final_evaluation(model, p, evaluation, seeds, device, ctx)


def final_evaluation(model: InContextRegressor, p: Params, evaluation, seeds: dict[str, int],
                     device: torch.device, ctx) -> dict[str, float]:
    """Error curves of the model (at b loops and at the extra ``eval_loops``) and of the baselines, on the
    same prompts; every curve becomes metrics, a JSON artifact and one plot."""
    b, _ = loops_of(p)
    extra = sorted(set(p.eval_loops if p.eval_loops is not None else [2 * b])) if p.model == "looped" else []
    rng = np.random.default_rng(seeds["bootstrap"])
    xs, ys = evaluation.xs, evaluation.ys
    preds = model_predictions(model, xs, ys, [b, *extra], p, device)

    curves: dict[str, Curve] = {"model": curve(normalised_errors(preds[b], ys, p.n_dims), rng, p.bootstrap_trials)}
    for loops in extra:
        curves[f"model_loops{loops}"] = curve(normalised_errors(preds[loops], ys, p.n_dims), rng, p.bootstrap_trials)
    for name, baseline in BASELINES.items():
        curves[name] = curve(normalised_errors(baseline(xs, ys), ys, p.n_dims), rng, p.bootstrap_trials)

    metrics: dict[str, Any] = {}
    for k, value in enumerate(curves["model"].mean):
        metrics[f"err_k{k}"] = value
    for name, c in curves.items():
        for k, value in enumerate(c.mean):
            if name.startswith("model_loops"):
                metrics[f"err_k{k}_loops{name.removeprefix('model_loops')}"] = value
            elif name != "model":
                metrics[f"{name}_err_k{k}"] = value
    metrics["final_err"] = curves["model"].mean[-1]
    metrics["final_err_lo"], metrics["final_err_hi"] = curves["model"].lo[-1], curves["model"].hi[-1]
    metrics["n_params"] = sum(t.numel() for t in model.parameters())

    meta = {"model": p.model, "n_dims": p.n_dims, "n_points": p.n_points, "n_loops": b, "eval_loops": extra,
            "eval_prompts": p.eval_prompts, "interval": "bootstrap 5-95%", "k": "labelled points seen"}
    write_curves(curves, meta, ctx.artifact_dir / "error_curves.json")
    label = f"looped L={p.n_layer}, b={b}, T={p.loop_window}" if p.model == "looped" else f"standard, {p.n_layer} layers"
    plot_curves(curves, p.n_dims, f"{label}; d={p.n_dims}", ctx.artifact_dir / "error_vs_k.png")
    return {k: float(v) for k, v in metrics.items()}
