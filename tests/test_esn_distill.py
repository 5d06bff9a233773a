"""esn_distill: layer pairing and padding masks, the readout objective vs the linear baseline, scores,
determinism, resume, the offline error, and a run on a teacher loaded with from_pretrained."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.errors import InputError
from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from workloads.esn.reservoir import esn_states
from workloads.esn_distill import ESNParams, Params, distill
from workloads.esn_distill.data import build_tokenizer, make_corpus
from workloads.esn_distill.metrics import ScoreAccumulator
from workloads.esn_distill.teacher import (
    HiddenStateCache,
    OneDNNLinear,
    linears_on_onednn,
    load_pretrained,
    pad,
    random_teacher,
)

TINY = {
    "teacher": {
        "config": "bert-tiny",
        "num_layers": 3,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "batch_tokens": 256,
    },
    "data": {"source": "text", "n_samples": 40, "max_len": 20, "min_len": 4, "vocab_size": 1500},
    "esn": {"units": 24, "direction": "both", "ridges": [0.01, 1.0, 100.0], "batch_tokens": 200},
}


def execute(path: Path, params: dict, seed: int = 0, callbacks=None) -> tuple[str, list[dict]]:
    rd = RunDir(path)
    if not rd.spec_file.exists():
        rd.create(
            {
                "run": Run("esn_distill", params, seed, "base").to_dict(),
                "run_id": "x",
                "experiment_id": "0",
                "cpus": 1,
                "gpus": 0,
            }
        )
    status = worker.execute(rd.path, extra_callbacks=callbacks)
    records, _ = read_journal(rd.journal)
    return status, records


def final_of(records) -> dict:
    ends = [r for r in records if r["event"] == "end"]
    assert ends[-1]["status"] == "FINISHED", ends[-1]
    return ends[-1]["final"]


def steps_of(records) -> dict[int, dict]:
    return {r["step"]: r["metrics"] for r in records if r["event"] == "metrics"}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny random teacher, its corpus and its hidden-state cache."""
    p = Params.model_validate(TINY)
    tok = build_tokenizer(None, p.data.vocab_size)
    model = random_teacher(
        "bert-tiny",
        3,
        len(tok),
        p.data.max_len,
        seed=3,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        init_range=0.1,
    ).eval()
    corpus = make_corpus(p.data, tok, len(tok), seed=3)
    cache = HiddenStateCache(tmp_path_factory.mktemp("cache"), "f")
    cache.write(model, corpus, batch_tokens=128, device="cpu")
    return p, model, corpus, cache


def test_corpus_split_is_by_sample_disjoint_and_length_sorted(tiny_setup):
    p, _, corpus, _ = tiny_setup
    b = corpus.bounds
    assert b["train"][0] == 0 and b["train"][1] == b["val"][0] and b["val"][1] == b["test"][0]
    assert b["test"][1] == len(corpus.samples) == p.data.n_samples
    assert b["test"][1] - b["test"][0] == round(0.2 * 40) and b["val"][1] - b["val"][0] == round(0.15 * 40)
    for split in ("train", "val", "test"):
        lens = corpus.lengths[slice(*b[split])]
        assert list(lens) == sorted(lens, reverse=True)
    assert all(s[0] == 2 and s[-1] == 3 and len(s) <= 20 for s in corpus.samples)  # [CLS] ... [SEP]


def test_layer_pairing_and_padding_masked_out_of_the_cache(tiny_setup):
    _, model, corpus, cache = tiny_setup
    meta = cache.meta()
    assert meta["n_states"] == 4 and meta["n_tokens"] == corpus.n_tokens
    layers = [cache.load(k) for k in range(4)]
    assert all(h.shape == (corpus.n_tokens, 32) for h in layers)
    off = corpus.offsets
    # Each sample alone, unpadded, gives the rows the padded batches wrote: padding never entered a token.
    for k in (0, 7, len(corpus.samples) - 1):
        with torch.inference_mode():
            hs = model(input_ids=torch.from_numpy(corpus.samples[k][None]), output_hidden_states=True).hidden_states
        for i in range(4):
            np.testing.assert_allclose(layers[i][off[k] : off[k + 1]], hs[i][0].numpy(), atol=2e-5)
    # Layer i's pair is (hidden_states[i], hidden_states[i+1]): the embeddings then one encoder layer.
    with torch.inference_mode():
        ids = torch.from_numpy(corpus.samples[0][None])
        emb = model.embeddings(input_ids=ids)
        out1 = model.encoder.layer[0](emb)
        out1 = out1[0] if isinstance(out1, tuple) else out1
    np.testing.assert_allclose(layers[0][: off[1]], emb[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(layers[1][: off[1]], out1[0].numpy(), atol=2e-5)


def test_a_bfloat16_teacher_moves_the_hidden_states_a_little_and_keeps_the_embeddings(tiny_setup, tmp_path):
    """teacher.precision: bfloat16 runs the forward under autocast: the layers' states move (by far less
    than their variance), the embeddings (no matmul) are bit-identical, so the student's input is the same."""
    p, prepared_model, corpus, cache = tiny_setup
    model = random_teacher(
        "bert-tiny",
        3,
        prepared_model.config.vocab_size,
        p.data.max_len,
        seed=3,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        init_range=0.1,
    )  # the fixture's, unprepared
    bf16 = HiddenStateCache(tmp_path / "bf16", "g")
    bf16.write(model, corpus, batch_tokens=128, device="cpu", precision="bfloat16")
    assert not any(isinstance(m, OneDNNLinear) for m in model.modules())  # autocast's linears instead
    np.testing.assert_array_equal(bf16.load(0), cache.load(0))
    for k in (1, 2, 3):
        want, got = cache.load(k), bf16.load(k)
        nmse = float(((got - want) ** 2).mean() / want.var())
        assert 0 < nmse < 1e-2, (k, nmse)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("packed", [True, False])  # packed weights + fused GELU; the converting fallback
def test_teacher_linears_on_onednn_give_the_same_hidden_states(monkeypatch, packed):
    from workloads.esn_distill import teacher

    if packed:
        assert teacher._HAS_POINTWISE  # torch 2.13's CPU build has the op: the fast path is the one run
    monkeypatch.setattr(teacher, "_HAS_POINTWISE", packed)
    plain = random_teacher(
        "bert-tiny", 2, 300, 32, seed=1, hidden_size=32, num_heads=2, intermediate_size=64, init_range=0.1
    ).eval()
    ids, mask = pad([np.arange(5, 25), np.arange(7, 19)])
    inputs = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "output_hidden_states": True,
    }
    with torch.inference_mode():
        want = [h.clone() for h in plain(**inputs).hidden_states]
        fast = linears_on_onednn(plain)
        got = fast(**inputs).hidden_states
    assert not any(isinstance(m, torch.nn.Linear) for m in fast.modules())
    assert sum(isinstance(m, OneDNNLinear) for m in fast.modules()) == 2 * 6 + 1  # 6 per layer, pooler
    for layer in fast.encoder.layer:  # the GELU runs inside the intermediate product
        assert layer.intermediate.dense.activation == "gelu"
        assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
    for w, g in zip(want, got, strict=False):
        assert float((w - g).norm() / w.norm()) < 1e-5


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_only_the_exact_gelu_is_fused_into_onednn():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_act="gelu_new",
    )  # the tanh approximation
    plain = BertModel(config).eval()
    ids = torch.arange(5, 25)[None]
    with torch.inference_mode():
        want = plain(input_ids=ids).last_hidden_state.clone()
        fast = linears_on_onednn(plain)
        got = fast(input_ids=ids).last_hidden_state
    intermediate = fast.encoder.layer[0].intermediate
    assert intermediate.dense.activation == "none"
    assert not isinstance(intermediate.intermediate_act_fn, torch.nn.Identity)
    assert float((want - got).norm() / want.norm()) < 1e-5


@pytest.mark.parametrize("vendor", ["AuthenticAMD", "GenuineIntel"])
@pytest.mark.parametrize("avx512", [True, False])
def test_teacher_linears_go_to_onednn_only_where_it_is_faster(monkeypatch, avx512, vendor):
    from workloads.esn_distill import teacher

    monkeypatch.setattr(teacher.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if avx512 else "AVX2")
    monkeypatch.setattr(teacher, "cpu_vendor", lambda: vendor)
    model = random_teacher("bert-tiny", 1, 300, 32, seed=1, hidden_size=32, num_heads=2, intermediate_size=64)
    ready = teacher.prepared(model, "cpu")
    n_onednn = sum(isinstance(m, OneDNNLinear) for m in ready.modules())
    assert n_onednn == (7 if avx512 and vendor == "AuthenticAMD" and torch.backends.mkldnn.is_available() else 0)


def test_reservoir_features_ignore_padding_both_directions(tiny_setup):
    p, _, corpus, cache = tiny_setup
    H = cache.load(1)
    res = distill.build_reservoirs(p.esn, 1, 0, 32, H.mean(0), H.std(0), "cpu")
    off, lengths = corpus.offsets, corpus.lengths
    b = corpus.bounds["train"][1]
    a = b - 6  # the shortest training samples: different lengths in one padded batch
    assert len(set(lengths[a:b])) > 1
    batch = res.features(H[off[a] : off[b]], lengths[a:b]).copy()  # a scratch array: the next call reuses it
    assert batch.shape == (off[b] - off[a], 32 + 2 * 24)
    for k in range(a, b):
        alone = res.features(H[off[k] : off[k + 1]], lengths[k : k + 1])
        np.testing.assert_allclose(batch[off[k] - off[a] : off[k + 1] - off[a]], alone, atol=1e-6)
    # Against the engine directly: forward = esn_states, backward = esn_states(reverse=True), one sequence.
    k = a
    z = torch.from_numpy((H[off[k] : off[k + 1]] - res.mu) / res.sd)[None]
    (Wf, Wif, bf), (Wb, Wib, bb) = res.mats["forward"], res.mats["backward"]
    fwd = esn_states(Wf, Wif, z, p.esn.leak, bf)[0].numpy()
    bwd = esn_states(Wb, Wib, z, p.esn.leak, bb, reverse=True)[0].numpy()
    n = lengths[k]
    np.testing.assert_allclose(batch[:n, 32:56], fwd, atol=1e-6)
    np.testing.assert_allclose(batch[:n, 56:], bwd, atol=1e-6)
    # The backward state at a token has read the tokens after it: changing the last token changes the
    # backward state of the first token and leaves its forward state alone. Same shapes on both sides (one
    # sequence): BLAS may round a 6-sequence product differently in the last bit.
    alone = res.features(H[off[k] : off[k + 1]], lengths[k : k + 1]).copy()
    H2 = H[off[k] : off[k + 1]].copy()
    H2[-1] += 3.0
    moved = res.features(H2, lengths[k : k + 1])
    np.testing.assert_array_equal(moved[0, 32:56], alone[0, 32:56])
    assert np.abs(moved[0, 56:] - alone[0, 56:]).max() > 1e-6


def test_esn_readout_objective_never_above_linear_baseline(tiny_setup):
    p, _, corpus, cache = tiny_setup
    for i in range(3):
        H_in, H_out = cache.load(i), cache.load(i + 1)
        res = distill.build_reservoirs(p.esn, i, 0, 32, H_in.mean(0), H_in.std(0), "cpu")
        accs = distill.accumulate(res, H_in, H_out, corpus, 200, np.float64)
        train = accs["train"]
        lin = train.subset(np.arange(32))
        for lam in (1e-3, 0.1, 10.0, 1e3):
            esn_obj = train.objective(train.solve(lam))
            lin_obj = lin.objective(lin.solve(lam))
            assert esn_obj <= lin_obj * (1 + 1e-9), (i, lam, esn_obj, lin_obj)
        # Scaling the state block down (state_scales) moves the fit toward the linear map, never above it.
        fit = distill.fit_layer(accs, 32, [0.01, 1.0, 100.0], state_scales=[1.0, 0.1, 0.01])
        single = distill.fit_layer(accs, 32, [0.01, 1.0, 100.0])
        assert min(fit.val_scores.values()) <= min(single.val_scores.values()) + 1e-12
        # The scaled solve is mapped back to the unscaled features: same predictions.
        only = distill.fit_layer(accs, 32, [1.0], state_scales=[0.1])
        c = np.ones(accs["train"].F)
        c[32:] = 0.1
        ref = accs["train"].merged(accs["val"]).scaled(c).solve(1.0)
        X, _, _ = next(distill.feature_batches(res, H_in, 0, corpus, "test", 200))
        np.testing.assert_allclose(only.esn.predict(X.astype(np.float64)), ref.predict(X * c), rtol=1e-6, atol=1e-8)
        # With a small penalty, the reservoir features help on training data strictly.
        assert train.objective(train.solve(1e-3)) < 0.999 * lin.objective(lin.solve(1e-3))


def test_scores_match_direct_formulas():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 5)) * [1, 1, 1, 1, 20] + 3  # one outlier dim, as in LayerNorm outputs
    pred = y + rng.normal(size=y.shape) * 0.5
    sc = ScoreAccumulator(5)
    for i in range(0, 300, 70):
        sc.update(y[i : i + 70], p=pred[i : i + 70], mean=np.broadcast_to(y.mean(0), (len(y[i : i + 70]), 5)))
    s = sc.scores("p")
    assert s["mse"] == pytest.approx(np.mean((pred - y) ** 2))
    assert s["nmse"] == pytest.approx(np.mean((pred - y) ** 2) / np.mean(y.var(0)))
    assert s["r2"] == pytest.approx(np.mean(1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)))
    cos = np.sum(pred * y, 1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(y, axis=1)
    assert s["cosine"] == pytest.approx(cos.mean())
    assert sc.scores("mean")["nmse"] == pytest.approx(1.0)
    # float32 batches (the workload's features) are scored in float32 with float64 sums: same scores.
    sc32 = ScoreAccumulator(5)
    for i in range(0, 300, 70):
        sc32.update(y[i : i + 70].astype(np.float32), p=pred[i : i + 70].astype(np.float32))
    for key, value in sc32.scores("p").items():
        assert value == pytest.approx(s[key], rel=1e-5), key


def test_run_is_deterministic_and_resume_gives_the_same_numbers(tmp_path):
    status, ref = execute(tmp_path / "a", TINY)
    assert status == "FINISHED"
    final = final_of(ref)
    assert set(final) >= {"mean_nmse", "chained_final_nmse", "params_esn_total", "params_teacher"}
    steps = steps_of(ref)
    assert sorted(steps) == [0, 1, 2]
    for m in steps.values():
        for key in (
            "mse",
            "nmse",
            "r2",
            "cosine",
            "baseline_identity_nmse",
            "baseline_mean_nmse",
            "baseline_linear_nmse",
            "chained_nmse",
        ):
            assert np.isfinite(m[key])
        assert 0.9 < m["baseline_mean_nmse"] < 1.2
    assert steps[0]["chained_nmse"] == steps[0]["nmse"]  # depth 1 of the chain is layer 0 itself
    art = tmp_path / "a" / "artifacts"
    table = json.loads((art / "layers.json").read_text())
    assert [r["layer"] for r in table["layers"]] == [0, 1, 2]
    assert (art / "layers.png").stat().st_size > 1000
    assert not (tmp_path / "a" / "teacher_cache").exists() or not any((tmp_path / "a" / "teacher_cache").iterdir())

    _, again = execute(tmp_path / "b", TINY)
    assert final_of(again) == final
    _, other = execute(tmp_path / "c", TINY, seed=1)
    assert final_of(other)["mean_nmse"] != final["mean_nmse"]

    def stop_after_layer_1(step, metrics):
        if step == 1:
            raise KeyboardInterrupt("preempted")

    status, _ = execute(tmp_path / "d", TINY, callbacks=[stop_after_layer_1])
    assert status == "KILLED"
    status, records = execute(tmp_path / "d", TINY)  # resumes from the checkpoint taken after layer 0
    assert status == "FINISHED"
    starts = [r for r in records if r["event"] == "start"]
    assert starts[-1]["resumed_from_step"] == 0
    assert final_of(records) == final
    assert steps_of(records)[2] == steps[2]


def test_pretrained_offline_error_is_fast_and_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even when the hub would be allowed, nothing is fetched
    t = time.perf_counter()
    with pytest.raises(InputError) as info:
        load_pretrained("no-such-org/no-such-bert")
    assert time.perf_counter() - t < 30  # generous: no network timeout path is taken
    msg = str(info.value)
    assert "teacher.pretrained" in msg and "offline" in msg
    assert "local directory" in msg and "teacher.config" in msg


def test_run_with_a_local_pretrained_directory(tmp_path):
    """The real from_pretrained path: a teacher and tokenizer saved with save_pretrained."""
    tok = build_tokenizer(None, 1500)
    model = random_teacher("bert-tiny", 2, len(tok), 32, seed=0, hidden_size=32, num_heads=2, intermediate_size=64)
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    loaded, loaded_tok = load_pretrained(str(tmp_path / "bert"))
    assert loaded.config.num_hidden_layers == 2 and len(loaded_tok) == len(tok)
    params = {**TINY, "teacher": {"pretrained": str(tmp_path / "bert"), "batch_tokens": 256}}
    status, records = execute(tmp_path / "run", params)
    assert status == "FINISHED"
    assert sorted(steps_of(records)) == [0, 1]
    assert final_of(records)["params_teacher"] == sum(p.numel() for p in model.encoder.layer.parameters())


def test_bad_inputs_are_clear():
    with pytest.raises(InputError, match="n_samples"):
        p = Params.model_validate({"data": {"n_samples": 5000, "max_len": 48}})
        make_corpus(p.data, build_tokenizer(None, 1500), 1500, 0)
    with pytest.raises(ValueError, match="min_len"):
        Params.model_validate({"data": {"min_len": 30, "max_len": 20}})
    with pytest.raises(ValueError):
        ESNParams.model_validate({"ridges": [-1.0]})
    ids, mask = pad([np.array([2, 7, 3]), np.array([2, 3])])
    assert ids.tolist() == [[2, 7, 3], [2, 3, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
