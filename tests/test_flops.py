"""bench.run.flops: convolution FLOPs, forward and backward, against counts made by hand (2 x multiply-adds)."""

import pytest
import torch
from torch import nn

from bench.run.harness import count_flops, model_workload
from bench.sweep.cases import Case
from bench.sweep.models import MODELS

CPU = torch.device("cpu")


def multiply_adds(conv: nn.Module, x: torch.Tensor) -> int:
    """Per output element of a conv, C_in / groups * prod(kernel) multiply-adds; a transposed conv does
    as many per input element, with C_out / groups."""
    kernel = torch.tensor(conv.kernel_size).prod().item()
    if conv.transposed:
        return x.numel() * conv.out_channels // conv.groups * kernel
    out_spatial = conv(x).shape[2:].numel()
    return x.shape[0] * out_spatial * conv.out_channels * conv.in_channels // conv.groups * kernel


CONVS = {
    "1d strided": (lambda: nn.Conv1d(4, 6, 3, stride=2), (2, 4, 17)),
    "2d groups=2": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 9, 9)),
    "2d depthwise": (lambda: nn.Conv2d(8, 8, 3, groups=8), (2, 8, 10, 10)),
    "3d strided": (lambda: nn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2)), (1, 2, 3, 9, 9)),
    "2d transposed groups=2": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("input_grad", [False, True])
def test_conv_backward_costs_one_forward_per_gradient(name, input_grad):
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv, x = make(), torch.randn(shape, requires_grad=input_grad)
    forward = 2 * multiply_adds(conv, x)
    assert count_flops(lambda: conv(x), conv) == forward
    # the weight's gradient always, the input's when it is wanted: the first layer of a network has none
    assert count_flops(lambda: conv(x).sum().backward(), conv) == forward * (3 if input_grad else 2)


def test_multihead_attention_counts_the_same_fused_or_not():
    batch, seqlen, dim = 2, 10, 64
    mha, x = nn.MultiheadAttention(dim, 4, batch_first=True).eval(), torch.randn(batch, seqlen, dim)
    by_hand = 2 * batch * seqlen * dim * 4 * dim + 2 * 2 * batch * seqlen * seqlen * dim  # q k v out; QK^T, PV

    def fused():
        with torch.inference_mode():  # no grad: nn.MultiheadAttention takes its fused fast path
            mha(x, x, x, need_weights=False)

    assert count_flops(fused, mha) == count_flops(lambda: mha(x, x, x, need_weights=False), mha) == by_hand


def test_sdpa_on_cpu_counts_its_matmuls_forward_and_backward():
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))

    def attend():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    forward = 2 * 2 * (2 * 4) * 16 * 16 * 8
    assert count_flops(attend, None) == forward
    assert count_flops(lambda: attend().sum().backward(), None) == forward * 3.5  # backward recomputes QK^T


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_counts_its_training_round_at_about_three_forwards(model):
    # a backward costs about twice the forward: grouped convs and fused attention once made this 4.5-40x
    attn = "sdpa" if MODELS[model].has_attention else None
    fwd, fwdbwd = (model_workload(Case(model, phase, "fp32", 2, attn), CPU).flops() for phase in ("fwd", "fwdbwd"))
    assert 2.9 <= fwdbwd / fwd <= 3.01
