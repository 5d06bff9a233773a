"""looped_tf: sampler and prompt, baselines against their analytic values, loop semantics, state masking,
the evaluation protocol (both horizons, loop_err), determinism, resume, a short real training run, and the
spec files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run, expand
from orchestrator.spec.spec import load_spec
from workloads.looped_tf import Params
from workloads.looped_tf.baselines import averaging, least_squares, nearest_neighbours
from workloads.looped_tf.convergence import convergence_step, plateau
from workloads.looped_tf.data import sample_tasks, schedule, to_prompt
from workloads.looped_tf.model import InContextRegressor
from workloads.looped_tf.protocol import (
    eval_keep,
    evaluated_loops,
    headline_loops,
    long_horizon,
    loop_err_positions,
    loops_of,
    train_keep,
)
from workloads.looped_tf.state_mask import Keep
from workloads.looped_tf.train import curriculum_at, lr_at

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "n_dims": 3,
    "n_points": 7,
    "n_embd": 16,
    "n_head": 2,
    "n_loops": 4,
    "loop_window": 2,
    "batch_size": 16,
    "eval_prompts": 64,
    "bootstrap_trials": 50,
    "eval_every": 10,
    "log_every": 5,
    "eval_horizon": 8,
    "curriculum": {
        "dims": {"start": 2, "interval": 10},
        "points": {"start": 5, "inc": 2, "interval": 10},
        "loops": {"inc": 2, "interval": 10},
    },
}


# ---------------------------------------------------------------- data
def test_sampler_statistics_and_curriculum_zeroing():
    gen = torch.Generator().manual_seed(0)
    batch = sample_tasks(gen, 4000, 10, 6, active_dims=4)
    xs, ws = batch.xs[..., :4], batch.ws[:, :4]
    assert abs(xs.mean().item()) < 0.01 and abs(xs.var().item() - 1) < 0.01
    assert abs(ws.mean().item()) < 0.05 and abs(ws.var().item() - 1) < 0.05
    # x coordinates are independent: the sample covariance is close to the identity
    cov = torch.cov(xs.reshape(-1, 4).T)
    assert torch.allclose(cov, torch.eye(4), atol=0.02)
    assert (batch.xs[..., 4:] == 0).all() and (batch.ws[:, 4:] == 0).all()
    assert torch.allclose(batch.ys, torch.einsum("bnd,bd->bn", batch.xs, batch.ws))
    # E[y^2] = active dims
    assert abs(batch.ys.var().item() - 4) < 0.15


def test_noise_has_the_asked_std():
    clean = sample_tasks(torch.Generator().manual_seed(1), 2000, 10, 3)
    noisy = sample_tasks(torch.Generator().manual_seed(1), 2000, 10, 3, noise_std=0.5)
    assert torch.equal(clean.xs, noisy.xs) and torch.equal(clean.ws, noisy.ws)
    assert abs((noisy.ys - clean.ys).std().item() - 0.5) < 0.01


def test_prompt_interleaves_x_and_padded_y_tokens():
    gen = torch.Generator().manual_seed(2)
    batch = sample_tasks(gen, 3, 4, 5)
    prompt = to_prompt(batch.xs, batch.ys)
    assert prompt.shape == (3, 8, 5)
    for i in range(4):
        assert torch.equal(prompt[:, 2 * i], batch.xs[:, i])
        assert torch.equal(prompt[:, 2 * i + 1, 0], batch.ys[:, i])
        assert (prompt[:, 2 * i + 1, 1:] == 0).all()


def test_schedule_matches_the_reference_counter():
    # The reference increments after step i when (i + 1) % interval == 0 and caps at end.
    value, expected = 5, []
    for i in range(60):
        expected.append(value)
        if (i + 1) % 7 == 0:
            value = min(value + 2, 12)
    assert [schedule(i, 5, 12, 2, 7) for i in range(60)] == expected
    p = Params(**TINY)
    assert curriculum_at(p, 0) == (2, 5, 2) and curriculum_at(p, 10) == (3, 7, 4)
    assert curriculum_at(Params(**{**TINY, "model": "standard"}), 0)[2] == 1


def test_lr_schedule_constant_by_default_warmup_and_cosine():
    p = Params(steps=100, lr=2e-3)
    assert (p.lr_schedule, p.warmup_steps) == ("constant", 0)
    assert all(lr_at(p, s) == 2e-3 for s in range(100))  # the default changes nothing
    warm = Params(steps=100, lr=2e-3, warmup_steps=10)
    assert lr_at(warm, 0) == pytest.approx(2e-4) and lr_at(warm, 9) == pytest.approx(2e-3) and lr_at(warm, 50) == 2e-3
    cos = Params(steps=100, lr=2e-3, lr_schedule="cosine", warmup_steps=10)
    assert lr_at(cos, 4) == pytest.approx(1e-3) and lr_at(cos, 10) == pytest.approx(2e-3)
    assert lr_at(cos, 55) == pytest.approx(1e-3)  # half way through the cosine
    values = [lr_at(cos, s) for s in range(10, 100)]
    assert all(a > b for a, b in itertools.pairwise(values)) and 0 < values[-1] < 1e-5


# ---------------------------------------------------------------- baselines
def test_least_squares_matches_its_analytic_expectation():
    d, n, prompts = 5, 11, 4000
    batch = sample_tasks(torch.Generator().manual_seed(3), prompts, n, d)
    err = ((least_squares(batch.xs, batch.ys) - batch.ys.double()) ** 2 / d).numpy()
    mean, sem = err.mean(0), err.std(0) / np.sqrt(prompts)
    for k in range(d):
        assert abs(mean[k] - (1 - k / d)) < 4 * sem[k] + 1e-3, (k, mean[k])
    assert np.all(mean[d:] < 1e-8)  # interpolation of a noiseless linear function (float32 labels)


def test_averaging_and_nearest_neighbours_by_hand():
    batch = sample_tasks(torch.Generator().manual_seed(4), 2, 6, 3)
    xs, ys = batch.xs.double(), batch.ys.double()
    avg, knn = averaging(batch.xs, batch.ys), nearest_neighbours(batch.xs, batch.ys)
    assert (avg[:, 0] == 0).all() and (knn[:, 0] == 0).all()
    for b in range(2):
        for k in range(1, 6):
            w_hat = (xs[b, :k] * ys[b, :k, None]).mean(0)
            assert torch.isclose(avg[b, k], xs[b, k] @ w_hat)
            dist = ((xs[b, :k] - xs[b, k]) ** 2).sum(1)
            nearest = sorted(range(k), key=lambda i: dist[i].item())[:3]
            assert torch.isclose(knn[b, k], ys[b, nearest].mean())


# ---------------------------------------------------------------- loop semantics
def _model(injection: str = "add") -> InContextRegressor:
    torch.manual_seed(0)
    return InContextRegressor(n_dims=3, n_points=5, n_embd=16, n_layer=1, n_head=2, injection=injection)


def _prompt() -> torch.Tensor:
    batch = sample_tasks(torch.Generator().manual_seed(5), 4, 5, 3)
    return to_prompt(batch.xs, batch.ys)


@pytest.mark.parametrize("injection", ["add", "mul"])
def test_loop_runs_b_iterations_with_input_injection(injection):
    model, prompt = _model(injection), _prompt()
    calls = []
    model.backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].detach().clone()))
    preds = model(prompt, n_loops=6, grad_loops=3)
    assert len(calls) == 6 and len(preds) == 3
    # By hand: z0 neutral, z_{i+1} = backbone(z_i (+|*) e), prediction read at the x tokens.
    e = model.read_in(prompt)
    z = torch.zeros_like(e) if injection == "add" else torch.ones_like(e)
    by_hand = []
    for i in range(6):
        h = z + e if injection == "add" else z * e
        assert torch.allclose(calls[i], h, atol=1e-6)
        z = model.backbone(h)
        by_hand.append(model.read_out(z[:, ::2]).squeeze(-1))
    for got, want in zip(preds, by_hand[3:], strict=False):
        assert torch.allclose(got, want, atol=1e-6)


def test_gradient_flows_only_through_the_last_T_iterations():
    model, prompt = _model(), _prompt()
    backward_calls = []
    model.backbone.register_full_backward_hook(lambda m, gin, gout: backward_calls.append(1))
    preds = model(prompt, n_loops=7, grad_loops=3)
    torch.stack([p.square().mean() for p in preds]).mean().backward()
    assert len(backward_calls) == 3
    # Same gradients as the loss on a state built without gradient, then 3 iterations with it.
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    e = model.read_in(prompt)
    with torch.no_grad():
        z = torch.zeros_like(e)
        for _ in range(4):
            z = model.backbone(z + e)
    outs = []
    for _ in range(3):
        z = model.backbone(z + e)
        outs.append(model.read_out(z[:, ::2]).squeeze(-1))
    torch.stack([o.square().mean() for o in outs]).mean().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-7), n


def test_more_loops_extend_the_same_trajectory_and_standard_is_one_pass():
    model, prompt = _model(), _prompt()
    with torch.no_grad():
        short = model(prompt, n_loops=4)
        long = model(prompt, n_loops=8)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(short, long[:4], strict=False))
        one = model(prompt, n_loops=1)[0]
        direct = model.read_out(model.backbone(model.read_in(prompt))[:, ::2]).squeeze(-1)
        assert torch.allclose(one, direct)


def test_last_layer_on_x_tokens_only_gives_the_same_numbers():
    torch.manual_seed(1)
    model = InContextRegressor(n_dims=3, n_points=5, n_embd=16, n_layer=3, n_head=2)
    h = model.read_in(_prompt())
    full, x_only = model.backbone(h), model.backbone(h, x_tokens_only=True)
    assert x_only.shape == (4, 5, 16)
    assert torch.allclose(full[:, ::2], x_only, atol=1e-6)


def test_causality_prediction_ignores_later_tokens():
    model, prompt = _model(), _prompt()
    changed = prompt.clone()
    changed[:, 5:] += 1.0  # tokens from y_2 on
    with torch.no_grad():
        a, b = model(prompt, n_loops=3)[-1], model(changed, n_loops=3)[-1]
    assert torch.allclose(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3:], b[:, 3:])


# ---------------------------------------------------------------- state mask
def test_keep_positions_count_pairs_from_either_end():
    first, last = Keep("first", 2).positions(10)[:, 0].tolist(), Keep("last", 2).positions(10)[:, 0].tolist()
    assert first == [True] * 4 + [False] * 6 and last == [False] * 6 + [True] * 4
    assert Keep("last", 9).positions(10).all() and not Keep("first", 0).positions(10).any()


@pytest.mark.parametrize(
    "injection,side,pairs", [("add", "last", 2), ("add", "first", 3), ("mul", "last", 1), ("mul", "first", 0)]
)
def test_masked_loop_matches_a_direct_computation(injection, side, pairs):
    model, prompt = _model(injection), _prompt()  # 5 pairs, 10 positions
    neutral = 0.0 if injection == "add" else 1.0
    with torch.no_grad():
        got = model(prompt, n_loops=4, keep=Keep(side, pairs))
        e = model.read_in(prompt)
        z = torch.full_like(e, neutral)
        want = []
        for _ in range(4):
            z = z.clone()
            if side == "last":
                z[:, : 2 * (5 - pairs)] = neutral  # everything before the last `pairs` pairs
            else:
                z[:, 2 * pairs :] = neutral  # everything after the first `pairs` pairs
            z = model.backbone(z + e if injection == "add" else z * e)
            want.append(model.read_out(z[:, ::2]).squeeze(-1))
        unmasked = model(prompt, n_loops=4)
    for a, b in zip(got, want, strict=False):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(got[0], unmasked[0])  # iteration 1 starts from the neutral state either way
    assert not torch.allclose(got[-1], unmasked[-1])  # and the mask does change later iterations


# ---------------------------------------------------------------- protocol and convergence
def test_protocol_loop_counts_and_headline():
    p = Params(n_loops=10, eval_horizon=50, eval_loops=[20, 10])
    assert (evaluated_loops(p), headline_loops(p), loops_of(p)) == ([10, 20, 50], 50, (10, 5))
    assert headline_loops(Params(n_loops=10, headline="b")) == 10
    standard = Params(model="standard", eval_horizon=50)
    assert (evaluated_loops(standard), headline_loops(standard), long_horizon(standard)) == ([1], 1, 1)
    assert loop_err_positions(Params(n_dims=5, n_points=11)) == [2, 5, 10]
    assert eval_keep(Params()) is None and train_keep(Params(state_mask={"keep": "last", "pairs": 3})) is None
    assert train_keep(Params(state_mask={"keep": "last", "pairs": 3, "during": "always"})) == Keep("last", 3)


def test_convergence_step_is_the_first_step_within_10_percent_of_the_plateau():
    losses = [1.0, 0.5, 0.3, 0.2, 0.12, 0.115, 0.09] + [0.1] * 13  # plateau: mean of the last 2 = 0.1
    history = [(10 * i + 9, v) for i, v in enumerate(losses)]
    assert plateau(losses) == pytest.approx(0.1)
    assert convergence_step(history) == 69  # 0.12 and 0.115 are still above 1.1 x 0.1; 0.09 is the first below
    assert convergence_step([(5, 2.0)]) == 5
    with pytest.raises(ValueError):
        convergence_step([])


# ---------------------------------------------------------------- runs through the worker
def _execute(tmp_path: Path, name: str, params: dict, seed: int = 0, callbacks=None) -> tuple[str, list[dict]]:
    run_dir = RunDir(tmp_path / name)
    if not run_dir.spec_file.exists():
        run = Run("looped_tf", Params(**params).model_dump(mode="json"), seed, "test")
        run_dir.create({"run": run.to_dict(), "run_id": "x", "experiment_id": "0", "cpus": 1, "gpus": 0})
    status = worker.execute(run_dir.path, extra_callbacks=callbacks)
    records, _ = read_journal(run_dir.journal)
    return status, records


def _curve(records: list[dict]) -> dict[int, dict]:
    """Last logged metrics per step (a resumed run logs some steps twice; the later attempt counts)."""
    out: dict[int, dict] = {}
    for r in records:
        if r["event"] == "metrics":
            out.setdefault(r["step"], {}).update(r["metrics"])
    return out


def _final(records: list[dict]) -> dict:
    return [r for r in records if r["event"] == "end"][-1]["final"]


def test_seeded_run_is_deterministic_and_writes_its_artifacts(tmp_path):
    params = {**TINY, "steps": 30}
    status_a, rec_a = _execute(tmp_path, "a", params, seed=7)
    status_b, rec_b = _execute(tmp_path, "b", params, seed=7)
    _, rec_c = _execute(tmp_path, "c", params, seed=8)
    assert status_a == status_b == "FINISHED"
    assert _curve(rec_a) == _curve(rec_b) and _final(rec_a) == _final(rec_b)
    assert _final(rec_a)["final_err"] != _final(rec_c)["final_err"]
    final, curve = _final(rec_a), _curve(rec_a)
    k_keys = [f"err_k{k}" for k in range(7)]
    for prefix in ("", "ls_", "knn_", "avg_"):
        assert all(f"{prefix}{k}" in final for k in k_keys)
    assert all(f"err_k{k}_loops{b}" in final for k in range(7) for b in (4, 8)) and final["n_params"] > 0
    assert (
        final["final_err"] == final["err_k6"] and final["final_err_lo"] <= final["final_err"] <= final["final_err_hi"]
    )
    # The headline is the long horizon (8 loops here), reported beside the error at b = 4.
    assert final["final_err"] == final["final_err_long"] == final["err_k6_loops8"] and final["headline_loops"] == 8
    assert final["final_err_b"] == final["err_k6_loops4"] != final["final_err"]
    # (loop_err is logged at steps 1..N too: step = loop count for it, a training step for the others)
    assert set(curve[4]) - {"loop_err"} == {"train_loss", "train_loss_scaled", "lr", "n_loops", "n_dims", "n_points"}
    assert (curve[4]["n_dims"], curve[4]["n_points"], curve[4]["n_loops"]) == (2, 5, 2)
    assert (curve[29]["n_dims"], curve[29]["n_points"], curve[29]["n_loops"]) == (3, 7, 4)
    assert "eval_final_err" in curve[9]
    artifacts = tmp_path / "a" / "artifacts"
    curves = json.loads((artifacts / "error_curves.json").read_text())["curves"]
    assert set(curves) == {"model", "model_loops4", "model_loops8", "ls", "knn", "avg"}
    assert curves["ls"]["mean"][5] == pytest.approx(final["ls_err_k5"])
    for png in ("error_vs_k.png", "loop_err.png"):
        assert (artifacts / png).stat().st_size > 1000
    # loop_err: one point per loop count 1..N (step = loop count); it agrees with the curves at b and N.
    loop_err = {
        r["step"]: r["metrics"]["loop_err"] for r in rec_a if r["event"] == "metrics" and "loop_err" in r["metrics"]
    }
    assert sorted(loop_err) == list(range(1, 9))
    assert loop_err[4] == pytest.approx(final["final_err_b"]) and loop_err[8] == pytest.approx(final["final_err_long"])
    by_loop = json.loads((artifacts / "loop_err.json").read_text())["by_loop"]
    assert by_loop["6"] == pytest.approx([loop_err[i] for i in range(1, 9)])
    # train_loss_scaled = train_loss / active d (the window at step 4 is all at d = 2)
    assert curve[4]["train_loss_scaled"] == pytest.approx(curve[4]["train_loss"] / 2)
    assert 0 <= final["converge_step"] <= 29


def test_bf16_autocast_path_runs(tmp_path):
    # The GPU setting's flag, exercised on the CPU (bfloat16 autocast exists there too).
    status, records = _execute(tmp_path, "bf16", {**TINY, "steps": 6, "bf16": True, "eval_every": 0})
    assert status == "FINISHED" and np.isfinite(_final(records)["final_err"])


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    params = {**TINY, "steps": 40, "checkpoint_every": 10, "log_every": 3, "eval_every": 0}
    _, straight = _execute(tmp_path, "straight", params)

    def kill_at_step_25(step, metrics):  # after the checkpoint at step 19, mid-way through a log window
        if step >= 25:
            raise KeyboardInterrupt("simulated kill")

    status, _ = _execute(tmp_path, "resumed", params, callbacks=[kill_at_step_25])
    assert status == "KILLED"
    status, resumed = _execute(tmp_path, "resumed", params)
    assert status == "FINISHED"
    starts = [r for r in resumed if r["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] is not None
    assert _curve(resumed) == _curve(straight)
    assert _final(resumed) == _final(straight)


def test_the_logged_lr_follows_the_schedule(tmp_path):
    params = {**TINY, "steps": 20, "lr": 3e-3, "lr_schedule": "cosine", "warmup_steps": 5, "eval_every": 0}
    _, records = _execute(tmp_path, "cosine", params)
    curve, p = _curve(records), Params(**params)
    assert [curve[s]["lr"] for s in (4, 9, 14, 19)] == pytest.approx([lr_at(p, s) for s in (4, 9, 14, 19)])
    assert curve[4]["lr"] == pytest.approx(3e-3) and curve[19]["lr"] < curve[9]["lr"] < 3e-3


def test_T_above_b_trains_every_iteration_with_gradient(tmp_path, monkeypatch):
    # The reference: horizon_start = max(0, n_loops - T), so T > b puts every iteration in the loss.
    from workloads.looped_tf import train as train_module

    backward_calls: list[int] = []
    build = train_module.build_model

    def counting_model(p):
        model = build(p)
        model.backbone.register_full_backward_hook(lambda m, gin, gout: backward_calls.append(1))
        return model

    monkeypatch.setattr(train_module, "build_model", counting_model)
    params = {**TINY, "n_loops": 3, "loop_window": 6, "steps": 4, "eval_every": 0, "log_every": 2, "eval_horizon": 3}
    status, records = _execute(tmp_path, "t_above_b", params)
    assert status == "FINISHED"
    assert len(backward_calls) == 4 * 3  # 4 steps x b = 3 iterations, all with gradient
    assert {r["metrics"]["n_loops"] for r in records if r["event"] == "metrics" and "n_loops" in r["metrics"]} == {3}


def test_state_mask_at_eval_leaves_training_alone_and_always_changes_it(tmp_path):
    base = {**TINY, "steps": 10, "eval_every": 0, "log_every": 5}
    mask = {"keep": "last", "pairs": 2}
    _, plain = _execute(tmp_path, "plain", base)
    _, at_eval = _execute(tmp_path, "eval", {**base, "state_mask": {**mask, "during": "eval"}})
    _, always = _execute(tmp_path, "always", {**base, "state_mask": {**mask, "during": "always"}})
    losses = [[c["train_loss"] for c in _curve(r).values() if "train_loss" in c] for r in (plain, at_eval, always)]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    assert _final(plain)["final_err"] != _final(at_eval)["final_err"]


def test_headline_b_and_the_mask_sweep(tmp_path):
    params = {**TINY, "steps": 10, "eval_every": 0, "headline": "b", "mask_sweep": [0, 2, 7]}
    status, records = _execute(tmp_path, "sweep", params)
    final = _final(records)
    assert status == "FINISHED" and final["headline_loops"] == 4
    assert final["final_err"] == final["final_err_b"] != final["final_err_long"]
    # keeping all 7 pairs is no mask; keeping 0 makes every iteration see the neutral state (= one iteration)
    assert final["mask_last7_err"] == pytest.approx(final["final_err"]) == pytest.approx(final["mask_first7_err"])
    assert final["mask_last0_err"] == pytest.approx(final["mask_first0_err"])
    one_loop = [
        r["metrics"]["loop_err"]
        for r in records
        if r["event"] == "metrics" and r["step"] == 1 and "loop_err" in r["metrics"]
    ]
    assert final["mask_last0_err"] == pytest.approx(one_loop[0])
    logged = {r["step"]: r["metrics"] for r in records if r["event"] == "metrics" and "mask_last_err" in r["metrics"]}
    assert sorted(logged) == [0, 2, 7] and logged[2]["mask_first_err"] == final["mask_first2_err"]
    assert (tmp_path / "sweep" / "artifacts" / "mask_sweep.png").stat().st_size > 1000


@pytest.mark.slow
def test_short_training_beats_the_averaging_baseline_at_k_2d(tmp_path):
    # Small but real: d = 2, 5 points, a 2-layer standard transformer, 700 steps on one core (~10 s).
    # Averaging sits near 0.7 at k = 4; the trained model gets well below it (about 0.25 with this seed).
    params = {
        "n_dims": 2,
        "n_points": 5,
        "model": "standard",
        "n_layer": 2,
        "n_embd": 32,
        "n_head": 2,
        "steps": 700,
        "batch_size": 64,
        "lr": 3e-3,
        "eval_every": 0,
        "eval_prompts": 512,
        "bootstrap_trials": 100,
        "curriculum": {"dims": {"start": None}, "points": {"start": None}},
    }
    status, records = _execute(tmp_path, "learn", params)
    assert status == "FINISHED"
    final = _final(records)
    assert final["err_k4"] < final["avg_err_k4"], (final["err_k4"], final["avg_err_k4"])
    assert final["err_k4"] < 0.5 * final["err_k0"]
    losses = [r["metrics"]["train_loss"] for r in records if r["event"] == "metrics" and "train_loss" in r["metrics"]]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # the training loss fell as well


# ---------------------------------------------------------------- spec files
def _load(name: str):
    """A spec file as planned on any machine: the GPU presets ask for more than this one has, and the
    local backend refuses that at load time (resources do not enter the params or the plan)."""
    return load_spec(ROOT / "configs" / name, sets=["resources.cpus=1", "resources.gpus=0"])


def _variants(name: str) -> dict[str, Params]:
    return {r.variant: Params(**r.params) for r in expand(_load(name))}


@pytest.mark.parametrize("name", ["looped_tf.yaml", "looped_tf_cpu.yaml"])
def test_cpu_spec_files_are_valid_and_variants_differ(name):
    runs = expand(_load(name))
    variants = {r.variant: r for r in runs}
    assert set(variants) == {"looped", "standard"}
    assert variants["looped"].group != variants["standard"].group
    p = Params(**variants["looped"].params)
    assert (p.model, p.n_layer, p.n_loops, p.loop_window, p.headline, p.eval_horizon) == (
        "looped",
        1,
        10,
        5,
        "horizon",
        100,
    )


def test_the_cpu_preset_is_the_smoke_preset_trained_longer():
    # docs/looped_tf.md and benchmarks/looped_tf_cpu_preset.py rely on it: the first 3,000 steps are the same.
    smoke, long = _variants("looped_tf.yaml"), _variants("looped_tf_cpu.yaml")
    for v in ("looped", "standard"):
        a, b = smoke[v].model_dump(), long[v].model_dump()
        assert (a.pop("steps"), b.pop("steps")) == (3000, 12000)
        assert a == b


def test_the_picture_preset_is_what_its_docs_report():
    # docs/looped_tf.md ("The picture in 15 minutes") reports these two runs, trained by
    # benchmarks/looped_tf_picture.py from the same file.
    v = _variants("looped_tf_picture.yaml")
    looped, standard = v["looped"], v["standard"]
    assert (looped.n_dims, looped.n_points, looped.n_layer, looped.n_loops, looped.loop_window, looped.steps) == (
        2,
        5,
        1,
        20,
        10,
        14000,
    )
    assert (standard.model, standard.n_layer, standard.steps) == ("standard", 4, 24000)
    assert (looped.lr_schedule, looped.headline, looped.eval_horizon) == ("cosine", "horizon", 100)
    assert curriculum_at(looped, 0) == (2, 5, 10) and curriculum_at(looped, 10**6) == (2, 5, 20)


def test_paper_spec_follows_the_reference():
    v = _variants("looped_tf_paper.yaml")
    assert set(v) == {"looped_b30", "looped_b20", "standard"}
    for name, b in (("looped_b30", 30), ("looped_b20", 20)):
        p = v[name]
        assert (p.n_dims, p.n_points, p.n_embd, p.n_head, p.n_layer, p.n_loops, p.loop_window, p.steps) == (
            20,
            41,
            256,
            8,
            1,
            b,
            15,
            500_000,
        )
        assert (p.bf16, p.tf32, p.eval_horizon, p.headline, p.eval_prompts, p.lr) == (
            False,
            True,
            500,
            "horizon",
            1280,
            1e-4,
        )
        assert curriculum_at(p, 0) == (5, 11, 15) and curriculum_at(p, 10**6) == (20, 41, b)
    assert v["standard"].n_layer == 12 and v["standard"].model == "standard"


def test_lab_spec_plans_as_a_whole():
    runs = expand(_load("looped_tf_lab.yaml"))
    v = {r.variant: Params(**r.params) for r in runs}
    assert len(runs) == 3 * len(v) and len({r.group for r in runs}) == len(v) == 14
    for p in v.values():
        assert (p.n_dims, p.n_points, p.n_head, p.eval_horizon) == (10, 31, 4, 500)
    assert v["standard"].n_layer == 12
    pairs = {(p.n_loops, p.loop_window) for n, p in v.items() if n.startswith("looped_b") and n.count("_") == 2}
    assert pairs == {(b, t) for b in (5, 10, 20, 25) for t in (10, 20)}
    assert curriculum_at(v["looped_b5_T10"], 0)[2] == 5  # T > b: b loops from the start, all with gradient
    assert v["looped_b20_T10_fixed_b"].curriculum.loops.start == 20
    assert v["looped_b20_T10_mask_last15"].state_mask.during == "always"
    assert {v["looped_L2_b10_T10"].n_layer, v["looped_L4_b10_T10"].n_layer} == {2, 4}


def test_a_grid_over_b_and_T_with_T_above_b_plans(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "name: g\nworkload: looped_tf\nparams: {model: looped}\n"
        "grid: {n_loops: [5, 10, 20, 25], loop_window: [10, 20]}\n"
    )
    runs = expand(load_spec(spec))
    assert sorted((r.params["n_loops"], r.params["loop_window"]) for r in runs) == sorted(
        (b, t) for b in (5, 10, 20, 25) for t in (10, 20)
    )


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="n_head"):
        Params(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="eval_loops"):
        Params(eval_loops=[0, 20])
    with pytest.raises(ValueError, match=r"curriculum\.dims\.start"):
        Params(n_dims=3, curriculum={"dims": {"start": 4}})
    with pytest.raises(ValueError, match="loop_err_k"):
        Params(n_points=11, loop_err_k=[11])
    with pytest.raises(ValueError, match="mask_sweep"):
        Params(mask_sweep=[-1])
    with pytest.raises(ValueError):
        Params(state_mask={"keep": "middle"})
