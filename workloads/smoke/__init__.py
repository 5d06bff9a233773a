"""smoke: a deterministic, seeded, noisy decaying curve. For checking an installation or a cluster, and
for orch's own tests and benchmarks. It checkpoints every step, so it also exercises resume."""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, ConfigDict, Field

METRIC, MODE = "final_loss", "min"
METRICS = ("loss", "final_loss")  # every name it reports: a spec's `metric:` is checked against them
CHECKPOINT_EVERY = "checkpoint_every"  # the Params field of its checkpoint interval (steps): PBT may restart it


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1, description="number of logged steps")
    sleep_s: float = Field(0.0, ge=0, description="sleep per step (simulates work)")
    noise: float = Field(0.05, ge=0, description="scale of the seeded noise on the curve")
    offset: float = Field(0.0, description="the value the loss decays toward")
    fail_at_step: int | None = Field(None, description="raise an error at this step")
    nan_at_step: int | None = Field(None, description="the loss becomes NaN from this step on (a divergence)")
    checkpoint_every: int = Field(
        1, ge=1, description="checkpoint every k steps", json_schema_extra={"identity": False}
    )  # cannot change a result


def run(params: Params, ctx) -> dict[str, float]:
    rng = ctx.rng
    start, loss = 0, float("nan")
    saved = ctx.load_checkpoint()
    if saved is not None:
        start, rng.bit_generator.state = saved["step"] + 1, saved["rng"]
        loss = saved["loss"]
    for step in range(start, params.steps):
        if params.fail_at_step is not None and step == params.fail_at_step:
            raise RuntimeError(f"smoke: failing at step {step} as asked (fail_at_step)")
        loss = params.offset + math.exp(-3.0 * step / params.steps) + params.noise * float(rng.standard_normal())
        if params.nan_at_step is not None and step >= params.nan_at_step:
            loss = float("nan")
        ctx.log(step, loss=loss)
        if params.sleep_s:
            time.sleep(params.sleep_s)
        if (step + 1) % params.checkpoint_every == 0:
            ctx.save_checkpoint({"step": step, "rng": rng.bit_generator.state, "loss": loss})
    return {"final_loss": loss}
