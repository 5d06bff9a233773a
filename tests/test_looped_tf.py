"""looped_tf: sampler and prompt, baselines against their analytic values, loop semantics, determinism,
resume, a short real training run, and the spec files."""

from __future__ import annotations

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
from workloads.looped_tf.data import sample_tasks, schedule, to_prompt
from workloads.looped_tf.model import InContextRegressor
from workloads.looped_tf.train import curriculum_at

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_dims": 3, "n_points": 7, "n_embd": 16, "n_head": 2, "n_loops": 4, "loop_window": 2, "batch_size": 16,
        "eval_prompts": 64, "bootstrap_trials": 50, "eval_every": 10, "log_every": 5,
        "curriculum": {"dims": {"start": 2, "interval": 10}, "points": {"start": 5, "inc": 2, "interval": 10},
                       "loops": {"inc": 2, "interval": 10}}}


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
    for got, want in zip(preds, by_hand[3:]):
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
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(short, long[:4]))
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
    assert all(f"err_k{k}_loops8" in final for k in range(7)) and final["n_params"] > 0
    assert final["final_err"] == final["err_k6"] and final["final_err_lo"] <= final["final_err"] <= final["final_err_hi"]
    assert set(curve[4]) == {"train_loss", "lr", "n_loops", "n_dims", "n_points"}
    assert (curve[4]["n_dims"], curve[4]["n_points"], curve[4]["n_loops"]) == (2, 5, 2)
    assert (curve[29]["n_dims"], curve[29]["n_points"], curve[29]["n_loops"]) == (3, 7, 4)
    assert "eval_final_err" in curve[9]
    artifacts = tmp_path / "a" / "artifacts"
    curves = json.loads((artifacts / "error_curves.json").read_text())["curves"]
    assert set(curves) == {"model", "model_loops8", "ls", "knn", "avg"}
    assert curves["ls"]["mean"][5] == pytest.approx(final["ls_err_k5"])
    assert (artifacts / "error_vs_k.png").stat().st_size > 1000


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


@pytest.mark.slow
def test_short_training_beats_the_averaging_baseline_at_k_2d(tmp_path):
    # Small but real: d = 2, 5 points, a 2-layer standard transformer, 700 steps on one core (~10 s).
    # Averaging sits near 0.7 at k = 4; the trained model gets well below it (about 0.25 with this seed).
    params = {"n_dims": 2, "n_points": 5, "model": "standard", "n_layer": 2, "n_embd": 32, "n_head": 2,
              "steps": 700, "batch_size": 64, "lr": 3e-3, "eval_every": 0, "eval_prompts": 512,
              "bootstrap_trials": 100, "curriculum": {"dims": {"start": None}, "points": {"start": None}}}
    status, records = _execute(tmp_path, "learn", params)
    assert status == "FINISHED"
    final = _final(records)
    assert final["err_k4"] < final["avg_err_k4"], (final["err_k4"], final["avg_err_k4"])
    assert final["err_k4"] < 0.5 * final["err_k0"]
    losses = [r["metrics"]["train_loss"] for r in records if r["event"] == "metrics"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # the training loss fell as well


# ---------------------------------------------------------------- spec files
@pytest.mark.parametrize("name", ["looped_tf.yaml", "looped_tf_paper.yaml"])
def test_spec_files_are_valid_and_variants_differ(name):
    spec = load_spec(ROOT / "configs" / name)
    runs = expand(spec)
    variants = {r.variant: r for r in runs}
    assert set(variants) == {"looped", "standard"}
    assert variants["looped"].group != variants["standard"].group
    p = Params(**variants["looped"].params)
    assert p.model == "looped" and p.n_layer == 1 and p.loop_window < p.n_loops
    if name == "looped_tf_paper.yaml":
        assert (p.n_dims, p.n_points, p.n_embd, p.n_head, p.n_loops, p.loop_window, p.steps) == (20, 41, 256, 8, 20, 15, 500_000)
        assert Params(**variants["standard"].params).n_layer == 12


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="loop_window"):
        Params(n_loops=4, loop_window=5)
    with pytest.raises(ValueError, match="n_head"):
        Params(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="eval_loops"):
        Params(eval_loops=[0, 20])
    with pytest.raises(ValueError, match="curriculum.dims.start"):
        Params(n_dims=3, curriculum={"dims": {"start": 4}})
