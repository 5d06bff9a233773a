"""looped_tf: looped transformers learning linear regression in context (Yang et al., ICLR 2024, on the
setting of Garg et al. 2022). Defaults are the CPU setting (d 5, 11 points, n_embd 64, a few minutes on one
core; evaluated at 100 loops); configs/looped_tf_paper.yaml holds the paper's GPU setting and the
reference's 500-loop evaluation.

Modules: data (tasks, prompts, curricula), model (the transformer and its loop), state_mask (masking the
carried state), baselines (least squares, 3-NN, averaging), evaluate (error curves, bootstrap), protocol (which
loop counts are evaluated, the headline), predict (the evaluation forward passes), convergence (when the
loss plateaus), plots, final (the final evaluation), train (the training loop, ``run``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRIC, MODE = "final_err", "min"
CHECKPOINT_EVERY = "checkpoint_every"  # the Params field of its checkpoint interval (steps): PBT may restart it


class Ramp(BaseModel):
    """A curriculum variable: ``start``, + ``inc`` every ``interval`` steps, up to its final value (the
    matching top-level param: n_dims, n_points or n_loops)."""

    model_config = ConfigDict(extra="forbid")

    start: int | None = Field(
        None, ge=1, description="value at step 0; null = the final value from the start (no curriculum)"
    )
    inc: int = Field(1, ge=1, description="increment applied every `interval` steps")
    interval: int = Field(1000, ge=1, description="steps between increments")


class Curriculum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims: Ramp = Field(Ramp(start=2, inc=1, interval=200), description="active dimensions (up to n_dims)")
    points: Ramp = Field(Ramp(start=5, inc=2, interval=200), description="points per prompt (up to n_points)")
    loops: Ramp = Field(
        Ramp(start=None, inc=2, interval=500),
        description="loop iterations (up to n_loops; null start = T, as in the reference scripts, capped at b)",
    )


class StateMask(BaseModel):
    """Before each injection keep only ``pairs`` (x, y) pairs of the carried state, the first or the last ones,
    and set the rest to the injection's neutral value (0 for add, 1 for mul): how much of the state does the
    looped model use? ``during: eval`` masks only evaluation, ``always`` training too."""

    model_config = ConfigDict(extra="forbid")

    keep: Literal["all", "first", "last"] = Field(
        "all", description="all: no mask; first / last: keep the first / last `pairs` pairs"
    )
    pairs: int = Field(0, ge=0, description="N: pairs kept (more than the prompt holds = all of them)")
    during: Literal["eval", "always"] = Field(
        "eval", description="eval: evaluation only; always: training and evaluation"
    )


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # task
    n_dims: int = Field(5, ge=1, description="input dimension d (the final one under the dims curriculum)")
    n_points: int = Field(11, ge=2, description="points per prompt (in-context examples + 1)")
    noise_std: float = Field(0.0, ge=0, description="std of Gaussian noise added to the labels y = w.x")
    # model
    model: Literal["looped", "standard"] = Field(
        "looped", description="looped: n_layer layers applied n_loops times; standard: n_layer layers once"
    )
    n_embd: int = Field(64, ge=1, description="embedding width")
    n_head: int = Field(4, ge=1, description="attention heads (must divide n_embd)")
    n_layer: int = Field(1, ge=1, description="layers in the backbone (L for looped, the depth for standard)")
    n_loops: int = Field(10, ge=1, description="b: loop iterations at the end of the loops curriculum (looped only)")
    loop_window: int = Field(
        5,
        ge=1,
        description=(
            "T: the loss covers the last min(T, b) iterations; earlier ones run without gradient (looped "
            "only; T > b = every iteration gets gradient, as in the reference)"
        ),
    )
    injection: Literal["add", "mul"] = Field(
        "add", description="input injection: z <- f(z + e) or f(z * e) (looped only)"
    )
    state_mask: StateMask = Field(StateMask(), description="mask the carried state before each injection (looped only)")
    # training
    steps: int = Field(3000, ge=1, description="training steps (one fresh batch of tasks each)")
    batch_size: int = Field(64, ge=1, description="prompts per step")
    lr: float = Field(
        1e-3, gt=0, description="Adam learning rate (the peak one under lr_schedule: cosine or warmup_steps)"
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description=(
            "constant: lr at every step (the reference); cosine: after the warmup, lr * (1 + cos(pi * "
            "progress)) / 2, 0 after the last step"
        ),
    )
    warmup_steps: int = Field(
        0, ge=0, description="linear warmup: lr * (step + 1) / warmup_steps for the first warmup_steps steps (0 = none)"
    )
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    curriculum: Curriculum = Field(Curriculum(), description="dims / points / loops curricula")
    bf16: bool = Field(
        False, description="bfloat16 autocast for forward and loss (an option for GPUs; the reference trains in fp32)"
    )
    tf32: bool = Field(True, description="allow TF32 matmuls on CUDA, as the reference does (no effect on CPU)")
    # evaluation and bookkeeping
    eval_prompts: int = Field(1280, ge=2, description="prompts for the evaluation curves")
    eval_every: int = Field(
        1000, ge=0, description="evaluate the model every k steps during training (0 = only at the end)"
    )
    eval_horizon: int = Field(
        100,
        ge=1,
        description=(
            "the long horizon (looped only): the reference evaluates at 500 loops, the last prediction (the "
            "paper preset sets 500); also N, the last loop count of loop_err"
        ),
    )
    headline: Literal["horizon", "b"] = Field(
        "horizon",
        description="final_err at eval_horizon loops (the reference's protocol) or at b = n_loops (looped only)",
    )
    eval_loops: list[int] = Field([], description="extra loop counts to evaluate a looped model at")
    loop_err_k: list[int] | None = Field(
        None, description="in-context positions k drawn in loop_err.png (null = d/2, d and the last)"
    )
    mask_sweep: list[int] = Field(
        [], description="Ns for the state-mask sweep at evaluation: keep the first / last N pairs (looped only)"
    )
    bootstrap_trials: int = Field(1000, ge=10, description="bootstrap resamples for the error bands")
    log_every: int = Field(
        10, ge=1, description="log the mean train loss every k steps", json_schema_extra={"identity": False}
    )
    checkpoint_every: int = Field(
        500, ge=1, description="checkpoint every k steps", json_schema_extra={"identity": False}
    )

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        for name, final in (("dims", self.n_dims), ("points", self.n_points), ("loops", self.n_loops)):
            start = getattr(self.curriculum, name).start
            if start is not None and start > final:
                raise ValueError(f"curriculum.{name}.start ({start}) exceeds its final value ({final})")
        if any(b < 1 for b in self.eval_loops):
            raise ValueError(f"eval_loops must hold loop counts >= 1, got {self.eval_loops}")
        if self.loop_err_k is not None and any(not 0 <= k < self.n_points for k in self.loop_err_k):
            raise ValueError(f"loop_err_k must hold positions in [0, {self.n_points - 1}], got {self.loop_err_k}")
        if any(n < 0 for n in self.mask_sweep):
            raise ValueError(f"mask_sweep must hold pair counts >= 0, got {self.mask_sweep}")
        if self.curriculum.points.start is not None and self.curriculum.points.start < 2:
            raise ValueError("curriculum.points.start must be >= 2")
        return self


def run(params: Params, ctx) -> dict[str, float]:
    from workloads.looped_tf.train import train  # torch is imported only when a run starts

    return train(params, ctx)
