"""looped_tf: looped transformers learning linear regression in context (Yang et al., ICLR 2024, on the
setting of Garg et al. 2022). Defaults are the CPU setting (d 5, 11 points, n_embd 64, a few minutes on one
core); configs/looped_tf_paper.yaml holds the paper's GPU setting.

Modules: data (tasks, prompts, curricula), model (the transformer and its loop), baselines (least squares,
3-NN, averaging), evaluate (error curves, bootstrap, plot), train (the training loop, ``run``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRIC, MODE = "final_err", "min"


class Ramp(BaseModel):
    """A curriculum variable: ``start``, + ``inc`` every ``interval`` steps, up to its final value (the
    matching top-level param: n_dims, n_points or n_loops)."""

    model_config = ConfigDict(extra="forbid")

    start: int | None = Field(None, ge=1, description="value at step 0; null = the final value from the start (no curriculum)")
    inc: int = Field(1, ge=1, description="increment applied every `interval` steps")
    interval: int = Field(1000, ge=1, description="steps between increments")


class Curriculum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims: Ramp = Field(Ramp(start=2, inc=1, interval=200), description="active dimensions (up to n_dims)")
    points: Ramp = Field(Ramp(start=5, inc=2, interval=200), description="points per prompt (up to n_points)")
    loops: Ramp = Field(Ramp(start=None, inc=2, interval=500),
                        description="loop iterations (up to n_loops; null start = loop_window, as in the reference scripts)")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # task
    n_dims: int = Field(5, ge=1, description="input dimension d (the final one under the dims curriculum)")
    n_points: int = Field(11, ge=2, description="points per prompt (in-context examples + 1)")
    noise_std: float = Field(0.0, ge=0, description="std of Gaussian noise added to the labels y = w.x")
    # model
    model: Literal["looped", "standard"] = Field("looped", description="looped: n_layer layers applied n_loops times; standard: n_layer layers once")
    n_embd: int = Field(64, ge=1, description="embedding width")
    n_head: int = Field(4, ge=1, description="attention heads (must divide n_embd)")
    n_layer: int = Field(1, ge=1, description="layers in the backbone (L for looped, the depth for standard)")
    n_loops: int = Field(10, ge=1, description="b: loop iterations at the end of the loops curriculum (looped only)")
    loop_window: int = Field(5, ge=1, description="T: the loss covers the last T iterations; earlier ones run without gradient (looped only)")
    injection: Literal["add", "mul"] = Field("add", description="input injection: z <- f(z + e) or f(z * e) (looped only)")
    # training
    steps: int = Field(3000, ge=1, description="training steps (one fresh batch of tasks each)")
    batch_size: int = Field(64, ge=1, description="prompts per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (constant)")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    curriculum: Curriculum = Field(Curriculum(), description="dims / points / loops curricula")
    bf16: bool = Field(False, description="bfloat16 autocast for forward and loss (meant for GPUs)")
    # evaluation and bookkeeping
    eval_prompts: int = Field(1280, ge=2, description="prompts for the evaluation curves")
    eval_every: int = Field(1000, ge=0, description="evaluate the model every k steps during training (0 = only at the end)")
    eval_loops: list[int] | None = Field(None, description="extra loop counts to evaluate a looped model at (null = [2 n_loops])")
    bootstrap_trials: int = Field(1000, ge=10, description="bootstrap resamples for the error bands")
    log_every: int = Field(10, ge=1, description="log the mean train loss every k steps")
    checkpoint_every: int = Field(500, ge=1, description="checkpoint every k steps")

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if self.loop_window > self.n_loops:
            raise ValueError(f"loop_window ({self.loop_window}) must be <= n_loops ({self.n_loops})")
        for name, final in (("dims", self.n_dims), ("points", self.n_points), ("loops", self.n_loops)):
            start = getattr(self.curriculum, name).start
            if start is not None and start > final:
                raise ValueError(f"curriculum.{name}.start ({start}) exceeds its final value ({final})")
        if self.eval_loops is not None and any(b < 1 for b in self.eval_loops):
            raise ValueError(f"eval_loops must hold loop counts >= 1, got {self.eval_loops}")
        if self.curriculum.points.start is not None and self.curriculum.points.start < 2:
            raise ValueError("curriculum.points.start must be >= 2")
        return self


def run(params: Params, ctx) -> dict[str, float]:
    from workloads.looped_tf.train import train  # torch is imported only when a run starts
    return train(params, ctx)
