"""The seed guide's SentimentLSTM, and the same classifier with a GRU: packed variable-length text."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from bench.sweep.models.spec import Batch, ModelSpec

VOCAB_SIZE = 25_000
SEQ_LEN = {"quick": 64, "full": 512}
GATES = {"lstm": 4, "gru": 3}


class SentimentRNN(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM/GRU over packed sequences -> last hidden states -> FC."""

    def __init__(self, cell: str = "lstm", vocab_size: int = VOCAB_SIZE, embed_dim: int = 128,
                 hidden_dim: int = 256, num_layers: int = 2, num_classes: int = 2, dropout: float = 0.3):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim * 2, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(tokens))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # the LSTM also returns its cell state
            hidden = hidden[0]
        last_layer = torch.cat([hidden[-2], hidden[-1]], dim=1)  # forward and backward directions
        return self.fc(self.dropout(last_layer))


def text_batch(size: str, batch_size: int, device: torch.device, gen: torch.Generator) -> Batch:
    """Random tokens padded with 0 past random lengths (kept on the CPU, as packing wants them)."""
    seq = SEQ_LEN[size]
    lengths = torch.randint(seq // 4, seq + 1, (batch_size,), generator=gen)
    lengths[0] = seq  # the longest sequence fills the padded width
    tokens = torch.randint(1, VOCAB_SIZE, (batch_size, seq), generator=gen)
    tokens[torch.arange(seq) >= lengths[:, None]] = 0
    labels = torch.randint(0, 2, (batch_size,), generator=gen)
    return Batch(inputs=(tokens.to(device), lengths), target=labels.to(device), tokens=int(lengths.sum()))


def recurrent_flops(model: nn.Module, batch: Batch) -> dict[str, int]:
    """Forward FLOPs of the recurrent layers: per step and direction, 2 * gates * hidden * (input + hidden)."""
    rnn = model.rnn
    steps = int(batch.inputs[1].sum())
    gates = GATES[rnn.mode.lower()]
    directions = 2 if rnn.bidirectional else 1
    flops = 0
    for layer in range(rnn.num_layers):
        width_in = rnn.input_size if layer == 0 else rnn.hidden_size * directions
        flops += directions * steps * 2 * gates * rnn.hidden_size * (width_in + rnn.hidden_size)
    return {"rnn": flops}


def rnn_spec(cell: str) -> ModelSpec:
    return ModelSpec(
        name=cell,
        build=lambda size, attn: SentimentRNN(cell),
        batch=text_batch,
        batch_sizes={"quick": (4, 16), "full": (64, 256)},
        analytic_flops=recurrent_flops,
    )
