"""A run of esn_distill, step by step: teacher and corpus, memory check, hidden-state cache, the student's
skeleton, then per layer reservoirs -> readout statistics -> fit -> scores -> the student's layer (saved) ->
chained scores -> checkpoint; at the end the downstream probe and the artifacts.

Everything is a function of (params, seed): a resumed run rebuilds teacher, corpus and reservoirs, reloads
the finished layers' readouts from the student artifact and recomputes their chained outputs, so it reaches
the same numbers as an uninterrupted run (tested)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from workloads.esn_distill.data import SPLITS, Corpus

FINAL_KEYS = (
    "nmse",
    "mse",
    "r2",
    "baseline_linear_nmse",
    "baseline_identity_nmse",
    "baseline_linear_mse",
    "baseline_identity_mse",
)


def split_lengths(corpus: Corpus, split: str) -> np.ndarray:
    return corpus.lengths[slice(*corpus.bounds[split])]


def split_samples(corpus: Corpus, split: str) -> list[np.ndarray]:
    return corpus.samples[slice(*corpus.bounds[split])]


def student_outputs(student, corpus: Corpus, splits=SPLITS, layers: int | None = None) -> np.ndarray:
    """The chained student's output (after ``layers`` ESNs) on the tokens of ``splits`` (flat, canonical
    order). Each split is stepped alone, in the batches a student loaded later steps it in."""
    parts = [student.encode(split_samples(corpus, s), layers)[-1] for s in splits]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def edge_flags(fit, ep) -> dict[str, float]:
    """1.0 where the chosen ridge / state scale sits at an end of a grid of several: the best may lie
    beyond it (widen the grid)."""
    r, c = fit.esn.ridge, fit.state_scale
    return {
        "ridge_at_edge": float(len(ep.ridges) > 1 and r in (min(ep.ridges), max(ep.ridges))),
        "state_scale_at_edge": float(len(ep.state_scales) > 1 and c in (min(ep.state_scales), max(ep.state_scales))),
    }


def teacher_and_corpus(params, seed: int):
    """(teacher, tokenizer or None, corpus) of a run: a function of its params and seed."""
    from workloads.esn_distill import packaged
    from workloads.esn_distill.data import build_tokenizer, make_corpus
    from workloads.esn_distill.teacher import load_pretrained, random_teacher

    tp, dp = params.teacher, params.data
    if tp.pretrained:
        model, tokenizer = load_pretrained(packaged.resolve(tp.pretrained), tp.allow_download)
        vocab = len(tokenizer)
    else:
        tokenizer = build_tokenizer(dp.text_path, dp.vocab_size) if dp.source == "text" else None
        vocab = len(tokenizer) if tokenizer is not None else dp.vocab_size
        model = random_teacher(
            tp.config,
            tp.num_layers,
            vocab,
            dp.max_len,
            seed,
            tp.hidden_size,
            tp.num_attention_heads,
            tp.intermediate_size,
            tp.init_range,
        )
    return model, tokenizer, make_corpus(dp, tokenizer, vocab, seed)


def run_distillation(params, ctx) -> dict[str, float]:
    import torch

    from orchestrator.errors import InputError
    from workloads.esn_distill import distill, memory, plots, probe
    from workloads.esn_distill.metrics import ScoreAccumulator
    from workloads.esn_distill.student import ReservoirBERT
    from workloads.esn_distill.teacher import HiddenStateCache, teacher_params

    device = ctx.device if params.device == "auto" else params.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda asked but torch sees no CUDA device", field="device")
    tp, dp, ep, pp = params.teacher, params.data, params.esn, params.probe

    model, tokenizer, corpus = teacher_and_corpus(params, ctx.seed)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    # Refuse before any heavy work a run that cannot fit: the readout statistics grow as units^2.
    memory.check(
        memory.estimate(ep, hidden, corpus.n_tokens, device, params.train_on == "chained"), params.mem_gb, ctx, device
    )
    params_layers, params_all = teacher_params(model)

    root = Path(params.cache_dir) if params.cache_dir else ctx.run_dir.path / "teacher_cache"
    attention = params.target == "attention"
    fingerprint = hashlib.sha256(
        json.dumps([tp.model_dump(), dp.model_dump(), ctx.seed, attention], sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = HiddenStateCache(root / fingerprint, fingerprint, attention=attention)
    t_start = time.perf_counter()
    if not cache.complete():
        cache.write(model, corpus, tp.batch_tokens, device, tp.precision)
    teacher_s = time.perf_counter() - t_start

    student = ReservoirBERT.from_teacher(
        model, ep, ctx.seed, ep.batch_tokens, tp.batch_tokens, ep.readout_input, device
    )
    student_dir = ctx.artifact_dir / "student"
    student.save_config(student_dir, tokenizer)
    probe_set = None
    if pp.enabled and tokenizer is not None:  # random ids have no text to probe
        samples, labels = probe.passages(tokenizer, pp.n_per_class, pp.length, ctx.seed)
        states = probe.teacher_states(model, samples, tp.batch_tokens, device, tp.precision)
        probe_set = (samples, labels, states)
    del model

    saved = ctx.load_checkpoint()
    rows: list[dict] = saved["rows"] if saved else []
    # Wall times go to an artifact, not to the metrics: metrics must be equal across seeds' reruns/resumes.
    timings: dict = saved["timings"] if saved else {"teacher_s": 0.0, "layers_s": []}
    timings["teacher_s"] += teacher_s
    for i in range(len(rows)):  # a resumed run: the finished layers from the artifact
        student.layers.append(student.load_layer(student_dir, i))
    test0, test1 = corpus.token_range("test")
    train0, train1 = corpus.token_range("train")
    product_dtype = np.float64 if ep.product_dtype == "float64" else np.float32
    test_lengths = split_lengths(corpus, "test")

    chained_on_all = params.train_on == "chained"
    chain_test = student_outputs(student, corpus, ("test",)) if params.chained else None
    U_all = student_outputs(student, corpus) if chained_on_all else None
    H_in = None if chained_on_all else cache.load(len(rows))
    warnings: list[str] = []
    for i in range(len(rows), n_layers):
        t0 = time.perf_counter()
        H_out = cache.load_attention(i) if attention else cache.load(i + 1)
        U = U_all if U_all is not None else H_in
        assert U is not None
        train_u = U[train0:train1]
        mu, sd = train_u.mean(axis=0), train_u.std(axis=0) + 1e-6
        res = distill.build_reservoirs(ep, i, ctx.seed, hidden, mu, sd, device, student.scratch)
        accs = distill.accumulate(res, U, H_out, corpus, ep.batch_tokens, product_dtype)
        n_train, n_val = accs["train"].n, accs["val"].n
        fit = distill.fit_layer(accs, hidden, ep.ridges, ep.state_scales, ep.readout_input, consume=True)
        del accs  # spent by the refit: its F x F memory back before the scores
        row = {"layer": i, **distill.score_layer(res, fit, U, H_out, corpus, ep.batch_tokens)}
        layer = student.add_layer(res, fit.esn)
        ReservoirBERT.save_layer(student_dir, i, layer)
        if chain_test is not None:
            chain_test = layer.forward(chain_test, test_lengths, ep.batch_tokens)
            sc = ScoreAccumulator(H_out.shape[1])
            sc.update(H_out[test0:test1], chained=chain_test)
            s = sc.scores("chained")
            row.update(chained_nmse=s["nmse"], chained_mse=s["mse"], chained_r2=s["r2"], chained_cosine=s["cosine"])
        if U_all is not None:
            U_all = np.concatenate(
                [
                    layer.forward(U_all[slice(*corpus.token_range(sp))], split_lengths(corpus, sp), ep.batch_tokens)
                    for sp in SPLITS
                ]
            )
        timings["layers_s"].append(time.perf_counter() - t0)
        flags = edge_flags(fit, ep)
        for what, grid, value in (
            ("ridge", ep.ridges, fit.esn.ridge),
            ("state_scale", ep.state_scales, fit.state_scale),
        ):
            if flags[f"{what}_at_edge"]:
                warnings.append(f"layer {i}: {what} {value:g} chosen at the edge of esn.{what}s {grid}")
                ctx.warn(f"esn_distill: {warnings[-1]}: the best may lie beyond it, widen the grid")  # orch.warning
        row.update(
            ridge=fit.esn.ridge,
            ridge_linear=fit.linear.ridge,
            state_scale=fit.state_scale,
            **flags,
            params_readout=int(np.count_nonzero(fit.esn.W.any(axis=1)) * fit.esn.W.shape[1] + fit.esn.b.size),
            params_fixed=res.n_fixed_params(),
            train_tokens=n_train,
            val_tokens=n_val,
            test_tokens=test1 - test0,
        )
        rows.append(row)
        ctx.log(i, **{k: v for k, v in row.items() if k != "layer"})
        ctx.save_checkpoint({"rows": rows, "timings": timings})
        if not chained_on_all:  # the next layer reads the teacher's hidden_states[i+1]
            H_in = cache.load(i + 1) if attention else H_out

    final = {f"mean_{k}": float(np.mean([r[k] for r in rows])) for k in FINAL_KEYS}
    final.update(
        {
            "params_esn_readout": float(sum(r["params_readout"] for r in rows)),
            "params_esn_total": float(sum(r["params_readout"] + r["params_fixed"] for r in rows)),
            "params_teacher": float(params_layers),
            "params_teacher_all": float(params_all),
            "tokens": float(corpus.n_tokens),
            "grid_edge_layers": float(sum(r["ridge_at_edge"] or r["state_scale_at_edge"] for r in rows)),
        }
    )
    if params.chained:
        final["chained_final_nmse"] = rows[-1]["chained_nmse"]
        final["chained_final_mse"] = rows[-1]["chained_mse"]
    if probe_set is not None:
        samples, labels, teacher_hs = probe_set
        lengths = np.array([len(s) for s in samples])
        for name, states in (
            ("teacher", teacher_hs),
            ("student", student.encode(samples)),
            ("embeddings", teacher_hs[:1]),
        ):
            feats = probe.pool(states, lengths, pp.tokens, pp.layers, pp.last_n)
            final[f"probe_{name}_acc"] = probe.accuracy(feats, labels, pp.ridges)
    plots.write_table(rows, final, ctx.artifact_dir)
    (ctx.artifact_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    plots.bar_chart(rows, ctx.artifact_dir / "layers.png")
    if warnings:  # the run's last line says it too: a flag read where the final metrics are read
        print(
            f"WARNING esn_distill: {len(warnings)} grid-edge choice(s): " + "; ".join(warnings),
            file=sys.stderr,
            flush=True,
        )
    if not params.keep_cache:
        cache.remove()
    return final
