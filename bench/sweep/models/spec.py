"""What the harness needs to know about a model: how to build it, feed it and score it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SIZES = ("quick", "full")


@dataclass(frozen=True)
class Batch:
    """One synthetic batch: the model's positional inputs, the loss target, and tokens it holds."""

    inputs: tuple
    target: torch.Tensor
    tokens: int | None = None  # None where tokens/s means nothing (images)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: builder, batch factory and loss, with per-size defaults.

    `build(size, attn)` returns the module; `attn` is an attention registry name, or None for models
    without registry attention (`head_dim` and `causal` describe that attention). `batch(size, batch_size,
    device, generator)` returns a `Batch` made from the generator, so every run sees the same data.
    `analytic_flops(model, batch)` gives forward FLOPs of submodules that `FlopCounterMode` cannot see
    on every device, keyed by their path in the model.
    """

    name: str
    build: Callable[[str, str | None], nn.Module]
    batch: Callable[[str, int, torch.device, torch.Generator], Batch]
    batch_sizes: dict[str, tuple[int, ...]]
    head_dim: int | None = None  # attention head size, for models whose attention comes from the registry
    causal: bool = False
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    analytic_flops: Callable[[nn.Module, Batch], dict[str, int]] | None = field(default=None)
    convolutional: bool = False  # a CNN, which can run channels_last

    @property
    def has_attention(self) -> bool:
        return self.head_dim is not None


def image_batch(resolution: dict[str, int], num_classes: int):
    """A batch factory of random images (at each size's resolution) and class labels."""

    def make(size: str, batch_size: int, device: torch.device, gen: torch.Generator) -> Batch:
        side = resolution[size]
        images = torch.randn(batch_size, 3, side, side, generator=gen)
        labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
        return Batch(inputs=(images.to(device),), target=labels.to(device))

    return make
