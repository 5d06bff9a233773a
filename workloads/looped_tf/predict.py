"""The evaluation forward passes. One pass of ``n_loops`` iterations gives the predictions after every
iteration (iteration i's state does not depend on how many come after it), so the error at every loop
count 1..N (loop_err) and the full curves at the chosen loop counts come from the same pass."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from workloads.looped_tf import Params
from workloads.looped_tf.data import to_prompt
from workloads.looped_tf.evaluate import normalised_errors
from workloads.looped_tf.model import InContextRegressor
from workloads.looped_tf.state_mask import Keep

EVAL_CHUNK = 256  # prompts per forward pass at evaluation: bounds memory on long prompts (N loops x chunk x n)


def autocast(p: Params, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if p.bf16 else contextlib.nullcontext()


@dataclass
class Trajectory:
    by_loop: np.ndarray  # (N, n): mean normalised error after iteration 1..N at every position k
    per_prompt: dict[int, np.ndarray]  # loop count -> (P, n) normalised errors, for the bootstrap curves


@torch.inference_mode()
def trajectory(
    model: InContextRegressor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    n_loops: int,
    keep_at: list[int],
    p: Params,
    device: torch.device,
    keep: Keep | None = None,
) -> Trajectory:
    """Errors after every iteration 1..``n_loops`` (mean over prompts) and per prompt at ``keep_at``."""
    if any(not 1 <= b <= n_loops for b in keep_at):
        raise ValueError(f"loop counts {keep_at} outside 1..{n_loops}")
    was_training = model.training
    model.eval()
    sums = np.zeros((n_loops, ys.shape[1]))
    kept: dict[int, list[np.ndarray]] = {b: [] for b in keep_at}
    for i in range(0, xs.shape[0], EVAL_CHUNK):
        chunk_ys = ys[i : i + EVAL_CHUNK]
        prompt = to_prompt(xs[i : i + EVAL_CHUNK], chunk_ys).to(device)
        with autocast(p, device):
            preds = model(prompt, n_loops=n_loops, grad_loops=n_loops, keep=keep)
        for loop, pred in enumerate(preds, start=1):
            errors = normalised_errors(pred.float(), chunk_ys, p.n_dims)
            sums[loop - 1] += errors.sum(0)
            if loop in kept:
                kept[loop].append(errors)
    model.train(was_training)
    return Trajectory(sums / xs.shape[0], {b: np.concatenate(chunks) for b, chunks in kept.items()})
