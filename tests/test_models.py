"""The seed models keep the seed's architecture: output shapes and parameter counts."""

import pytest
import torch

from bench.sweep.models import MODELS
from bench.sweep.models.cnn import SimpleCNN
from bench.sweep.models.rnn import SentimentRNN
from bench.sweep.models.transformer import MiniTransformer, TransformerConfig

CPU = torch.device("cpu")


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def test_simple_cnn_parameter_count_matches_the_seed():
    convs = [(3, 32), (32, 32), (32, 64), (64, 64)]
    expected = sum(c_in * c_out * 9 + c_out + 2 * c_out for c_in, c_out in convs)  # conv + bias + BN affine
    expected += linear(4096, 512) + linear(512, 10)
    assert sum(p.numel() for p in SimpleCNN().parameters()) == expected == 2_168_746


@pytest.mark.parametrize(("cell", "gates"), [("lstm", 4), ("gru", 3)])
def test_sentiment_rnn_parameter_count_matches_the_seed(cell, gates):
    hidden, embed = 256, 128
    per_direction = [gates * hidden * (n_in + hidden + 2) for n_in in (embed, 2 * hidden)]  # W_ih, W_hh, 2 biases
    expected = 25_000 * embed + 2 * sum(per_direction) + linear(2 * hidden, 2)
    assert sum(p.numel() for p in SentimentRNN(cell).parameters()) == expected


def test_mini_transformer_parameter_count_matches_the_seed():
    d, ff, layers = 256, 1024, 4
    block = linear(d, 3 * d, bias=False) + linear(d, d) + linear(d, ff) + linear(ff, d) + 2 * 2 * d
    expected = 10_000 * d + 512 * d + layers * block + 2 * d + linear(d, 2)
    assert sum(p.numel() for p in MiniTransformer(TransformerConfig()).parameters()) == expected


def test_decoder_ties_its_output_head_to_the_token_embedding():
    model = MiniTransformer(TransformerConfig(), causal=True)
    assert model.head.weight is model.token_embed.weight


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_a_quick_batch_and_its_loss_backpropagates(name):
    spec = MODELS[name]
    model = spec.build("quick", "naive" if spec.has_attention else None)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    out = model(*batch.inputs)
    expected_rows = 2 * (batch.inputs[0].shape[1] if spec.causal else 1)  # the decoder scores every position
    assert out.flatten(0, -2).shape[0] == expected_rows
    loss = spec.loss(out, batch.target)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_synthetic_batches_repeat_for_the_same_seed():
    spec = MODELS["lstm"]
    first, second = (spec.batch("quick", 4, CPU, torch.Generator().manual_seed(0)) for _ in range(2))
    assert torch.equal(first.inputs[0], second.inputs[0])
    assert first.tokens == second.tokens == int(first.inputs[1].sum())
    assert int(first.inputs[1].max()) == first.inputs[0].shape[1]
