"""Tasks, prompts and curricula for in-context linear regression (Garg et al. 2022; Yang et al. 2024).

A task is a weight vector w ~ N(0, I_d); its prompt holds points x_i ~ N(0, I_d) and labels y_i = w.x_i
(+ optional Gaussian noise). Under the dimension curriculum only the first ``active_dims`` coordinates
of x and w are drawn, the rest are zero, so the prompt width stays d while the problem is smaller.
All sampling goes through an explicit ``torch.Generator`` on the CPU: the stream is then the same on
any device and its state is one tensor to checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    xs: torch.Tensor  # (B, n, d)
    ys: torch.Tensor  # (B, n)
    ws: torch.Tensor  # (B, d)


def sample_tasks(
    gen: torch.Generator, batch: int, n_points: int, n_dims: int, active_dims: int | None = None, noise_std: float = 0.0
) -> Batch:
    """``batch`` fresh regression tasks with ``n_points`` points each; coordinates >= active_dims are zero."""
    active = n_dims if active_dims is None else active_dims
    if not 1 <= active <= n_dims:
        raise ValueError(f"active_dims must be in [1, {n_dims}], got {active}")
    xs = torch.randn(batch, n_points, n_dims, generator=gen)
    ws = torch.randn(batch, n_dims, generator=gen)
    # Zero rather than draw fewer numbers: the prompt keeps its width and read_in its shape.
    xs[..., active:] = 0.0
    ws[:, active:] = 0.0
    ys = torch.einsum("bnd,bd->bn", xs, ws)
    if noise_std > 0:
        ys = ys + noise_std * torch.randn(ys.shape, generator=gen)
    return Batch(xs, ys, ws)


def to_prompt(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave into x_1, y_1, x_2, y_2, ...: (B, 2n, d), a y token being [y, 0, ..., 0].
    The model predicts y_i from the token x_i, which by causality sees only the i-1 labelled pairs before it."""
    b, n, d = xs.shape
    y_tokens = torch.zeros_like(xs)
    y_tokens[..., 0] = ys
    return torch.stack((xs, y_tokens), dim=2).reshape(b, 2 * n, d)


def schedule(step: int, start: int, end: int, inc: int, interval: int) -> int:
    """Value of a curriculum variable at ``step``: start, + inc every ``interval`` steps, capped at end.
    A pure function of the step (the references keep a counter; the values are the same), so resuming
    needs no curriculum state beyond the step itself."""
    return min(start + inc * (step // interval), end)
