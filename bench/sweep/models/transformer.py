"""The seed guide's MiniTransformer (encoder classifier) and a GPT-style causal decoder of the same family.

Attention comes from the attention registry, so the same model runs naive, SDPA or Triton attention.
The seed's dropout on attention probabilities is left out so that every implementation computes the
same function; residual, feed-forward and embedding dropout stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.sweep.attention import attend
from bench.sweep.models.spec import Batch, ModelSpec

SEQ_LEN = {"quick": 64, "full": 512}


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 10_000
    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 1024
    n_layers: int = 4
    max_seq: int = 512
    num_classes: int = 2
    dropout: float = 0.1


class SelfAttention(nn.Module):
    """Multi-head self-attention: fused QKV projection, a registry attention, output projection."""

    def __init__(self, cfg: TransformerConfig, attn: str, causal: bool):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.causal = causal
        self.attn = attn  # attention registry name
        self.qkv_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv_proj(x).reshape(b, t, 3, self.n_heads, c // self.n_heads).permute(2, 0, 3, 1, 4)
        out = attend(self.attn, q, k, v, causal=self.causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LayerNorm residual block: attention, then a GELU feed-forward."""

    def __init__(self, cfg: TransformerConfig, attn: str, causal: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg, attn, causal)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model), nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class MiniTransformer(nn.Module):
    """Token + learned position embeddings, pre-LN blocks, a final norm; then either a classifier on the
    first token (encoder) or a weight-tied next-token head (causal decoder)."""

    def __init__(self, cfg: TransformerConfig, attn: str = "sdpa", causal: bool = False):
        super().__init__()
        self.causal = causal
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, attn, causal) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        if causal:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            self.head.weight = self.token_embed.weight
            nn.init.normal_(self.token_embed.weight, std=0.02)  # GPT-2's init keeps tied logits small
        else:
            self.head = nn.Linear(cfg.d_model, cfg.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.dropout(self.token_embed(tokens) + self.pos_embed(positions))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x) if self.causal else self.head(x[:, 0])


def classify_batch(size: str, batch_size: int, device: torch.device, gen: torch.Generator) -> Batch:
    seq = SEQ_LEN[size]
    tokens = torch.randint(0, TransformerConfig.vocab_size, (batch_size, seq), generator=gen)
    labels = torch.randint(0, TransformerConfig.num_classes, (batch_size,), generator=gen)
    return Batch(inputs=(tokens.to(device),), target=labels.to(device), tokens=batch_size * seq)


def next_token_batch(size: str, batch_size: int, device: torch.device, gen: torch.Generator) -> Batch:
    seq = SEQ_LEN[size]
    tokens = torch.randint(0, TransformerConfig.vocab_size, (batch_size, seq + 1), generator=gen).to(device)
    return Batch(inputs=(tokens[:, :-1],), target=tokens[:, 1:], tokens=batch_size * seq)


def next_token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


ENCODER = ModelSpec(
    name="encoder",
    build=lambda size, attn: MiniTransformer(TransformerConfig(), attn, causal=False),
    batch=classify_batch,
    batch_sizes={"quick": (4, 16), "full": (32, 128)},
    head_dim=TransformerConfig.d_model // TransformerConfig.n_heads,
)
DECODER = ModelSpec(
    name="decoder",
    build=lambda size, attn: MiniTransformer(TransformerConfig(), attn, causal=True),
    batch=next_token_batch,
    batch_sizes={"quick": (4, 16), "full": (32, 128)},
    head_dim=TransformerConfig.d_model // TransformerConfig.n_heads,
    causal=True,
    loss=next_token_loss,
)
