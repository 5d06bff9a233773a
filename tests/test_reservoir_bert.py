"""Reservoir BERT for real: the packed KJV samples, the packaged MiniLM teacher, the student saved and
reloaded reproducing the run's chained metrics exactly, the lab's variants (attention target, states-only
readout, training on chained inputs), grid-edge flags, the memory refusal and the probe's pooling."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.errors import InputError
from tests.test_esn_distill import TINY, execute, final_of, steps_of
from workloads.esn_distill import ESNParams, Params, memory, probe
from workloads.esn_distill.data import KJV_NEW_TESTAMENT, build_tokenizer, make_corpus, read_paragraphs
from workloads.esn_distill.metrics import ScoreAccumulator
from workloads.esn_distill.packaged import packaged_model_dir, resolve
from workloads.esn_distill.pipeline import split_samples
from workloads.esn_distill.student import ReservoirBERT
from workloads.esn_distill.teacher import HiddenStateCache, load_pretrained, pad, random_teacher

QUIET = {**TINY, "probe": {"enabled": False}}


def variant(**changes) -> dict:
    p = copy.deepcopy(QUIET)
    for key, value in changes.items():
        if isinstance(value, dict):
            p.setdefault(key, {}).update(value)
        else:
            p[key] = value
    return p


def test_kjv_paragraphs_and_packed_samples_at_the_lab_lengths():
    chapters = read_paragraphs("kjv")
    assert len(chapters) == 1189
    assert chapters[0].startswith("In the beginning God created the heaven and the earth.")
    assert chapters[KJV_NEW_TESTAMENT].startswith("The book of the generation of Jesus Christ")
    assert chapters[KJV_NEW_TESTAMENT - 1].startswith("For, behold, the day cometh")  # Malachi 4
    tok = build_tokenizer(None, 1500)
    p = Params.model_validate(
        {"data": {"text_path": "kjv", "packing": "pack", "n_samples": 300, "max_len": 288, "min_len": 212}}
    )
    corpus = make_corpus(p.data, tok, len(tok), seed=0)
    lengths = corpus.lengths
    assert len(lengths) == 300 and lengths.min() >= 212 and lengths.max() <= 288
    assert lengths.std() > 10  # drawn, not one fixed length
    assert all(s[0] == tok.cls_token_id and s[-1] == tok.sep_token_id for s in corpus.samples)
    # the paragraph mode gives none at these lengths from the fables: packing is what makes them
    with pytest.raises(InputError, match="packing=pack"):
        make_corpus(
            Params.model_validate({"data": {"n_samples": 10, "max_len": 288, "min_len": 212}}).data, tok, len(tok), 0
        )


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A fresh packaged-model cache for this module: MiniLM unpacked once for its tests."""
    root = tmp_path_factory.mktemp("models")
    before = os.environ.get("ORCH_MODEL_CACHE")
    os.environ["ORCH_MODEL_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("ORCH_MODEL_CACHE")
    else:
        os.environ["ORCH_MODEL_CACHE"] = before


@pytest.mark.slow
def test_packaged_minilm_unpacks_once_and_loads_with_from_pretrained(model_cache, capsys):
    path = Path(resolve("all-MiniLM-L6-v2"))
    assert path == model_cache / "all-MiniLM-L6-v2" and (path / "config.json").is_file()
    stamp = (path / "config.json").stat().st_mtime_ns
    assert packaged_model_dir("all-MiniLM-L6-v2") == path
    assert (path / "config.json").stat().st_mtime_ns == stamp  # not unpacked again
    assert "Extract" not in capsys.readouterr().out  # the package's prints kept out of the job's output
    assert resolve(str(path)) == str(path) and resolve("some/hub-name") == "some/hub-name"
    model, tok = load_pretrained(str(path))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384 and len(tok) == 30522
    # a pretrained teacher's embeddings are meaningful (a random one's are not)
    with torch.inference_mode():
        enc = tok(
            ["the cat sat on the mat", "a kitten lay on a rug", "stock markets fell sharply"],
            return_tensors="pt",
            padding=True,
        )
        h = model(**enc).last_hidden_state
        m = (h * enc["attention_mask"][..., None]).sum(1) / enc["attention_mask"].sum(1, keepdim=True)
        m = torch.nn.functional.normalize(m, dim=1)
    assert float(m[0] @ m[1]) > float(m[0] @ m[2]) + 0.3


@pytest.mark.slow
def test_a_run_on_the_minilm_teacher_and_the_kjv(tmp_path, model_cache):
    """configs/esn_distill_pretrained.yaml's teacher and text, at a tiny size."""
    params = {
        "teacher": {"pretrained": "all-MiniLM-L6-v2", "batch_tokens": 512},
        "data": {"text_path": "kjv", "packing": "pack", "n_samples": 16, "max_len": 40, "min_len": 30},
        "esn": {"units": 16, "ridges": [1.0, 100.0], "batch_tokens": 400},
        "probe": {"n_per_class": 12, "length": 24},
    }
    status, records = execute(tmp_path / "run", params)
    assert status == "FINISHED"
    steps, final = steps_of(records), final_of(records)
    assert sorted(steps) == list(range(6))  # all of MiniLM's layers
    assert final["params_teacher"] == 6 * (4 * 384 * 384 + 2 * 384 * 1536 + 4 * 384 + 1536 + 384 + 4 * 384)
    assert all(0.0 <= final[f"probe_{k}_acc"] <= 1.0 for k in ("teacher", "student", "embeddings"))
    config = (tmp_path / "run" / "artifacts" / "student" / "config.json").read_text()
    assert '"hidden": 384' in config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    params = {**TINY, "keep_cache": True, "probe": {"n_per_class": 20, "length": 16}}
    status, records = execute(path / "a", params)
    assert status == "FINISHED"
    return path / "a", params, records


def test_saved_student_reproduces_the_runs_chained_test_metrics_exactly(tiny_run):
    run_dir, params, records = tiny_run
    steps = steps_of(records)
    student = ReservoirBERT.load(run_dir / "artifacts" / "student")
    assert len(student.layers) == 3
    tok = ReservoirBERT.tokenizer(run_dir / "artifacts" / "student")
    p = Params.model_validate(params)
    corpus = make_corpus(p.data, tok, len(tok), seed=0)  # the run's corpus, from its saved tokenizer
    test = split_samples(corpus, "test")
    states = student.encode(test)  # token ids -> hidden states, no teacher involved
    assert len(states) == 4 and states[0].shape == (sum(len(s) for s in test), 32)
    cache_dirs = [d for d in (run_dir / "teacher_cache").iterdir() if d.is_dir()]
    cache = HiddenStateCache(cache_dirs[0], cache_dirs[0].name)
    t0, t1 = corpus.token_range("test")
    for i in range(3):
        sc = ScoreAccumulator(32)
        sc.update(cache.load(i + 1)[t0:t1], s=states[i + 1])
        got = sc.scores("s")
        assert got["nmse"] == steps[i]["chained_nmse"] and got["mse"] == steps[i]["chained_mse"]
        assert got["cosine"] == steps[i]["chained_cosine"]
    # the student's embeddings are the teacher's hidden_states[0]
    np.testing.assert_allclose(states[0], cache.load(0)[t0:t1], atol=1e-6)
    # and the student encodes any ids, e.g. a new sentence
    ids = tok("the fox and the grapes", return_tensors="np")["input_ids"][0]
    out = student.encode([ids])
    assert out[-1].shape == (len(ids), 32) and np.isfinite(out[-1]).all()


def test_attention_target_is_the_attention_sublayer_output(tmp_path):
    tok = build_tokenizer(None, 1500)
    model = random_teacher(
        "bert-tiny", 2, len(tok), 32, seed=0, hidden_size=32, num_heads=2, intermediate_size=64, init_range=0.1
    ).eval()
    p = Params.model_validate(QUIET)
    corpus = make_corpus(p.data, tok, len(tok), seed=0)
    cache = HiddenStateCache(tmp_path / "c", "f", attention=True)
    cache.write(model, corpus, 128, "cpu")
    off = corpus.offsets
    ids = torch.from_numpy(corpus.samples[3][None])
    with torch.inference_mode():
        h0 = model.embeddings(input_ids=ids)
        attn0 = model.encoder.layer[0].attention(h0)[0]
        h1 = model.encoder.layer[0](h0)
        h1 = h1[0] if isinstance(h1, tuple) else h1
        # the layer's output is its feed-forward block applied to that attention output
        np.testing.assert_allclose(model.encoder.layer[0].feed_forward_chunk(attn0).numpy(), h1.numpy(), atol=1e-5)
    np.testing.assert_allclose(cache.load_attention(0)[off[3] : off[4]], attn0[0].numpy(), atol=2e-5)
    assert not np.allclose(cache.load_attention(0), cache.load(1), atol=1e-3)
    with pytest.raises(ValueError, match="chained: false"):
        Params.model_validate({"target": "attention"})


def test_variants_run_and_differ_as_they_should(tmp_path, tiny_run):
    _, _, records = tiny_run
    base = steps_of(records)
    status, rec = execute(tmp_path / "attn", variant(target="attention", chained=False))
    assert status == "FINISHED"
    attn = steps_of(rec)
    assert sorted(attn) == [0, 1, 2] and "chained_nmse" not in attn[0]
    assert attn[0]["nmse"] != base[0]["nmse"] and np.isfinite(attn[0]["nmse"])

    status, rec = execute(tmp_path / "states", variant(esn={"readout_input": False}))
    assert status == "FINISHED"
    states_only = steps_of(rec)
    W = np.load(tmp_path / "states" / "artifacts" / "student" / "layer_0.npz")["W"]
    assert np.all(W[:32] == 0) and np.any(W[32:] != 0)  # no weight on the input u
    assert states_only[0]["params_readout"] == (W.shape[0] - 32) * 32 + 32
    assert states_only[0]["nmse"] > base[0]["nmse"]  # the input itself carries most of h_{i+1}

    status, rec = execute(tmp_path / "chain", variant(train_on="chained"))
    assert status == "FINISHED"
    trained_chained = steps_of(rec)
    # layer 0 reads the embeddings either way; from layer 1 on it reads its own chain, and its test score
    # on that chain is its chained score
    assert trained_chained[0]["nmse"] == pytest.approx(base[0]["nmse"], rel=1e-5)
    for i in (1, 2):
        assert trained_chained[i]["nmse"] == trained_chained[i]["chained_nmse"]
    assert trained_chained[2]["chained_nmse"] != base[2]["chained_nmse"]


def test_grid_edge_choice_is_flagged(tmp_path, capfd):
    status, rec = execute(tmp_path / "edge", variant(esn={"ridges": [1e6, 1e7], "state_scales": [1.0, 0.5]}))
    assert status == "FINISHED"
    steps = steps_of(rec)
    assert all(m["ridge_at_edge"] == 1.0 for m in steps.values())  # the smallest penalty 1e6 is far too big
    assert final_of(rec)["grid_edge_layers"] == 3.0
    err = capfd.readouterr().err  # the job's stderr (a file under a backend)
    assert "WARNING: esn_distill: layer 0: ridge 1e+06 chosen at the edge of esn.ridges" in err
    warned = [r["message"] for r in rec if r["event"] == "warning"]  # ctx.warn: tagged orch.warning on the run
    assert len(warned) == 6 and warned[0].startswith("esn_distill: layer 0: ridge 1e+06 chosen at the edge")
    assert "WARNING esn_distill: 6 grid-edge choice(s)" in err.strip().splitlines()[-1]  # 3 ridges + 3 scales


def test_memory_estimate_refuses_what_cannot_fit():
    esn = ESNParams.model_validate({"units": 10000, "direction": "both"})
    est = memory.estimate(esn, 768, 250_000, "cpu")
    F = 768 + 20000
    assert est.F == F and est.solve == 4 * F * F * 8
    assert 4 * F * F * 8 < est.host < 8 * F * F * 8
    with pytest.raises(InputError) as info:
        memory.check(est, 12.0, None, "cpu")
    msg = str(info.value)
    assert "mem_gb" in msg and f"{est.host / 1e9:.1f}" in msg and "20768" in msg
    memory.check(memory.estimate(ESNParams(), 32, 1000, "cpu"), 1.0, None, "cpu")  # small: passes


def test_a_run_refuses_an_impossible_memory_request(tmp_path):
    status, rec = execute(tmp_path / "big", variant(esn={"units": 20000}, mem_gb=2.0))
    assert status == "FAILED"
    end = [r for r in rec if r["event"] == "end"][-1]
    assert "mem_gb" in end["error"] and "at least" in end["error"]
    assert not (tmp_path / "big" / "teacher_cache").exists()  # refused before the teacher ran


def test_probe_pooling_strategies():
    states = [np.arange(12, dtype=np.float32).reshape(6, 2) * (k + 1) for k in range(3)]  # 3 layers, 6 tokens
    lengths = np.array([2, 4])
    first = probe.pool(states, lengths, "first", "last", 1)
    np.testing.assert_array_equal(first, [[0, 3], [12, 15]])
    mean = probe.pool(states, lengths, "mean", "last", 1)
    np.testing.assert_allclose(mean, [[3, 6], [21, 24]])
    summed = probe.pool(states, lengths, "first", "sum", 2)
    np.testing.assert_array_equal(summed, [[0, 5], [20, 25]])
    cat = probe.pool(states, lengths, "first", "concat", 2)
    np.testing.assert_array_equal(cat, [[0, 2, 0, 3], [8, 10, 12, 15]])
    # the classifier learns a separable task and is at chance on noise
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    X = rng.normal(size=(400, 5))
    assert probe.accuracy(X + 3 * labels[:, None], labels, [1.0, 10.0]) > 0.95
    assert probe.accuracy(X, labels, [1.0, 10.0]) < 0.7


def test_probe_passages_are_balanced_and_seeded():
    tok = build_tokenizer(None, 1500)
    s1, l1 = probe.passages(tok, 30, 20, seed=4)
    s2, l2 = probe.passages(tok, 30, 20, seed=4)
    assert l1.sum() == 30 and len(l1) == 60 and all(len(s) == 20 for s in s1)
    assert np.array_equal(l1, l2) and all(np.array_equal(a, b) for a, b in zip(s1, s2, strict=False))
    ids, _ = pad(s1)
    assert ids.shape == (60, 20)


def test_shipped_configs_validate_and_the_10k_one_fits_its_request():
    from orchestrator.spec.plan import expand
    from orchestrator.spec.spec import load_spec

    root = Path(__file__).resolve().parent.parent / "configs"
    spec = load_spec(root / "esn_distill_pretrained.yaml")
    assert spec.metric is not None and spec.metric.name == "mean_mse"
    p = Params.model_validate(expand(spec)[0].params)
    assert p.teacher.pretrained == "all-MiniLM-L6-v2" and p.data.text_path == "kjv" and p.data.packing == "pack"
    assert (p.data.min_len, p.data.max_len, p.data.n_samples, p.esn.units) == (212, 288, 1000, 1000)
    spec10k = load_spec(root / "esn_distill_10k.yaml")
    assert spec10k.cluster == "plafrim"
    p10k = Params.model_validate(expand(spec10k)[0].params)
    assert p10k.esn.units == 10000 and p10k.esn.radius == "arpack"
    est = memory.estimate(p10k.esn, 384, 250_000, "cpu")
    assert est.host < spec10k.resources.mem_gb * 1e9  # its own request holds the CPU estimate
    memory.check(est, spec10k.resources.mem_gb, None, "cpu")
