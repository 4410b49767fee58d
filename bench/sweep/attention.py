"""Registry of attention implementations behind one signature: `attn(q, k, v, *, causal) -> out`.

Tensors are `(batch, heads, seq, head_dim)`, as for `scaled_dot_product_attention`; `causal=True` is
SDPA's `is_causal=True` mask (top-left aligned when `seqlen_q != seqlen_k`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.errors import first_line

AttentionFn = Callable[..., torch.Tensor]


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
    """Plain PyTorch: materialise the score matrix, mask, softmax, multiply by V."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa(backend: SDPBackend | None) -> AttentionFn:
    """`scaled_dot_product_attention`, restricted to one backend (or left to PyTorch's choice)."""

    def attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        context = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
        with context:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return attn


# Our Triton kernel's implementations, by name: the backward each runs (kernels/flash_attention.py's BACKWARDS)
TRITON_BACKWARDS = {"triton": "split", "triton_1pass": "single_pass"}


def triton_flash(backward: str) -> AttentionFn:
    """archbench's Triton fused kernel with the given backward (imported on first use, so triton loads
    only when asked)."""

    def attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        from kernels.flash_attention import flash_attention

        return flash_attention(q, k, v, causal=causal, backward=backward)

    return attn


@dataclass(frozen=True)
class AttentionImpl:
    """A registry entry: the callable and, for entries that need it, a device requirement."""

    name: str
    fn: AttentionFn
    needs_cuda: bool = False

    def unavailable(self, device: torch.device, dtype: torch.dtype, head_dim: int, causal: bool) -> str | None:
        """Why this implementation cannot run these inputs here, or None when it can."""
        return _probe(self.name, device.type, dtype, head_dim, causal)


ATTENTION: dict[str, AttentionImpl] = {
    impl.name: impl
    for impl in (
        AttentionImpl("naive", naive),
        AttentionImpl("sdpa", sdpa(None)),
        AttentionImpl("sdpa_flash", sdpa(SDPBackend.FLASH_ATTENTION)),
        AttentionImpl("sdpa_efficient", sdpa(SDPBackend.EFFICIENT_ATTENTION)),
        AttentionImpl("sdpa_cudnn", sdpa(SDPBackend.CUDNN_ATTENTION)),
        AttentionImpl("sdpa_math", sdpa(SDPBackend.MATH)),
        *(AttentionImpl(name, triton_flash(backward), needs_cuda=True) for name, backward in TRITON_BACKWARDS.items()),
    )
}


_OVERRIDE: ContextVar[tuple[str, list] | None] = ContextVar("attention_override", default=None)


@contextlib.contextmanager
def override(name: str) -> Iterator[list[tuple[int, int, int, int, int, bool]]]:
    """Inside this block every `attend` call runs `name` instead of the implementation it asks for (the
    harness counts FLOPs through naive attention, whose matmuls FlopCounterMode sees everywhere); yields
    the calls' (batch, heads, seqlen_q, seqlen_k, head_dim, causal), as they are made."""
    if name not in ATTENTION:
        raise KeyError(f"unknown attention implementation {name!r}")
    calls: list[tuple[int, int, int, int, int, bool]] = []
    token = _OVERRIDE.set((name, calls))
    try:
        yield calls
    finally:
        _OVERRIDE.reset(token)


def attend(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Attention by registry name, or by the name an enclosing `override` gives."""
    replaced = _OVERRIDE.get()
    if replaced is not None:
        name, calls = replaced
        calls.append((*q.shape[:3], k.shape[-2], q.shape[-1], causal))
    return ATTENTION[name].fn(q, k, v, causal=causal)


@functools.cache
def _probe(name: str, device_type: str, dtype: torch.dtype, head_dim: int, causal: bool) -> str | None:
    """Run the implementation once, forward and backward, on a tiny input; the error is the reason."""
    impl = ATTENTION[name]
    if impl.needs_cuda and device_type != "cuda":
        return f"{name} needs a CUDA GPU"
    q = torch.randn(1, 2, 16, head_dim, device=device_type, dtype=dtype, requires_grad=True)
    try:
        with warnings.catch_warnings():  # SDPA warns once per rejected backend; the reason says it all
            warnings.simplefilter("ignore")
            impl.fn(q, q, q, causal=causal).sum().backward()
    except (RuntimeError, ValueError, ImportError) as err:
        detail = first_line(str(err), 100) or type(err).__name__
        mask = " causal" if causal else ""
        return f"{name} has no kernel for {str(dtype).removeprefix('torch.')} head_dim={head_dim}{mask} " \
               f"on {device_type} ({detail})"
    return None


BACKWARD_FLOPS = 2.5  # attention's backward, in forwards: five matmuls to the forward's two (FlashAttention's count)


def attention_flops(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int, *,
                    causal: bool, with_backward: bool = False) -> int:
    """FLOPs of attention as FlashAttention's benchmarks count them: the two matmuls, 4*B*H*Sq*Sk*D
    forward, halved under a causal mask (the models count causal attention the same way); with the
    backward (BACKWARD_FLOPS forwards) that and the backward's."""
    forward = 4 * batch * heads * seqlen_q * seqlen_k * head_dim // (2 if causal else 1)
    return int(forward * (1 + BACKWARD_FLOPS)) if with_backward else forward
