"""FLOP formulas that replace or complete torch.utils.flop_counter's, passed to FlopCounterMode as its
custom_mapping: convolution backward (miscounted for groups), and the attention kernels it does not see
(the CPU flash kernel, nn.MultiheadAttention's fused inference path)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each gradient of a convolution (input, weight) costs what its forward costs. torch's own formula
    counts the weight gradient as a conv over every input channel, `groups` times too many (65x the
    forward for a depthwise conv)."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """SDPA's CPU flash kernel: its two matmuls, as torch counts the GPU kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                           **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def fused_mha_flop(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None,
                   **kwargs) -> int:
    """nn.MultiheadAttention's fused inference path (batch first): the q, k, v and output projections and
    the attention's two matmuls, what its unfused path is counted as."""
    batch, seqlen_q, _ = query_shape
    seqlen_k = key_shape[1]
    projections = 2 * batch * embed_dim * embed_dim * (2 * seqlen_q + 2 * seqlen_k)
    heads = (batch, num_heads, seqlen_q, embed_dim // num_heads)
    keys = (batch, num_heads, seqlen_k, embed_dim // num_heads)
    return projections + sdpa_flop_count(heads, keys, keys)


FORMULAS = {
    aten.convolution_backward: conv_backward_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_sdpa_backward_flop,
    aten._native_multi_head_attention: fused_mha_flop,
}
