"""The training loop (nanoGPT's train.py in spirit): fresh tasks every step, Adam, curricula on dimension,
prompt length and loop count, periodic evaluation, checkpoints that make a resumed run equal an
uninterrupted one; final.py does the final evaluation.

Data-parallel when the run has several ranks (``ctx.world_size > 1``: ``resources.tasks_per_node`` / ``nodes``,
the process group made by orch): the model is wrapped in DistributedDataParallel, every rank draws the same
global batch of ``batch_size`` prompts from the same generator and trains on its slice of
``batch_size / world_size``, and DDP averages the gradients, so each step's update is the single-process
run's for the same global batch and seed, up to float summation order (docs/looped_tf.md gives the measured
difference). The logged losses are averaged over the ranks; rank 0 alone evaluates and writes artifacts."""

from __future__ import annotations

import math

import numpy as np
import torch

from workloads.looped_tf import Params
from workloads.looped_tf.convergence import convergence_step
from workloads.looped_tf.data import Batch, sample_tasks, schedule, to_prompt
from workloads.looped_tf.final import final_evaluation
from workloads.looped_tf.model import InContextRegressor
from workloads.looped_tf.predict import autocast, trajectory
from workloads.looped_tf.protocol import eval_keep, loops_of, train_keep


def build_model(p: Params) -> InContextRegressor:
    return InContextRegressor(p.n_dims, p.n_points, p.n_embd, p.n_layer, p.n_head, p.injection)


def make_optimizer(model: InContextRegressor, p: Params) -> torch.optim.Adam:
    # fused: one kernel per step instead of a dozen small ops per tensor; on these small models the
    # optimiser step otherwise costs as much as a transformer layer (benchmarks/looped_tf_throughput.py).
    return torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay, fused=True)


def lr_at(p: Params, step: int) -> float:
    """The learning rate of ``step``: a pure function of the step, like the curricula (nothing to checkpoint).
    Constant by default (the reference); an optional linear warmup, then constant or a half cosine to 0."""
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    if p.lr_schedule == "constant":
        return p.lr
    progress = (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps)
    return p.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def curriculum_at(p: Params, step: int) -> tuple[int, int, int]:
    """(active dims, points, loops) used at ``step``. The loops ramp starts at T by default, as the reference
    scripts do, capped at b: with T > b every iteration is inside the window from the first step on."""
    c = p.curriculum
    b, window = loops_of(p)
    dims = schedule(step, c.dims.start or p.n_dims, p.n_dims, c.dims.inc, c.dims.interval)
    points = schedule(step, c.points.start or p.n_points, p.n_points, c.points.inc, c.points.interval)
    loops = (
        schedule(step, min(c.loops.start or window, b), b, c.loops.inc, c.loops.interval) if p.model == "looped" else 1
    )
    return dims, points, loops


def seeds_for(seed: int) -> dict[str, int]:
    """Independent streams for model init, training tasks, evaluation prompts and the bootstrap, so that
    e.g. evaluating more often does not shift the training data."""
    init, data, evaluation, bootstrap = np.random.SeedSequence(seed).generate_state(4)
    return {"init": int(init), "data": int(data), "eval": int(evaluation), "bootstrap": int(bootstrap)}


def eval_tasks(p: Params, seeds: dict[str, int]) -> Batch:
    """The evaluation prompts: the final task (all d dimensions, all points), the same at every evaluation."""
    gen = torch.Generator().manual_seed(seeds["eval"])
    return sample_tasks(gen, p.eval_prompts, p.n_points, p.n_dims, noise_std=p.noise_std)


def data_parallel(model: InContextRegressor, p: Params, ctx, device: torch.device) -> torch.nn.Module:
    """The model as the training step calls it: itself in a one-process run, wrapped in DDP over the ranks
    otherwise (the global batch must split evenly)."""
    world = getattr(ctx, "world_size", 1)
    if world == 1:
        return model
    if p.batch_size % world:
        raise ValueError(f"batch_size ({p.batch_size}) must be a multiple of the run's world size ({world})")
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean_over_ranks(values: list[float], ctx) -> list[float]:
    """The ranks' values averaged (every rank gets the mean); a one-process run's values as they are."""
    if getattr(ctx, "world_size", 1) == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return (tensor / ctx.world_size).tolist()


def train(p: Params, ctx) -> dict[str, float]:
    device = torch.device(ctx.device)
    if device.type == "cpu":
        torch.set_num_threads(
            max(1, int(ctx.cpus))
        )  # one per allotted core: more threads thrash (docs/architecture.md)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = p.tf32  # the reference allows TF32 matmuls in its fp32 runs
        torch.backends.cudnn.allow_tf32 = p.tf32
    seeds = seeds_for(ctx.seed)
    torch.manual_seed(seeds["init"])
    model = build_model(p).to(device)
    optimizer = make_optimizer(model, p)
    data_gen = torch.Generator().manual_seed(seeds["data"])
    b, window = loops_of(p)
    keep = train_keep(p)
    evaluation = eval_tasks(p, seeds)

    # The log window: raw loss and loss / active d summed since the last log; history: (step, scaled loss)
    # of every log so far, for the convergence step (checkpointed, so a resumed run finds the same step).
    start, window_sums, loss_count = 0, [0.0, 0.0], 0
    history: list[tuple[int, float]] = []
    saved = ctx.load_checkpoint()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        data_gen.set_state(saved["data_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        start, window_sums, loss_count = saved["step"] + 1, list(saved["window_sums"]), saved["loss_count"]
        history = [tuple(h) for h in saved["history"]]  # type: ignore[misc]

    model.train()
    trained = data_parallel(model, p, ctx, device)
    world, rank = getattr(ctx, "world_size", 1), getattr(ctx, "rank", 0)
    share = p.batch_size // world  # this rank's slice of every global batch
    for step in range(start, p.steps):
        dims, points, loops = curriculum_at(p, step)
        batch = sample_tasks(data_gen, p.batch_size, points, p.n_dims, dims, p.noise_std)
        xs, ys = batch.xs[rank * share : (rank + 1) * share], batch.ys[rank * share : (rank + 1) * share]
        prompt, ys = to_prompt(xs, ys).to(device), ys.to(device)
        with autocast(p, device):
            # The last min(T, loops) iterations carry gradient: the reference's horizon_start = max(0, loops - T).
            preds = trained(prompt, n_loops=loops, grad_loops=min(window, loops), keep=keep)
            # Mean squared error over prompts, points and those iterations (the reference's loss).
            loss = torch.stack([(pred.float() - ys).square().mean() for pred in preds]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(p, step)
        optimizer.step()
        raw = loss.item()
        # / active d: E[y^2] = active d, so predicting 0 scores 1 whatever the curriculum's d (as the lab plots it).
        window_sums, loss_count = [window_sums[0] + raw, window_sums[1] + raw / dims], loss_count + 1

        if (step + 1) % p.log_every == 0 or step + 1 == p.steps:
            window_sums = mean_over_ranks(window_sums, ctx)  # a rank's loss is its slice's; the batch's: their mean
            scaled = window_sums[1] / loss_count
            ctx.log(
                step,
                train_loss=window_sums[0] / loss_count,
                train_loss_scaled=scaled,
                lr=optimizer.param_groups[0]["lr"],
                n_loops=loops,
                n_dims=dims,
                n_points=points,
            )
            history.append((step, scaled))
            window_sums, loss_count = [0.0, 0.0], 0
        if p.eval_every and (step + 1) % p.eval_every == 0 and step + 1 < p.steps and rank == 0:
            # At b loops (cheap, what ASHA compares); the long horizon is evaluated once, at the end.
            errors = trajectory(model, evaluation.xs, evaluation.ys, b, [], p, device, eval_keep(p)).by_loop[-1]
            ctx.log(step, eval_final_err=float(errors[-1]), eval_mean_err=float(errors.mean()))
        if (step + 1) % p.checkpoint_every == 0:
            # the window so far as the batch's (mean over ranks): every rank resumes from rank 0's checkpoint
            window_sums = mean_over_ranks(window_sums, ctx)
            ctx.save_checkpoint(
                {
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "data_rng": data_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    "curriculum": dict(zip(("n_dims", "n_points", "n_loops"), (dims, points, loops), strict=False)),
                    "window_sums": window_sums,
                    "loss_count": loss_count,
                    "history": history,
                }
            )

    if rank != 0:  # rank 0 evaluates and writes the artifacts; the run's result is its
        return {}
    metrics = final_evaluation(model, p, evaluation, seeds, device, ctx)
    metrics["converge_step"] = float(convergence_step(history))
    return metrics
