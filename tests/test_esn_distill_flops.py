"""esn_distill's flop count (the arithmetic floor the e2e benchmark reports): the teacher's against torch's own
count of a real BERT forward, the layer's against the recurrence the engine actually steps."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from workloads.esn.reservoir import random_reservoir, steps_sparse
from workloads.esn_distill import ESNParams, flops


def test_teacher_flops_are_torchs_count_of_a_real_forward():
    # eager attention: its QK^T and AV are matmuls that FlopCounterMode sees (CPU SDPA is not counted)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80
    )
    config._attn_implementation = "eager"
    model = BertModel(config).eval()
    lengths = [5, 9, 17]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for L in lengths:  # one sample a forward: no padding, as the count assumes
            model(input_ids=torch.randint(0, 100, (1, L)))
    counted = flops.teacher(lengths, 3, 32, 80)
    assert counted.float32 == counter.get_total_flops()
    assert counted.float64 == 0


@pytest.mark.parametrize("connectivity", [0.1, 0.5])
def test_layer_flops_count_the_recurrence_the_engine_steps(connectivity):
    units, hidden = 200, 16
    W, _, _ = random_reservoir(units, hidden, 0.9, 1.0, connectivity, 0.2, seed=3)
    esn = ESNParams(units=units, direction="forward", connectivity=connectivity)
    per_token = flops.layer(esn, hidden, n_fit=1, n_test=0, n_candidates=0).float32
    statistics = (hidden + units) ** 2 + 2 * (hidden + units) * hidden
    recurrent = per_token - statistics - 2 * hidden * units
    stepped = float(torch.count_nonzero(torch.as_tensor(W))) if steps_sparse(torch.as_tensor(W)) else units**2
    assert recurrent == pytest.approx(2 * stepped, rel=0.05)  # the draw's non-zeros ~ connectivity x units^2


def test_selection_flops_grow_with_the_candidates_and_not_with_the_tokens():
    esn = ESNParams(units=100, direction="both")
    one = flops.layer(esn, 32, n_fit=1000, n_test=100, n_candidates=0)
    many = flops.layer(esn, 32, n_fit=1000, n_test=100, n_candidates=18)
    more_tokens = flops.layer(esn, 32, n_fit=5000, n_test=100, n_candidates=18)
    F = 32 + 200
    assert many.float64 - one.float64 == pytest.approx(18 * (F**3 / 3 + 4 * F * F * 32))
    assert more_tokens.float64 == many.float64 and more_tokens.float32 > many.float32
