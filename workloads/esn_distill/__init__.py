"""esn_distill: Reservoir BERT. Each of a BERT teacher's layers is replaced by an echo state network whose
ridge readout maps hidden_states[i] -> hidden_states[i+1] token by token (docs/esn_distill.md).

Pipeline: tokenise (local tokenizer) -> teacher forward once, real tokens cached per layer on disk ->
per layer: reservoirs (forward / backward / both), streamed readout statistics on train and validation
tokens, penalty chosen on validation, refit, held-out scores beside the identity / mean / linear
baselines, chained pass -> checkpoint. Defaults are a few-minute CPU run; configs/esn_distill.yaml has
the lab's sizes as the ``lab`` variant."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

METRIC, MODE = "mean_nmse", "min"


class TeacherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(None, description="local directory (save_pretrained) or hub name already "
                                   "in the local HF cache; None = a seeded random teacher built from `config`")
    allow_download: bool = Field(False, description="let from_pretrained reach the hub (off: fail fast offline)")
    config: Literal["bert-base", "bert-small", "bert-mini", "bert-tiny"] = Field(
        "bert-tiny", description="size preset of the random teacher (hidden, heads, intermediate)")
    num_layers: int = Field(12, ge=1, description="layers of the random teacher (= number of ESNs)")
    hidden_size: int | None = Field(None, ge=8, description="override the preset's hidden size")
    num_attention_heads: int | None = Field(None, ge=1, description="override the preset's head count")
    intermediate_size: int | None = Field(None, ge=8, description="override the preset's feed-forward size")
    init_range: float = Field(0.1, gt=0, description="std of the random teacher's weights (BERT's "
                              "initializer_range; larger = layers further from the identity)")
    batch_tokens: int = Field(4096, ge=16, description="padded tokens per teacher forward batch")


class DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["text", "random"] = Field("text", description="text file through the tokenizer, or "
                                              "seeded random token ids")
    text_path: str | None = Field(None, description="UTF-8 text (.gz: gzipped), paragraphs separated by blank "
                                  "lines; None = the shipped fables (~6k tokens); 'kjv' = the shipped King James "
                                  "Bible (~1M tokens, one paragraph per chapter)")
    packing: Literal["paragraph", "pack"] = Field(
        "paragraph", description="paragraph: samples cut from single paragraphs; pack: the paragraphs as one "
        "token stream cut into consecutive samples of lengths uniform in [min_len, max_len]")
    vocab_size: int = Field(2000, ge=16, description="vocabulary of the locally built WordPiece tokenizer "
                            "(random ids: the id range)")
    n_samples: int = Field(120, ge=3, description="samples (sequences) in all, split by sample")
    max_len: int = Field(48, ge=4, le=512, description="tokens per sample at most, [CLS] and [SEP] included")
    min_len: int = Field(8, ge=3, description="tokens per sample at least (random: lengths uniform in "
                         "[min_len, max_len]; text: shorter pieces are dropped)")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="fraction of samples for choosing the ridge")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of samples held out for the scores")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} > max_len {self.max_len}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave samples for training")
        return self


class ESNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    units: int = Field(200, ge=1, description="neurons per reservoir (per direction)")
    sr: float = Field(0.9, ge=0, description="spectral radius of W")
    leak: float = Field(0.5, gt=0, le=1, description="leak rate")
    input_scaling: float = Field(0.1, gt=0, description="scale of W_in (inputs are standardised per dim)")
    connectivity: float = Field(0.1, gt=0, le=1, description="density of W")
    input_connectivity: float = Field(0.1, gt=0, le=1, description="density of W_in")
    bias_scaling: float = Field(0.0, ge=0, description="scale of the reservoir bias (0 = none)")
    direction: Literal["forward", "backward", "both"] = Field(
        "both", description="causal reservoir, anti-causal one, or both states concatenated (BERT is bidirectional)")
    ridges: list[float] = Field([1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0], min_length=1,
                                description="ridge penalties tried; the best on validation is kept")
    state_scales: list[float] = Field([1.0], min_length=1, description="scales of the reservoir-state "
                                      "features tried with every ridge (state weights penalised as ridge/c^2); "
                                      "[1.0] = one penalty for [u; x]")
    dtype: Literal["float32", "float64"] = Field("float32", description="reservoir and feature dtype")
    product_dtype: Literal["float32", "float64"] = Field(
        "float32", description="dtype of each batch's X^T X product (sums are always float64)")
    batch_tokens: int = Field(8192, ge=16, description="padded tokens per reservoir batch (bounds memory)")

    @model_validator(mode="after")
    def _ridges(self):
        if any(r < 0 for r in self.ridges):
            raise ValueError("ridges must be >= 0")
        if any(c <= 0 for c in self.state_scales):
            raise ValueError("state_scales must be > 0")
        return self


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher: TeacherParams = Field(default_factory=TeacherParams, description="the BERT teacher")
    data: DataParams = Field(default_factory=DataParams, description="token samples and their split")
    esn: ESNParams = Field(default_factory=ESNParams, description="the reservoir and readout of every layer")
    chained: bool = Field(True, description="also run the ESNs end to end on the test set (error per depth)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = the job's device (cuda when "
                                                   "it has a GPU); teacher and reservoirs run there")
    cache_dir: str | None = Field(None, description="where the teacher's hidden states are cached (default: "
                                  "the run directory; point at node-local scratch on a cluster)")
    keep_cache: bool = Field(False, description="keep the hidden-state cache after a finished run")


def run(params: Params, ctx) -> dict[str, float]:
    import torch

    from orchestrator.errors import InputError
    from workloads.esn_distill import distill, packaged, plots
    from workloads.esn_distill.data import build_tokenizer, make_corpus
    from workloads.esn_distill.teacher import HiddenStateCache, load_pretrained, random_teacher, teacher_params

    device = ctx.device if params.device == "auto" else params.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda asked but torch sees no CUDA device", field="device")
    tp, dp, ep = params.teacher, params.data, params.esn

    # Teacher and tokenizer: everything below is a function of (params, seed) alone, so a resumed run
    # rebuilds the same corpus, teacher and reservoirs.
    if tp.pretrained:
        model, tokenizer = load_pretrained(packaged.resolve(tp.pretrained), tp.allow_download)
        vocab = len(tokenizer)
    else:
        tokenizer = build_tokenizer(dp.text_path, dp.vocab_size) if dp.source == "text" else None
        vocab = len(tokenizer) if tokenizer is not None else dp.vocab_size
        model = random_teacher(tp.config, tp.num_layers, vocab, dp.max_len, ctx.seed, tp.hidden_size,
                               tp.num_attention_heads, tp.intermediate_size, tp.init_range)
    corpus = make_corpus(dp, tokenizer, vocab, ctx.seed)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    params_layers, params_all = teacher_params(model)

    root = Path(params.cache_dir) if params.cache_dir else ctx.run_dir.path / "teacher_cache"
    fingerprint = hashlib.sha256(json.dumps([tp.model_dump(), dp.model_dump(), ctx.seed],
                                            sort_keys=True).encode()).hexdigest()[:16]
    cache = HiddenStateCache(root / fingerprint, fingerprint)
    t_start = time.perf_counter()
    if not cache.complete():
        cache.write(model, corpus, tp.batch_tokens, device)
    teacher_s = time.perf_counter() - t_start
    del model

    saved = ctx.load_checkpoint()
    rows: list[dict] = saved["rows"] if saved else []
    chained = saved["chained"] if saved else None
    # Wall times go to an artifact, not to the metrics: metrics must be equal across seeds' reruns/resumes.
    timings: dict = saved["timings"] if saved else {"teacher_s": 0.0, "layers_s": []}
    timings["teacher_s"] += teacher_s
    test0, test1 = corpus.token_range("test")
    train0, train1 = corpus.token_range("train")
    product_dtype = np.float64 if ep.product_dtype == "float64" else np.float32

    H_in = cache.load(len(rows))
    if chained is None:
        chained = H_in[test0:test1].copy()  # depth 0 of the chain: the teacher's embeddings
    scratch = distill.Scratch()  # batch-sized arrays shared by every layer
    for i in range(len(rows), n_layers):
        t0 = time.perf_counter()
        H_out = cache.load(i + 1)
        train_u = H_in[train0:train1]
        mu, sd = train_u.mean(axis=0), train_u.std(axis=0) + 1e-6
        res = distill.build_reservoirs(ep, i, ctx.seed, hidden, mu, sd, device, scratch)
        accs = distill.accumulate(res, H_in, H_out, corpus, ep.batch_tokens, product_dtype)
        fit = distill.fit_layer(accs, hidden, ep.ridges, ep.state_scales)
        row = {"layer": i, **distill.score_layer(res, fit, H_in, H_out, corpus, ep.batch_tokens)}
        if params.chained:
            chained, chain_scores = distill.chain_layer(res, fit, chained, H_out, corpus, ep.batch_tokens)
            row.update(chain_scores)
        timings["layers_s"].append(time.perf_counter() - t0)
        row.update(ridge=fit.esn.ridge, ridge_linear=fit.linear.ridge, state_scale=fit.state_scale,
                   params_readout=int(fit.esn.W.size + fit.esn.b.size), params_fixed=res.n_fixed_params(),
                   train_tokens=accs["train"].n, val_tokens=accs["val"].n, test_tokens=test1 - test0)
        rows.append(row)
        ctx.log(i, **{k: v for k, v in row.items() if k != "layer"})
        ctx.save_checkpoint({"rows": rows, "chained": chained, "timings": timings})
        H_in = H_out

    final = {
        "mean_nmse": float(np.mean([r["nmse"] for r in rows])),
        "mean_r2": float(np.mean([r["r2"] for r in rows])),
        "mean_baseline_linear_nmse": float(np.mean([r["baseline_linear_nmse"] for r in rows])),
        "mean_baseline_identity_nmse": float(np.mean([r["baseline_identity_nmse"] for r in rows])),
        "params_esn_readout": float(sum(r["params_readout"] for r in rows)),
        "params_esn_total": float(sum(r["params_readout"] + r["params_fixed"] for r in rows)),
        "params_teacher": float(params_layers),
        "params_teacher_all": float(params_all),
        "tokens": float(corpus.n_tokens),
    }
    if params.chained:
        final["chained_final_nmse"] = rows[-1]["chained_nmse"]
    plots.write_table(rows, final, ctx.artifact_dir)
    (ctx.artifact_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    plots.bar_chart(rows, ctx.artifact_dir / "layers.png")
    if not params.keep_cache:
        cache.remove()
    return final
